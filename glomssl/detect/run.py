"""``glomssl detect``: glomeruli on slides, in level-0 coordinates (the chain without crops or models).

It is :func:`glomssl.slidechain.chain.run_wsi` with cropping, classification and segmentation off, so
it shares the chain's resumable queue, output-folder rules and per-slide files (``SLIDE.xml``,
``SLIDE.geojson``, ``glomeruli.csv``, ``summary.json``, ``overview.png``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from glomssl.config import opt
from glomssl.errors import GlomsslError


@dataclass
class DetectConfig:
    """Options of ``glomssl detect``."""

    slide: list[str] = field(default_factory=list)  # slide files or folders
    out: str = ""
    weights: str | None = None  # detector weights [shipped]
    mpp: float | None = opt(None, gt=0, le=64)  # working um/px [the detector's, 2.0]
    level: int | None = opt(None, ge=0)
    slide_mpp: float | None = opt(None, gt=0, le=64)
    tile: int = opt(1024, ge=64, le=8192)
    overlap: int = opt(256, ge=0)
    conf: float | None = opt(None, gt=0, lt=1)
    nms_iou: float = opt(0.35, gt=0, le=1)
    batch: int = opt(1, ge=1, le=256)
    device: str = "auto"
    devices: int = opt(1, ge=1, le=64)
    shard: str | None = None
    quiet: bool = False

    def validate(self) -> None:
        if not self.slide:
            raise GlomsslError("glomssl detect needs --slide SLIDE (repeat it, or pass a folder)")
        self.to_wsi().validate()

    def to_wsi(self) -> Any:
        from glomssl.slidechain.chain import WsiConfig

        return WsiConfig(
            slides=list(self.slide),
            out=self.out,
            detector=self.weights,
            mpp=self.mpp,
            level=self.level,
            slide_mpp=self.slide_mpp,
            tile=self.tile,
            overlap=self.overlap,
            conf=self.conf,
            nms_iou=self.nms_iou,
            crops=False,
            batch=self.batch,
            device=self.device,
            devices=self.devices,
            shard=self.shard,
            quiet=self.quiet,
        )


def run_detect(cfg: DetectConfig) -> dict[str, Any]:
    from glomssl.slidechain.chain import run_wsi

    return run_wsi(cfg.to_wsi(), detector_flag="--weights")  # detect names it --weights
