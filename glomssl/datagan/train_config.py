"""Options of ``glomssl gan train`` and the hyper-parameters they resolve to (StyleGAN2-ADA's configs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from glomssl.config import opt
from glomssl.engine.hardware import check_accelerator_strategy
from glomssl.errors import GlomsslError

PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork")  # ddp_fork: ddp_spawn without pickling
MAX_BATCH = 4096  # images per step, over all devices
MAX_KIMG = 100_000.0  # 100 million images: 20 times StyleGAN2-ADA's longest published runs


@dataclass
class GanTrainConfig:
    """Options of ``glomssl gan train`` (defaults follow StyleGAN2-ADA's "auto" config)."""

    data: list[str] = field(default_factory=list)  # FOLDER | MANIFEST | SLIDE...
    out: str = ""  # the run folder
    resolution: int = 256
    # "auto": ADA's auto widths on a GPU; on a CPU the "small" networks (the full ones take hours
    # per thousand images there); name a config to force it
    networks: Literal["auto", "small", "paper256", "paper512", "paper1024"] = "auto"
    channel_max: int | None = opt(None, ge=4)  # override the widest layer (smaller = faster)
    batch_size: int = opt(32, ge=1, le=MAX_BATCH)  # total over all processes
    kimg: float = opt(
        5000.0, ge=0, le=MAX_KIMG
    )  # training length in thousands of real images shown to D
    max_minutes: float | None = opt(None, gt=0)  # wall-clock budget: stop (with a snapshot)
    gamma: float | None = opt(
        None, ge=0
    )  # R1 weight; None -> 0.0002 * res^2 / batch or the paper's
    mirror: bool = False  # random x-flips of the training data
    aug: Literal["ada", "noaug", "fixed"] = "ada"
    aug_p: float = opt(0.2, ge=0, le=1)  # p for --aug fixed
    target: float = opt(0.6, ge=0, le=1)  # ADA over-fitting target for E[sign(D(real))]
    ada_kimg: float = opt(500.0, gt=0)  # p can move from 0 to 1 in this many kimg
    ada_interval: int = opt(4, ge=1)
    lr: float | None = opt(None, gt=0)  # None -> 0.0025 (0.002 at 1024)
    ema_kimg: float | None = opt(None, gt=0)  # None -> batch * 10 / 32
    ema_rampup: float | None = opt(0.05, ge=0)
    pl_weight: float | None = opt(None, ge=0)  # None -> 2 (0 for "small")
    style_mixing: float = opt(0.9, ge=0, le=1)
    g_reg_interval: int = opt(4, ge=1)
    d_reg_interval: int = opt(16, ge=1)
    snap: float = opt(50.0, gt=0)  # kimg between snapshots
    tick: float = opt(4.0, gt=0)  # kimg between metrics.jsonl lines
    grid: int | None = opt(
        None, ge=1, le=32
    )  # fakes grid of grid x grid; None: 8, fewer above 512 px
    seed: int = opt(0, ge=0)
    workers: int = opt(2, ge=0)
    accelerator: str = "auto"
    devices: int = opt(1, ge=1)
    num_nodes: int = opt(1, ge=1)
    strategy: str = (
        "auto"  # auto -> ddp when devices * num_nodes > 1; ddp_spawn for notebooks/tests
    )
    precision: str = "auto"  # auto -> bf16-mixed on GPUs with bf16, 16-mixed on older GPUs, else 32
    resume: bool = False
    slide_level: int = opt(0, ge=0)
    slide_mpp: float | None = opt(None, gt=0)
    metric_encoder: str | None = None  # glomssl pretrain run/backbone for FID/KID per snapshot
    metric_inception: str | None = None  # local Inception-v3 weights for standard FID/KID
    metric_num: int = opt(1000, ge=2, le=100_000)  # images (real and fake) per FID/KID evaluation
    quiet: bool = False

    def validate(self) -> None:
        from glomssl.datagan.networks import RESOLUTIONS

        if self.resolution not in RESOLUTIONS:
            raise GlomsslError(
                f"--resolution {self.resolution} must be one of {', '.join(map(str, RESOLUTIONS))}"
            )
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise GlomsslError(f"--batch-size {self.batch_size} must lie in 1..{MAX_BATCH}")
        if not 0 <= self.kimg <= MAX_KIMG:
            raise GlomsslError(
                f"--kimg {self.kimg:g} must lie in 0..{MAX_KIMG:g} (thousands of images); "
                "use --max-minutes to train for a wall-clock time"
            )
        if not 0 <= self.target <= 1:
            raise GlomsslError(f"--target {self.target} must lie in [0, 1]")
        if not 0 <= self.aug_p <= 1:
            raise GlomsslError(f"--aug-p {self.aug_p} must lie in [0, 1]")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise GlomsslError(f"--max-minutes {self.max_minutes} must be positive")
        if self.snap <= 0 or self.tick <= 0:
            raise GlomsslError("--snap and --tick must be positive (kimg)")
        check_accelerator_strategy(self.accelerator, self.strategy, STRATEGIES)
        if self.precision not in PRECISIONS:
            raise GlomsslError(
                f"--precision {self.precision} is not one of {', '.join(PRECISIONS)}"
            )
        if self.devices < 1 or self.num_nodes < 1:
            raise GlomsslError("--devices and --num-nodes must be at least 1")
        if self.batch_size % (self.devices * self.num_nodes):
            raise GlomsslError(
                f"--batch-size {self.batch_size} must be divisible by devices x nodes "
                f"({self.devices * self.num_nodes})"
            )
        if self.channel_max is not None and self.channel_max < 4:
            raise GlomsslError(f"--channel-max {self.channel_max} must be at least 4")
        if self.gamma is not None and self.gamma < 0:
            raise GlomsslError(f"--gamma {self.gamma} must be >= 0")
        if self.metric_inception is not None and not Path(self.metric_inception).is_file():
            raise GlomsslError(
                f"--metric-inception {self.metric_inception} does not exist; save torchvision's "
                "inception_v3 state dict there (see README) or drop the option"
            )
        if self.metric_encoder and not Path(self.metric_encoder).exists():
            raise GlomsslError(
                f"--metric-encoder {self.metric_encoder} does not exist; pass a `glomssl pretrain` "
                "run folder or backbone .safetensors, or drop the option"
            )
        if (self.metric_encoder or self.metric_inception) and self.metric_num < 2:
            raise GlomsslError(f"--metric-num {self.metric_num} must be at least 2 for FID/KID")


def network_config(cfg: GanTrainConfig, on_gpu: bool, resumed: dict[str, Any] | None) -> str:
    """The network config a run uses: the one it was started with when resuming; "auto" on a CPU ->
    "small" (the full networks cost hours per thousand images on a CPU); else ``cfg.networks``."""
    if resumed is not None:  # a snapshot from before this rule recorded no choice: it used "auto"
        return str(resumed.get("cfg_resolved") or resumed.get("cfg") or cfg.networks)
    if cfg.networks == "auto" and not on_gpu:
        return "small"
    return cfg.networks


def resolved_hparams(cfg: GanTrainConfig, net_cfg: str | None = None) -> dict[str, float]:
    """Hyper-parameters left as None, filled in like StyleGAN2-ADA's configs."""
    res, mb = cfg.resolution, cfg.batch_size
    name = net_cfg or cfg.networks
    paper_gamma = {"paper256": 1.0, "paper512": 0.5, "paper1024": 2.0}
    gamma = cfg.gamma
    if gamma is None:
        gamma = paper_gamma.get(name, 0.0002 * res * res / mb)
    lr = cfg.lr if cfg.lr is not None else (0.002 if res >= 1024 else 0.0025)
    ema = cfg.ema_kimg if cfg.ema_kimg is not None else mb * 10 / 32
    pl = cfg.pl_weight if cfg.pl_weight is not None else (0.0 if name == "small" else 2.0)
    return {"gamma": float(gamma), "lr": float(lr), "ema_kimg": float(ema), "pl_weight": float(pl)}
