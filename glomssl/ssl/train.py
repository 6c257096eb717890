"""``glomssl pretrain``: self-supervised pretraining on Lightning, from one CPU to many GPUs.

The same function runs on a laptop CPU, one GPU, several GPUs and several nodes: the hardware comes from
one :class:`glomssl.engine.HardwareConfig` (``hardware:`` in the config; ``--accelerator``,
``--devices``, ``--num-nodes``, ``--strategy``, ``--precision`` on the command line). Under DDP on GPUs
BatchNorm is synchronised (SyncBatchNorm is CUDA-only), ``batch_size`` is per device, the learning rate
follows SimSiam's linear scaling rule on the *effective* batch (base_lr x batch x devices x nodes x
accumulate / 256) with cosine decay, and only rank zero writes files. The run folder holds
``config.yaml`` (written first, once the inputs are checked and every rank has started),
``metrics.jsonl``, ``checkpoints/`` (``--resume`` continues from ``last.ckpt``, read without
unpickling), and the exported encoder ``backbone.safetensors`` + ``backbone.json`` (``regcon`` also
``decoder.safetensors``). A folder that holds an earlier run is refused unless ``--resume`` is given: a
new run never overwrites one.

Every rank refuses, not rank zero alone: torchrun, SLURM or any launcher that starts the ranks itself
runs them all from the start, and a rank that carried on after rank zero had refused would wait at the
rendezvous for the whole process-group timeout. So every rank runs the same check before any rank has
written a file of this run: rank zero writes ``config.yaml`` and ``skipped.jsonl`` only once Lightning
has passed its pre-setup barrier, which no rank reaches before its own check (see
:func:`_run_folder_writer`). ``--max-steps 0`` has no collective to wait at; there a later rank leaves
out of its check the files rank zero may already have exported (:data:`BASELINE_FILES`).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from glomssl.config import opt
from glomssl.engine import HardwareConfig
from glomssl.errors import GlomsslError
from glomssl.models.backbones import ARCHS
from glomssl.ssl.transforms import AugmentSpec

Method = Literal["simsiam", "regcon", "byol", "barlowtwins", "vicreg"]

#: the largest --image-size: a training crop beyond this is a typo (100000 px would ask for ~120 GB)
MAX_IMAGE_SIZE = 2048

#: what a run writes in its folder: any of them there means the folder holds an earlier run
RUN_FILES = (
    "config.yaml",
    "metrics.jsonl",
    "backbone.safetensors",
    "backbone.json",
    "decoder.safetensors",
    "decoder.json",
    "skipped.jsonl",
    "checkpoints",
)

#: what rank zero of a ``--max-steps 0`` run writes, with no collective before it: another rank may
#: find them already there, and leaves them out of its check (the files of a run that trained, e.g.
#: ``metrics.jsonl`` and ``checkpoints``, are still refused on every rank)
BASELINE_FILES = (
    "config.yaml",
    "backbone.safetensors",
    "backbone.json",
    "decoder.safetensors",
    "decoder.json",
)

#: each method's own projection width (the papers' choices); ``proj_dim`` overrides it
PROJ_DIM = {"simsiam": 2048, "vicreg": 2048, "barlowtwins": 2048, "byol": 256, "regcon": 128}


@dataclass
class PretrainConfig:
    """Options of ``glomssl pretrain``.

    The defaults are the recipe that beat the random-init encoder on real glomerulus crops
    (BENCHMARKS.md): VICReg at 64 px, batch 256, SGD (momentum 0.9, wd 1e-4) at lr 0.05 x B/256 with a
    40-step linear warm-up and cosine decay. Method-specific options (``regions``,
    ``regcon_negatives``: regcon; ``pred_hidden``: simsiam) are None unless given, and giving one to a
    method that does not take it is an error.
    """

    method: Method = "vicreg"
    data: list[str] = field(default_factory=list)
    out: str = ""
    arch: str = "resnet18"
    image_size: int = opt(64, ge=32, le=MAX_IMAGE_SIZE)
    batch_size: int = opt(256, ge=2)
    epochs: int | None = opt(None, ge=1)
    max_steps: int | None = opt(None, ge=0)
    max_minutes: float | None = opt(None, gt=0)
    lr: float = opt(0.05, gt=0, le=100)
    weight_decay: float = opt(1e-4, ge=0)
    momentum: float = opt(0.9, ge=0, lt=1)
    warmup_steps: int = opt(40, ge=0)
    accumulate: int = opt(1, ge=1)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    workers: int = opt(2, ge=0)
    cache: bool = False
    resume: bool = False
    seed: int = opt(0, ge=0)
    log_every: int = opt(10, ge=1)
    ckpt_every: int = opt(100, ge=1)
    proj_dim: int | None = opt(None, ge=2)
    pred_hidden: int | None = opt(None, ge=2)
    regions: int | None = opt(None, ge=2)
    backbone_bn: Literal["train", "frozen"] = "train"  # frozen: BN statistics stay at their init
    regcon_negatives: Literal["batch", "image"] | None = None  # regcon InfoNCE negatives [batch]
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    slide_level: int = opt(0, ge=0)
    slide_mpp: float | None = opt(None, gt=0)
    patches_per_epoch: int = opt(2000, ge=1)
    probe_data: str | None = None
    probe_every: int = opt(500, ge=1)
    probe_group: str = "slide"
    quiet: bool = False

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise GlomsslError(f"unknown --arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if not self.out:
            raise GlomsslError("--out is required: the run folder to write")
        if self.method != "regcon":
            for name in ("regions", "regcon_negatives"):
                if getattr(self, name) is not None:
                    flag = "--" + name.replace("_", "-")
                    raise GlomsslError(
                        f"{flag} is a regcon option; drop it for --method {self.method}"
                    )
        if self.method != "simsiam" and self.pred_hidden is not None:
            raise GlomsslError(
                f"pred_hidden is a simsiam option; drop it for --method {self.method}"
            )
        self.hardware.validate()

    @property
    def world_size(self) -> int:
        return self.hardware.world_size

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.world_size * self.accumulate

    @property
    def scaled_lr(self) -> float:
        """SimSiam's linear scaling rule: lr = base_lr x effective batch / 256."""
        return self.lr * self.effective_batch / 256

    def method_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the chosen method, its own defaults filled in."""
        kw: dict[str, Any] = {"proj_dim": self.proj_dim or PROJ_DIM[self.method]}
        if self.method == "simsiam":
            kw["pred_hidden"] = self.pred_hidden or 512
        if self.method == "regcon":
            kw["regions"] = self.regions or 8
            kw["negatives"] = self.regcon_negatives or "batch"
        return kw

    def augment_spec(self) -> AugmentSpec:
        """The augmentation strengths at this run's crop size (the config itself is never changed)."""
        return dataclasses.replace(self.augment, image_size=self.image_size)


