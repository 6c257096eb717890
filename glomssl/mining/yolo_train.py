"""``glomssl separator train``: train the panel detector, never running code from a user's file.

The data set and model YAML files are checked and copied by :mod:`glomssl.mining.yolo_files` before
ultralytics sees them; models start from a ``.yaml`` definition or from glomssl's own safetensors
weights, and a ``.pt`` (which ultralytics would unpickle) is refused.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from glomssl.config import opt
from glomssl.errors import GlomsslError
from glomssl.mining.yolo import (
    ARCHITECTURE,
    MODEL_YAML,
    build_model,
    check_weights,
    load_detector,
    optimizer_args,
    report_progress,
    train_offline,
    ultralytics_device,
    weights_meta,
)
from glomssl.mining.yolo_files import safe_data_yaml


@dataclasses.dataclass
class TrainConfig:
    """Options of ``glomssl separator train``."""

    data: str = ""  # data.yaml written by `glomssl separator synth`
    out: str = "runs"  # parent of numbered run folders
    model: str = str(MODEL_YAML)  # a model .yaml, or glomssl detector weights (.safetensors)
    epochs: int = opt(15, ge=1)
    imgsz: int = opt(512, ge=64, le=4096)
    batch: int = opt(16, ge=1)
    device: str = "cpu"
    workers: int = opt(2, ge=0)
    seed: int = opt(0, ge=0)
    patience: int = opt(50, ge=1)
    fraction: float = opt(1.0, gt=0, le=1)  # share of the training images used
    warmup_epochs: float = opt(1.0, ge=0)
    fliplr: float = opt(0.0, ge=0, le=1)  # left-right flips move panel letters to the wrong side
    scale: float = opt(0.3, ge=0, lt=1)  # random zoom range of the augmentation
    cache: bool = True  # keep decoded training images in RAM (saves CPU on JPEG decoding)
    init: str | None = None  # start from these detector weights (safetensors) instead of random
    # starting learning rate of AdamW; unset: ultralytics' automatic choice (AdamW at 0.002)
    lr0: float | None = opt(None, gt=0, le=1)
    quiet: bool = False

    def validate(self) -> None:
        if not self.data or not Path(self.data).is_file():
            raise GlomsslError(
                f"--data {self.data!r} is not a file; pass the data.yaml from `glomssl separator synth`"
            )
        if not Path(self.model).is_file():
            raise GlomsslError(f"--model {self.model} does not exist; pass a YOLO model .yaml")
        if Path(self.model).suffix.lower() not in (".yaml", ".yml", ".safetensors"):
            raise GlomsslError(
                f"--model {self.model}: give a model .yaml or glomssl .safetensors weights "
                "(a .pt would need unpickling, which glomssl never does)"
            )
        if self.init is not None and Path(self.init).suffix.lower() != ".safetensors":
            raise GlomsslError(
                f"--init {self.init}: give glomssl .safetensors weights from `glomssl separator train`"
            )
        for flag, weights in (("--init", self.init), ("--model", self.model)):
            if weights is not None and weights.lower().endswith(".safetensors"):
                check_weights(weights, flag)  # before any folder is made
        if not (64 <= self.imgsz <= 4096 and self.imgsz % 32 == 0):
            raise GlomsslError(
                f"--imgsz must be a multiple of 32 from 64 to 4096, got {self.imgsz}"
            )
        ultralytics_device(self.device)


def train_detector(cfg: TrainConfig) -> dict[str, Any]:
    """Train the panel detector; write ``RUN/panel_detector.safetensors`` + sidecar.

    Augmentation keeps whole figures intact (no mosaic, no mixup: a mosaic of figures cuts panels at
    arbitrary lines and teaches the detector wrong panel borders) and, by default, unflipped (panel
    letters sit left of or above their panel); scale/translate/colour jitter stay on.
    """
    cfg.validate()
    from glomssl.config import save_config
    from glomssl.runs import next_run_dir, removed_on_error, save_weights

    device = ultralytics_device(cfg.device)
    with removed_on_error(next_run_dir(cfg.out, "separator")) as run:  # no empty run if refused
        save_config(cfg, run / "config.yaml")
        data_yaml = safe_data_yaml(cfg.data, run)
        init = cfg.init or (cfg.model if cfg.model.lower().endswith(".safetensors") else None)
        if init:
            model_yaml = Path(weights_meta(init).get("model_yaml", MODEL_YAML.name))
            yolo = load_detector(init, work_dir=run)
            # ultralytics copies the current module's weights into its trainer's fresh model only
            # when the YOLO object says it came from a checkpoint; the tensors were loaded above.
            yolo.ckpt = {"model": yolo.model}
        else:
            model_yaml = Path(cfg.model)
            yolo = build_model(model_yaml, work_dir=run)
    report_progress(yolo, "separator train", cfg.quiet)
    train_offline(
        yolo,
        run,
        cfg.data,
        cfg.quiet,
        data=os.fspath(data_yaml),
        epochs=cfg.epochs,
        imgsz=cfg.imgsz,
        batch=cfg.batch,
        device=device,
        workers=cfg.workers,
        seed=cfg.seed,
        patience=cfg.patience,
        fraction=cfg.fraction,
        warmup_epochs=cfg.warmup_epochs,
        cache="ram" if cfg.cache else False,
        pretrained=bool(init),
        fliplr=cfg.fliplr,
        scale=cfg.scale,
        translate=0.05,
        degrees=0.0,
        **optimizer_args(cfg.lr0),
    )
    trainer = yolo.trainer
    metrics = {k: float(v) for k, v in (getattr(trainer, "metrics", None) or {}).items()}
    # After training, ultralytics reloads best.pt (a file this process just wrote) into yolo.model.
    state = {k: v.float() for k, v in yolo.model.state_dict().items()}
    weights = save_weights(
        run / "panel_detector.safetensors",
        state,
        {
            "architecture": ARCHITECTURE,
            "model_yaml": Path(model_yaml).name,
            "imgsz": cfg.imgsz,
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "fraction": cfg.fraction,
            "fliplr": cfg.fliplr,
            "init": init,
            "lr0": cfg.lr0 if cfg.lr0 is not None else "auto (ultralytics: AdamW at 0.002)",
            "data": os.fspath(cfg.data),
            "val_metrics": metrics,
        },
        kind="panel-detector",
    )
    return {"run": str(run), "weights": str(weights), "metrics": metrics}
