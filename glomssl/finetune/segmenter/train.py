"""``glomssl finetune seg``: train a segmenter on partially labelled masks, from one CPU to many GPUs.

The run folder (``--out``) receives, in order: ``config.yaml`` (the merged config, classes resolved),
``split.json`` (which images train and which validate, and how the split was made), ``skipped.jsonl``
(unreadable images, if any), ``metrics.jsonl`` (loss every ``log_every`` steps; ``val_dice`` and
``val_dice_<class>`` at each validation), ``checkpoints/`` (``last.ckpt`` every ``ckpt_every`` steps for
``--resume``, ``best.ckpt`` by mean validation Dice, read back without unpickling), then the exported
``model.safetensors`` + ``model.json`` (the best validated weights: GIO2 keeps the best epoch by mean
validation Dice), ``val_dice.json``, ``val_dice.png`` and ``overlays/``.

The recipe defaults are Glo-In-One v2's (../shared/papers/000): the dynamic head on the residual U-Net,
batches of one task, BCE + Dice with a 1.2 weight on a 2-px ring outside the mask, SGD Nesterov
momentum 0.99, lr 1e-3, poly(0.9) decay, 200 epochs, 512 px.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from glomssl.config import opt
from glomssl.data.transforms import PairedAugment
from glomssl.engine import HardwareConfig
from glomssl.errors import GlomsslError

ModelName = Literal["dynamic", "multihead", "multiclass", "unet", "deeplabv3"]
DEFAULT_CLASS = "glomerulus"  # the one class of tables that name no task


@dataclass
class SegTrainConfig:
    """Options of ``glomssl finetune seg`` (see the module docstring for the recipe)."""

    train: list[str] = field(default_factory=list)
    out: str = ""
    val: list[str] = field(default_factory=list)
    model: ModelName = "dynamic"
    classes: list[str] = field(default_factory=list)  # empty: the tasks the tables name
    encoder: str = "resunet"  # resunet (GIO2) or resnet18/34/50 (the pretrain layout)
    base: int = opt(32, ge=4, le=256)  # resunet width
    controller: Literal["concat", "outer"] = "outer"
    deeplab_backbone: str = "resnet50"
    init: str | None = None
    image_size: int = opt(512, ge=16)
    batch_size: int = opt(8, ge=1)
    epochs: int | None = opt(None, ge=1)
    max_steps: int | None = opt(None, ge=1)
    max_minutes: float | None = opt(None, gt=0)
    lr: float = opt(1e-3, gt=0, le=10)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = opt(0.99, ge=0, lt=1)
    weight_decay: float = opt(3e-5, ge=0, le=1)
    poly_power: float = opt(0.9, ge=0, le=10)
    warmup_steps: int = opt(0, ge=0)
    bce_weight: float = opt(1.0, ge=0)
    dice_weight: float = opt(1.0, ge=0)
    ring_weight: float = opt(1.2, ge=0)
    ring_px: int = opt(2, ge=0, le=64)
    batching: Literal["task", "mixed"] = "task"
    synthetic: list[str] = field(default_factory=list)
    synthetic_ratio: float = opt(0.5, ge=0, lt=1)
    train_filter: list[str] = field(default_factory=list)
    eval_filter: list[str] = field(default_factory=list)
    val_fraction: float = opt(0.15, gt=0, lt=1)
    mask_threshold: int = opt(127, ge=0, le=254)
    augment: PairedAugment = field(default_factory=PairedAugment)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    workers: int = opt(2, ge=0)
    cache: bool = False
    resume: bool = False
    seed: int = opt(0, ge=0)
    log_every: int = opt(10, ge=1)
    ckpt_every: int = opt(50, ge=1)
    val_every_steps: int | None = opt(None, ge=1)
    overlays: int = opt(3, ge=0)
    select: Literal["best", "final"] = "best"  # exported weights: best mean val Dice (GIO2) or last
    quiet: bool = False

    def validate(self) -> None:
        from glomssl.finetune.segmenter.data import parse_filters
        from glomssl.models.backbones import ARCHS

        if not self.train:
            raise GlomsslError("--train is required: a table (CSV/JSONL) of path,mask,task rows")
        if not self.out:
            raise GlomsslError("--out is required: the run folder to write")
        if self.encoder != "resunet" and self.encoder not in ARCHS:
            raise GlomsslError(
                f"--encoder {self.encoder!r}: choose resunet or one of {', '.join(ARCHS)}"
            )
        if self.init and self.encoder == "resunet" and self.model != "deeplabv3":
            raise GlomsslError(
                "--init starts a ResNet encoder from a pretraining run; add --encoder resnet18 "
                "(or that run's arch)"
            )
        if self.init and self.model == "deeplabv3":
            raise GlomsslError("--init does not apply to deeplabv3; use another --model")
        if self.optimizer == "sgd" and self.momentum == 0 and self.lr > 1:
            raise GlomsslError(f"--lr {self.lr} is too large for plain SGD; lower it")
        if self.augment.scale_min > self.augment.scale_max:
            raise GlomsslError("augment.scale_min must not exceed augment.scale_max")
        parse_filters(self.train_filter, "--train-filter")
        parse_filters(self.eval_filter, "--eval-filter")
        if len(set(self.classes)) != len(self.classes):
            raise GlomsslError(f"--classes lists a class twice: {','.join(self.classes)}")
        self.hardware.validate()

    def model_kwargs(self, classes: list[str]) -> dict[str, Any]:
        if self.model == "deeplabv3":
            return {"classes": classes, "backbone": self.deeplab_backbone}
        kw: dict[str, Any] = {"classes": classes, "encoder": self.encoder, "base": self.base}
        if self.model == "dynamic":
            kw["controller"] = self.controller
            kw["unit_pooled"] = True
        return kw


def _prepare(cfg: SegTrainConfig) -> dict[str, Any]:
    """Read, filter, check and split the data; resolve the classes. Runs before any training."""
    from glomssl.finetune.segmenter import data as D

    tf = D.parse_filters(cfg.train_filter, "--train-filter")
    ef = D.parse_filters(cfg.eval_filter, "--eval-filter")
    classes = list(cfg.classes) or D.tasks_in(cfg.train, tf) or [DEFAULT_CLASS]
    train = D.load_items(cfg.train, classes, filters=tf)
    if not train:
        raise GlomsslError(
            f"no training image is left after --train-filter {' '.join(cfg.train_filter)}; "
            "check the filter against the table's columns"
        )
    if cfg.val:
        val = D.load_items(cfg.val, classes, what="--val", filters=ef)
        how = "--val"
    else:
        train, val, how = D.split_items(train, cfg.val_fraction, cfg.seed)
        val = [it for it in val if D.keep_row(it, ef)]
    if not val:
        raise GlomsslError(
            "no validation image is left (after --eval-filter); pass --val or loosen the filter"
        )
    syn = D.load_items(cfg.synthetic, classes, True, "--synthetic", filters=tf)
    train, sk1 = D.check_items(train + syn, classes, cfg.mask_threshold, not cfg.quiet)
    val, sk2 = D.check_items(val, classes, cfg.mask_threshold, not cfg.quiet)
    if not any(not it.synthetic for it in train):
        raise GlomsslError("no readable real training image is left; see skipped.jsonl")
    if not val:
        raise GlomsslError("no readable validation image is left; see skipped.jsonl")
    return {"classes": classes, "train": train, "val": val, "how": how, "skipped": sk1 + sk2}


def _input_scale(items: list[Any], image_size: int) -> float:
    """Median working-size / short-side ratio of the training images (``segment --scale auto``)."""
    import numpy as np

    ratios = [image_size / min(it.size) for it in items if it.size]
    return float(np.median(ratios)) if ratios else 1.0


def run_finetune_seg(cfg: SegTrainConfig) -> dict[str, Any]:
    """Train, export the best validated weights and write the report; returns a short summary."""
    import lightning as L

    from glomssl.config import save_config
    from glomssl.data.sources import write_skipped
    from glomssl.engine.trainer import (
        DivergenceGuard,
        JsonlMetrics,
        make_trainer,
        resume_checkpoint,
    )
    from glomssl.finetune.segmenter.data import summarise, task_index
    from glomssl.finetune.segmenter.dataset import SegDataset, TaskBatchSampler
    from glomssl.finetune.segmenter.module import SegModule
    from glomssl.fsutil import atomic_write_text, ensure_writable_dir
    from glomssl.models import create_model
    from glomssl.runs import is_rank_zero

    cfg.validate()
    out = Path(cfg.out)
    d = _prepare(cfg)
    classes, train, val = d["classes"], d["train"], d["val"]
    cfg = dataclasses.replace(cfg, classes=classes)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model: Any = create_model(cfg.model, **cfg.model_kwargs(classes))
    init_info = model.load_init(cfg.init) if cfg.init else None
    if cfg.image_size % model.stride:
        raise GlomsslError(
            f"--image-size {cfg.image_size} is not divisible by the {cfg.model} network's stride "
            f"{model.stride}; use a multiple of {model.stride}"
        )
    # written only once the model and its --init are known good
    if is_rank_zero():
        ensure_writable_dir(out)
        save_config(cfg, out / "config.yaml")
        split = {
            "how": d["how"],
            "seed": cfg.seed,
            "train": [it.as_row() for it in train],
            "val": [it.as_row() for it in val],
        }
        atomic_write_text(out / "split.json", json.dumps(split, indent=1, default=str) + "\n")
        write_skipped(out, d["skipped"])
    train_ds = SegDataset(
        train, classes, cfg.image_size, cfg.augment, cfg.mask_threshold, cfg.seed, cfg.cache
    )
    val_ds = SegDataset(val, classes, cfg.image_size, None, cfg.mask_threshold, cfg.seed, cfg.cache)
    sampler_kw: dict[str, Any] = {
        "tasks": [task_index(it, classes) for it in train],
        "synthetic": [it.synthetic for it in train],
        "batch_size": cfg.batch_size,
        "ratio": cfg.synthetic_ratio if cfg.synthetic else 0.0,
        "mode": cfg.batching,
        "seed": cfg.seed,
    }
    world = cfg.hardware.world_size
    per_epoch = math.ceil(len(TaskBatchSampler(**sampler_kw).plan(0)) / world)
    total = cfg.max_steps or per_epoch * (cfg.epochs or 200)
    module = SegModule(
        model, train_ds, val_ds, sampler_kw,
        batch_size=cfg.batch_size, workers=cfg.workers, lr=cfg.lr, optimizer=cfg.optimizer,
        momentum=cfg.momentum, weight_decay=cfg.weight_decay, poly_power=cfg.poly_power,
        warmup_steps=cfg.warmup_steps, total_steps=total,
        loss_kw={"bce_weight": cfg.bce_weight, "dice_weight": cfg.dice_weight,
                 "ring_weight": cfg.ring_weight, "ring_px": cfg.ring_px},
    )  # fmt: skip
    ckpt_last = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out / "checkpoints", save_last=True, every_n_train_steps=cfg.ckpt_every,
        save_top_k=0,
    )  # fmt: skip
    ckpt_best = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out / "checkpoints", filename="best", monitor="val_dice", mode="max",
        save_top_k=1, save_last=False, auto_insert_metric_name=False,
    )  # fmt: skip
    callbacks = [
        ckpt_last,
        ckpt_best,
        JsonlMetrics(out / "metrics.jsonl", cfg.log_every, cfg.batch_size * world),
        DivergenceGuard("segmenter training", "Lower --lr."),
    ]
    val_every = max(1, round((cfg.val_every_steps or per_epoch) / max(per_epoch, 1)))
    trainer = make_trainer(
        cfg.hardware, out, callbacks=callbacks, max_steps=total,
        max_epochs=cfg.epochs if cfg.max_steps is None else -1, max_minutes=cfg.max_minutes,
        log_every=cfg.log_every, quiet=cfg.quiet, val_every_epochs=val_every,
        use_distributed_sampler=False,
    )  # fmt: skip
    resume_from = resume_checkpoint(out, cfg.resume)
    trainer.fit(module, ckpt_path=resume_from, weights_only=True)
    trainer.save_checkpoint(out / "checkpoints" / "last.ckpt")  # collective: rank zero writes
    summary: dict[str, Any] = {"run": str(out), "model": cfg.model, "classes": classes}
    summary["steps"] = int(trainer.global_step)
    if not trainer.is_global_zero:
        return summary
    best_path = Path(ckpt_best.best_model_path) if ckpt_best.best_model_path else None
    final = _finish(
        cfg, model, out, classes, train, val, best_path, init_info, int(trainer.global_step)
    )
    summary.update(final)
    summary["skipped"] = len(d["skipped"])
    summary["train_images"] = summarise(train, classes)["images"]
    return summary


def _finish(
    cfg: SegTrainConfig,
    model: Any,
    out: Path,
    classes: list[str],
    train: list[Any],
    val: list[Any],
    best_path: Path | None,
    init_info: dict[str, Any] | None,
    steps: int,
) -> dict[str, Any]:
    """Rank zero: pick the best validated weights (best.ckpt vs final), export, write the report."""
    import torch

    from glomssl.engine.trainer import checkpoint_step
    from glomssl.finetune.segmenter.data import summarise
    from glomssl.finetune.segmenter.infer import export_segmenter
    from glomssl.finetune.segmenter.metrics import aggregate
    from glomssl.finetune.segmenter.report import disk_fractions, evaluate, write_report

    model = model.float().cpu().eval()
    disks = disk_fractions([it for it in train if not it.synthetic], classes, cfg.image_size,
                           cfg.mask_threshold)  # fmt: skip
    final_state = {k: v.clone() for k, v in model.state_dict().items()}
    recs, kept = evaluate(model, val, classes, cfg.image_size, cfg.mask_threshold, disks,
                          keep=cfg.overlays)  # fmt: skip
    chosen, chosen_step = "final", steps
    if cfg.select == "best" and best_path is not None and best_path.is_file():
        ckpt = torch.load(str(best_path), map_location="cpu", weights_only=True)
        state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items()}
        model.load_state_dict(state)
        b_recs, b_kept = evaluate(model, val, classes, cfg.image_size, cfg.mask_threshold, disks,
                                  keep=cfg.overlays)  # fmt: skip
        if aggregate(b_recs, classes).get("mean_dice", 0) > aggregate(recs, classes).get(
            "mean_dice", 0
        ):
            recs, kept, chosen = b_recs, b_kept, "best validation"
            chosen_step = checkpoint_step(best_path) or steps
        else:
            model.load_state_dict(final_state)
    real = [it for it in train if not it.synthetic]
    meta = {
        "image_size": cfg.image_size,
        "input_scale": _input_scale(real, cfg.image_size),
        "mean": model.build_kwargs["mean"],
        "std": model.build_kwargs["std"],
        "mask_threshold": cfg.mask_threshold,
        "step": chosen_step,
        "weights": chosen,
        "init": init_info,
        "train_data": {
            "sources": list(cfg.train),
            "synthetic_sources": list(cfg.synthetic),
            "train": summarise(train, classes),
            "val": summarise(val, classes),
        },
    }
    path = export_segmenter(model, out, meta)
    extra = {"weights": chosen, "step": chosen_step, "disk_fraction": disks, "val_images": len(val)}
    rep = write_report(out, recs, kept, classes, extra)
    return {
        "model_path": str(path),
        "weights": chosen,
        "val_dice": rep.get("mean_dice"),
        "val_dice_per_class": {c: v["dice"] for c, v in rep["per_class"].items()},
    }