def _online_probe_callback(cfg: PretrainConfig, metrics_path: Path) -> Any:
    """Every ``probe_every`` steps (rank zero): embed the labelled probe images, grouped kNN probe."""
    import copy

    import lightning as L
    import torch

    from glomssl.models.backbones import IMAGENET_MEAN, IMAGENET_STD
    from glomssl.models.encoder import Encoder
    from glomssl.runs import MetricsLogger
    from glomssl.ssl.embed import embed_paths
    from glomssl.ssl.probe import ProbeConfig, labelled_images, probe_arrays

    assert cfg.probe_data is not None
    import numpy as np

    files, y, g = labelled_images(cfg.probe_data, cfg.probe_group or None)
    n_groups = len(np.unique(g))
    if n_groups < 2:
        raise GlomsslError(f"--probe-data {cfg.probe_data} needs at least 2 groups (slides)")
    pcfg = ProbeConfig(label_fractions=[1.0], folds=min(5, n_groups), repeats=1, probes=["knn"])

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
                emb, ok = embed_paths(enc, files, cfg.image_size, batch_size=64, workers=0)
            # an unreadable probe image is left out, not scored as an all-zero image
            res = probe_arrays(emb[ok], y[ok], g[ok], pcfg)["results"]["knn@1"]
            MetricsLogger(metrics_path).log(
                step=step,
                epoch=trainer.current_epoch,
                probe_knn_balanced_accuracy=res["balanced_accuracy"],
                probe_images_unreadable=int((~ok).sum()),
            )

    return OnlineKnnProbe()


