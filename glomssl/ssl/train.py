"""``glomssl pretrain``: self-supervised pretraining on Lightning, from one CPU to many GPUs.

The same function runs on a laptop CPU, one GPU, several GPUs and several nodes: the hardware comes from
Trainer arguments alone (``accelerator``, ``devices``, ``num_nodes``, ``strategy``, ``precision``).
Under DDP on GPUs BatchNorm is synchronised (SyncBatchNorm is CUDA-only; CPU processes keep
per-process statistics), ``batch_size`` is per device, the learning rate follows SimSiam's
linear scaling rule on the *effective* batch (base_lr x batch x devices x nodes x accumulate / 256) with
cosine decay, and only rank zero writes files. The run folder holds ``config.yaml`` (written first),
``metrics.jsonl``, ``checkpoints/`` (``--resume`` continues from ``last.ckpt``), and the exported encoder
``backbone.safetensors`` + ``backbone.json`` (``regcon`` also ``decoder.safetensors``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from glomssl.config import opt
from glomssl.errors import GlomsslError
from glomssl.ssl.backbones import ARCHS, IMAGENET_MEAN, IMAGENET_STD
from glomssl.ssl.transforms import AugmentSpec

Method = Literal["simsiam", "regcon", "byol", "barlowtwins", "vicreg"]


@dataclass
class PretrainConfig:
    """Options of ``glomssl pretrain``.

    The defaults are the recipe that beat the random-init encoder on real glomerulus crops
    (BENCHMARKS.md, session 3): VICReg at 64 px, batch 256, SGD (momentum 0.9, wd 1e-4) at
    lr 0.05 x B/256 with a 40-step linear warm-up and cosine decay.
    """

    method: Method = "vicreg"
    data: list[str] = field(default_factory=list)
    out: str = ""
    arch: str = "resnet18"
    image_size: int = 64
    batch_size: int = 256
    epochs: int | None = None
    max_steps: int | None = None
    max_minutes: float | None = None
    lr: float = 0.05
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_steps: int = 40
    accumulate: int = 1
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32"
    workers: int = opt(2, ge=0)
    cache: bool = False
    resume: bool = False
    seed: int = opt(0, ge=0)
    log_every: int = 10
    ckpt_every: int = 100
    proj_dim: int = 2048
    pred_hidden: int = 512
    regions: int = opt(8, ge=2)
    backbone_bn: Literal["train", "frozen"] = "train"  # frozen: BN statistics stay at their init
    regcon_negatives: Literal["batch", "image"] = "batch"  # regcon InfoNCE negatives
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    slide_level: int = opt(0, ge=0)
    slide_mpp: float | None = opt(None, gt=0)
    patches_per_epoch: int = 2000
    probe_data: str | None = None
    probe_every: int = opt(500, ge=1)
    probe_group: str = "slide"
    quiet: bool = False

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise GlomsslError(f"unknown --arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if not self.out:
            raise GlomsslError("--out is required: the run folder to write")
        if self.image_size < 32:
            raise GlomsslError(f"--image-size {self.image_size} is too small; use at least 32")
        if self.batch_size < 2:
            raise GlomsslError("--batch-size must be at least 2 (BatchNorm needs two images)")
        if self.max_steps is not None and self.max_steps < 0:
            raise GlomsslError("--max-steps must be 0 (export the random init) or more")
        if self.epochs is not None and self.epochs < 1:
            raise GlomsslError("--epochs must be at least 1")
        if self.warmup_steps < 0:
            raise GlomsslError(f"--warmup-steps must be 0 or more, got {self.warmup_steps}")
        if self.lr <= 0:
            raise GlomsslError(f"--lr must be positive, got {self.lr}")
        if self.backbone_bn not in ("train", "frozen"):
            raise GlomsslError(f"--backbone-bn {self.backbone_bn!r} must be 'train' or 'frozen'")
        if self.regcon_negatives not in ("batch", "image"):
            raise GlomsslError(
                f"--regcon-negatives {self.regcon_negatives!r} must be 'batch' or 'image'"
            )
        if self.precision not in ("32", "bf16-mixed", "16-mixed", "64"):
            raise GlomsslError("--precision must be one of 32, bf16-mixed, 16-mixed")
        if min(self.devices, self.num_nodes, self.accumulate) < 1 or self.workers < 0:
            raise GlomsslError(
                "--devices, --num-nodes, --accumulate must be >= 1 and --workers >= 0"
            )
        self.augment.image_size = self.image_size

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.world_size * self.accumulate

    @property
    def scaled_lr(self) -> float:
        """SimSiam's linear scaling rule: lr = base_lr x effective batch / 256."""
        return self.lr * self.effective_batch / 256