def _make_module(cfg: PretrainConfig, total: int) -> Any:
    from glomssl.ssl.module import SSLModule

    return SSLModule(
        cfg.method,
        cfg.arch,
        lr=cfg.scaled_lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        total_steps=total,
        frozen_bn=cfg.backbone_bn == "frozen",
        **cfg.method_kwargs(),
    )


def _refuse_earlier_run(out: Path, resume: bool, ignore: tuple[str, ...] = ()) -> None:
    """Without ``--resume``, a folder that holds an earlier run is refused (it would be overwritten).

    The files of :data:`RUN_FILES` named in ``ignore`` do not count (those this run's rank zero may
    have written already, see :data:`BASELINE_FILES`).
    """
    if resume or not out.is_dir():
        return
    found = [name for name in RUN_FILES if name not in ignore and (out / name).exists()]
    if found:
        raise GlomsslError(
            f"--out {out} holds an earlier run ({', '.join(found[:3])}); pass --resume to continue "
            "it, or choose a new --out"
        )


def _run_folder_writer(cfg: PretrainConfig, out: Path, skipped: list[dict[str, str]]) -> Any:
    """A callback with which rank zero writes ``config.yaml`` (and ``skipped.jsonl``) at the start of
    ``fit``. Lightning calls ``setup`` after its pre-setup barrier, which every rank reaches only after
    its own earlier-run check: no rank, however late it starts (a launcher that starts every rank,
    or the ranks Lightning starts from rank zero's ``fit``), takes these files for an earlier run."""
    import lightning as L

    from glomssl.config import save_config
    from glomssl.data.sources import write_skipped

    class WriteRunFolder(L.Callback):
        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            if trainer.is_global_zero:
                save_config(cfg, out / "config.yaml")
                write_skipped(out, skipped)

    return WriteRunFolder()