def export_backbone(module: Any, cfg: PretrainConfig, out: Path, step: int) -> Path:
    """Write ``backbone.safetensors`` + ``backbone.json`` (and the regcon decoder) into ``out``."""
    from glomssl.runs import save_weights

    meta = {
        "arch": cfg.arch,
        "method": cfg.method,
        "image_size": cfg.image_size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "feature_dim": module.method.backbone.feature_dim,
        "step": int(step),
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
    }
    path = save_weights(
        out / "backbone.safetensors", module.method.backbone.trunk_state_dict(), meta
    )
    decoder = getattr(module.method, "decoder", None)
    if decoder is not None:
        save_weights(out / "decoder.safetensors", decoder.state_dict(), {**meta, "part": "decoder"})
    return path


def _make_module(cfg: PretrainConfig, steps_total: int) -> Any:
    import lightning as L
    import torch

    from glomssl.ssl.methods import create_method
    from glomssl.ssl.simsiam import embedding_std

    class SSLModule(L.LightningModule):
        """Wraps one method: normalises the views, steps the loss, schedules the lr (cosine)."""

        def __init__(self) -> None:
            super().__init__()
            self.method = create_method(
                cfg.method,
                cfg.arch,
                proj_dim=cfg.proj_dim,
                pred_hidden=cfg.pred_hidden,
                regions=cfg.regions,
                negatives=cfg.regcon_negatives,
                frozen_bn=cfg.backbone_bn == "frozen",
            )
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
            self.total_steps = max(1, steps_total)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if batch is None:  # every image of this batch failed to decode
                return None
            x0, x1 = ((v - self.mean) / self.std for v in batch)  # (B, 3, S, S) each
            method: Any = self.method
            out = method.training_loss(x0, x1)
            bs = x0.shape[0]
            # every rank sees the same divergence (DDP averages gradients), so all stop together;
            # checked at logging steps only, to keep GPU steps free of host syncs
            if self.global_step % cfg.log_every == 0 and not torch.isfinite(out["loss"]):
                raise GlomsslError(
                    f"pretraining diverged: the {cfg.method} loss became {float(out['loss'])} "
                    f"at step {self.global_step} (effective lr {cfg.scaled_lr:g}); nothing was "
                    "exported. Lower --lr or raise --warmup-steps"
                )
            self.log("loss", out["loss"], prog_bar=True, batch_size=bs, sync_dist=False)
            self.log("emb_std", embedding_std(out["emb"]), batch_size=bs)
            for k, v in out.items():
                if k not in ("loss", "emb"):
                    self.log(k, v.detach(), batch_size=bs)
            return out["loss"]

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            method: Any = self.method
            method.on_train_step(self.global_step, self.total_steps)

        def configure_optimizers(self) -> Any:
            params = [p for p in self.method.parameters() if p.requires_grad]
            opt = torch.optim.SGD(
                params, lr=cfg.scaled_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
            total, warm = self.total_steps, cfg.warmup_steps

            def factor(step: int) -> float:
                if step < warm:
                    return (step + 1) / warm
                return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return SSLModule()


def _metrics_callback(path: Path, cfg: PretrainConfig) -> Any:
    import lightning as L

    from glomssl.runs import MetricsLogger

    class JsonlMetrics(L.Callback):
        """Every ``log_every`` steps, one JSON line: step, epoch, loss, lr, emb_std, images/s."""

        def __init__(self) -> None:
            self.logger = MetricsLogger(path)
            self.t0 = time.perf_counter()
            self.last_step = -1

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, i: int
        ) -> None:
            step = trainer.global_step
            if step == self.last_step or step % cfg.log_every != 0 or not trainer.is_global_zero:
                return
            n = step - self.last_step
            dt = time.perf_counter() - self.t0
            self.t0, self.last_step = time.perf_counter(), step
            m = {k: float(v) for k, v in trainer.callback_metrics.items()}
            self.logger.log(
                step=step,
                epoch=trainer.current_epoch,
                loss=m.get("loss"),
                lr=trainer.optimizers[0].param_groups[0]["lr"],
                emb_std=m.get("emb_std"),
                effective_batch=cfg.effective_batch,
                images_per_s=n * cfg.effective_batch / dt if dt > 0 else None,
                **{k: v for k, v in m.items() if k not in ("loss", "emb_std")},
            )

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.t0, self.last_step = time.perf_counter(), trainer.global_step  # resumed runs too

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            loader = trainer.train_dataloader
            ds: Any = getattr(loader, "dataset", None)
            if ds is not None and hasattr(ds, "set_epoch"):
                ds.set_epoch(trainer.current_epoch)

    return JsonlMetrics()


def _online_probe_callback(cfg: PretrainConfig, metrics_path: Path) -> Any:
    """Every ``probe_every`` steps (rank zero): embed the labelled probe images, grouped kNN probe."""
    import copy

    import lightning as L
    import torch

    from glomssl.runs import MetricsLogger
    from glomssl.ssl.embed import Encoder, embed_paths
    from glomssl.ssl.probe import ProbeConfig, labelled_images, probe_arrays

    assert cfg.probe_data is not None
    files, y, g = labelled_images(cfg.probe_data, cfg.probe_group or None)
    pcfg = ProbeConfig(label_fractions=[1.0], folds=5, repeats=1, probes=["knn"])

    class OnlineKnnProbe(L.Callback):
        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, i: int
        ) -> None:
            step = trainer.global_step
            if not trainer.is_global_zero or step == 0 or step % cfg.probe_every != 0:
                return
            trunk = copy.deepcopy(pl_module.method.backbone).float().cpu()
            enc = Encoder(trunk, list(IMAGENET_MEAN), list(IMAGENET_STD)).eval()
            with torch.no_grad():
                emb, _ = embed_paths(enc, files, cfg.image_size, batch_size=64, workers=0)
            res = probe_arrays(emb, y, g, pcfg)["results"]["knn@1"]
            MetricsLogger(metrics_path).log(
                step=step,
                epoch=trainer.current_epoch,
                probe_knn_balanced_accuracy=res["balanced_accuracy"],
            )

    return OnlineKnnProbe()


def _quiet_lightning() -> None:
    """``--quiet``: hide Lightning's start-up banners, tips and its own deprecation notices."""
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"lightning(\..*)?")
    warnings.filterwarnings("ignore", message=r".*(LeafSpec|weights_only).*")


def run_pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Pretrain ``cfg.method`` on ``cfg.data`` and export the encoder; returns a short summary."""
    import lightning as L
    import torch

    from glomssl.config import save_config
    from glomssl.fsutil import ensure_writable_dir
    from glomssl.manifest import write_jsonl
    from glomssl.runs import is_rank_zero
    from glomssl.ssl.data import build_dataset, collate_views
    from glomssl.ssl.transforms import TwoViews

    cfg.validate()
    out = Path(cfg.out)
    if is_rank_zero():
        ensure_writable_dir(out)
        save_config(cfg, out / "config.yaml")
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    if cfg.max_steps == 0:  # the random-init baseline: export before any update
        module = _make_module(cfg, 1)
        path = export_backbone(module, cfg, out, 0) if is_rank_zero() else out
        return {"run": str(out), "steps": 0, "backbone": str(path), "skipped": 0}

    ds, scan = build_dataset(
        cfg.data,
        TwoViews(cfg.augment),
        cfg.image_size,
        cache=cfg.cache,
        slide_level=cfg.slide_level,
        slide_mpp=cfg.slide_mpp,
        patches_per_epoch=cfg.patches_per_epoch,
        seed=cfg.seed,
    )
    skipped = len(scan.skipped) if scan else 0
    if scan and scan.skipped and is_rank_zero():
        write_jsonl(out / "skipped.jsonl", scan.skipped)
    if len(ds) < cfg.batch_size * cfg.world_size:  # type: ignore[arg-type]
        raise GlomsslError(
            f"--data has {len(ds)} usable images, fewer than one batch of {cfg.batch_size} per "  # type: ignore[arg-type]
            "device; lower --batch-size or add images"
        )
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0,
        collate_fn=collate_views,
        pin_memory=torch.cuda.is_available(),
    )
    per_epoch = len(loader) // cfg.world_size // cfg.accumulate
    if cfg.max_steps is not None:
        total = cfg.max_steps
    else:
        total = max(1, per_epoch) * (cfg.epochs or 100)
    module = _make_module(cfg, total)
    ckpt_dir = out / "checkpoints"
    ckpt = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir, save_last=True, every_n_train_steps=cfg.ckpt_every, save_top_k=0
    )
    last = ckpt_dir / "last.ckpt"
    resume_from = str(last) if cfg.resume and last.is_file() else None
    if cfg.resume and resume_from is None and is_rank_zero():
        print(f"no checkpoint in {ckpt_dir}; starting from scratch")
    callbacks = [ckpt, _metrics_callback(out / "metrics.jsonl", cfg)]
    if cfg.probe_data:
        callbacks.append(_online_probe_callback(cfg, out / "metrics.jsonl"))
    on_gpu = cfg.accelerator in ("gpu", "cuda") or (
        cfg.accelerator == "auto" and torch.cuda.is_available()
    )
    if cfg.quiet:
        _quiet_lightning()
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=cfg.precision,  # type: ignore[arg-type]
        max_steps=total,
        max_time=timedelta(minutes=cfg.max_minutes) if cfg.max_minutes else None,
        max_epochs=cfg.epochs if cfg.max_steps is None else -1,
        accumulate_grad_batches=cfg.accumulate,
        # torch's SyncBatchNorm is CUDA-only; it would also undo --backbone-bn frozen
        sync_batchnorm=cfg.world_size > 1 and on_gpu and cfg.backbone_bn == "train",
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=not cfg.quiet,
        enable_model_summary=False,
        log_every_n_steps=cfg.log_every,
        use_distributed_sampler=True,
        default_root_dir=str(out),
    )
    trainer.fit(module, loader, ckpt_path=resume_from)
    trainer.save_checkpoint(last)  # collective: every rank calls it, rank zero writes
    if trainer.is_global_zero:
        export_backbone(module, cfg, out, trainer.global_step)
    return {
        "run": str(out),
        "steps": int(trainer.global_step),
        "backbone": str(out / "backbone.safetensors"),
        "skipped": skipped,
        "effective_batch": cfg.effective_batch,
        "world_size": cfg.world_size,
    }