def run_pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Pretrain ``cfg.method`` on ``cfg.data`` and export the encoder; returns a short summary."""
    from glomssl.runs import is_rank_zero

    cfg.validate()
    out = Path(cfg.out)
    # every rank, before any rank writes: a refusal on rank zero alone would strand the others at the
    # rendezvous. With --max-steps 0 rank zero exports without waiting for anyone (module docstring).
    # Before Lightning is imported, so that a refusal is prompt.
    late = cfg.max_steps == 0 and not is_rank_zero()
    _refuse_earlier_run(out, cfg.resume, ignore=BASELINE_FILES if late else ())

    import lightning as L
    import torch

    from glomssl.config import save_config
    from glomssl.engine.trainer import (
        DivergenceGuard,
        EpochSetter,
        JsonlMetrics,
        make_trainer,
        resume_checkpoint,
    )
    from glomssl.fsutil import ensure_writable_dir
    from glomssl.ssl.data import build_dataset, collate_views
    from glomssl.ssl.module import export_backbone
    from glomssl.ssl.transforms import TwoViews

    # every input is checked before OUT is created: a refused run leaves nothing behind
    ds: Any = None
    scan = None
    if cfg.max_steps != 0:  # the random-init baseline (max_steps 0) reads no data
        ds, scan = build_dataset(
            cfg.data,
            TwoViews(cfg.augment_spec()),
            cfg.image_size,
            cache=cfg.cache,
            slide_level=cfg.slide_level,
            slide_mpp=cfg.slide_mpp,
            patches_per_epoch=cfg.patches_per_epoch,
            seed=cfg.seed,
        )
        if len(ds) < cfg.batch_size * cfg.world_size:
            raise GlomsslError(
                f"--data has {len(ds)} usable images, fewer than one batch of {cfg.batch_size} "
                "per device; lower --batch-size or add images"
            )
    probe_cb = None
    if cfg.probe_data and cfg.max_steps != 0:  # checks the probe's labels and images
        probe_cb = _online_probe_callback(cfg, out / "metrics.jsonl")
    if is_rank_zero():
        ensure_writable_dir(out)  # no run file yet: config.yaml waits for every rank (module doc)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    if cfg.max_steps == 0:  # the random-init baseline: export before any update
        if is_rank_zero():
            save_config(cfg, out / "config.yaml")
        module = _make_module(cfg, 1)
        path = export_backbone(module, cfg, out, 0) if is_rank_zero() else out
        return {
            "run": str(out),
            "method": cfg.method,
            "arch": cfg.arch,
            "steps": 0,
            "backbone": str(path),
            "skipped": 0,
        }

    skipped = len(scan.skipped) if scan else 0
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
    total = cfg.max_steps if cfg.max_steps is not None else max(1, per_epoch) * (cfg.epochs or 100)
    if cfg.warmup_steps > total and is_rank_zero():
        print(
            f"warning: --warmup-steps {cfg.warmup_steps} is longer than the run ({total} steps): "
            f"the learning rate only reaches {total / cfg.warmup_steps:.0%} of --lr; lower "
            "--warmup-steps for short runs",
            file=sys.stderr,
        )
    module = _make_module(cfg, total)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out / "checkpoints",
        save_last=True,
        every_n_train_steps=cfg.ckpt_every,
        save_top_k=0,
    )
    last = out / "checkpoints" / "last.ckpt"
    if cfg.resume and not last.is_file():  # said once, here (not by every process that prints)
        if is_rank_zero():
            print(f"no checkpoint in {last.parent}; starting from scratch", flush=True)
        resume_from = None
    else:
        resume_from = resume_checkpoint(out, cfg.resume)
    metrics = JsonlMetrics(
        out / "metrics.jsonl",
        cfg.log_every,
        cfg.effective_batch,
        static={"effective_batch": cfg.effective_batch},
    )
    callbacks = [
        _run_folder_writer(cfg, out, scan.skipped if scan else []),
        ckpt,
        metrics,
        EpochSetter(),
        DivergenceGuard(f"pretraining ({cfg.method})", "Lower --lr or raise --warmup-steps."),
    ]
    if probe_cb is not None:
        callbacks.append(probe_cb)
    trainer = make_trainer(
        cfg.hardware,
        out,
        callbacks=callbacks,
        max_steps=total,
        max_epochs=cfg.epochs if cfg.max_steps is None else -1,
        max_minutes=cfg.max_minutes,
        accumulate=cfg.accumulate,
        log_every=cfg.log_every,
        quiet=cfg.quiet,
        # torch's SyncBatchNorm is CUDA-only; it would also undo --backbone-bn frozen
        sync_batchnorm=cfg.world_size > 1 and cfg.hardware.on_gpu() and cfg.backbone_bn == "train",
    )
    trainer.fit(module, loader, ckpt_path=resume_from, weights_only=True)
    trainer.save_checkpoint(out / "checkpoints" / "last.ckpt")  # collective: rank zero writes
    if trainer.is_global_zero:
        export_backbone(module, cfg, out, trainer.global_step)
    return {
        "run": str(out),
        "method": cfg.method,
        "arch": cfg.arch,
        "steps": int(trainer.global_step),
        "backbone": str(out / "backbone.safetensors"),
        "skipped": skipped,
        "effective_batch": cfg.effective_batch,
        "world_size": cfg.world_size,
    }
