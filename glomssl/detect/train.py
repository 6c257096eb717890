"""``glomssl detect train``: train the glomerulus detector offline on a ``glomssl detect data`` set.

The data file ultralytics reads is written by glomssl from a checked data-set folder
(:func:`glomssl.detect.dataset.ultralytics_data_file`); ``--model`` takes only a layout ``.yaml`` and
``--init`` only glomssl safetensors weights, so nothing a user passes is unpickled or executed.

Augmentation: flips both ways and colour jitter; a little scale jitter only (the physical scale is
known: tiles are at the working mpp); no rotation (the mosaics are already rotated) and no
ultralytics mosaic/mixup (the tiles are mosaics already, and a 4-way mosaic would put four stains in
one field). After training, the weights of the best epoch are saved as safetensors with a sidecar that
records the working mpp and the score threshold chosen on the validation tiles (best F1,
:mod:`glomssl.detect.evaluate`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glomssl.config import opt
from glomssl.detect.model import ARCHITECTURE, MODEL_YAML
from glomssl.errors import GlomsslError


@dataclass
class DetectTrainConfig:
    """Options of ``glomssl detect train``."""

    data: str = ""  # folder written by `glomssl detect data`
    out: str = "runs"  # parent of numbered run folders
    model: str = str(MODEL_YAML)  # detector layout (.yaml)
    init: str | None = None  # start from these detector weights (safetensors)
    epochs: int = opt(30, ge=1, le=10000)
    imgsz: int = opt(384, ge=64, le=4096)
    batch: int = opt(16, ge=1)
    # starting learning rate of AdamW; unset: ultralytics' automatic choice (AdamW at 0.002)
    lr0: float | None = opt(None, gt=0, le=1)
    device: str = "cpu"
    workers: int = opt(2, ge=0)
    seed: int = opt(0, ge=0)
    patience: int = opt(100, ge=1)
    cache: bool = True  # keep decoded tiles in RAM
    quiet: bool = False

    def validate(self) -> None:
        if not self.data:
            raise GlomsslError("--data is required: a folder from `glomssl detect data`")
        if Path(self.model).suffix.lower() not in (".yaml", ".yml"):
            raise GlomsslError(f"--model {self.model} must be a detector layout .yaml")
        if not Path(self.model).is_file():
            raise GlomsslError(f"--model {self.model} does not exist; pass a layout .yaml")
        if self.imgsz % 32:
            raise GlomsslError(f"--imgsz must be a multiple of 32, got {self.imgsz}")
        if self.init is not None and not Path(self.init).is_file():
            raise GlomsslError(f"--init {self.init} does not exist; pass detector weights")


def train_glomerulus_detector(cfg: DetectTrainConfig) -> dict[str, Any]:
    """Train; write ``RUN/glomerulus_detector.safetensors`` + sidecar + the layout; return a summary."""
    import shutil

    from glomssl.config import save_config, to_dict
    from glomssl.detect.dataset import check_dataset, ultralytics_data_file
    from glomssl.detect.evaluate import best_f1_threshold, labelled_tiles, predict_files
    from glomssl.detect.model import Detector, build_net, load_yolo
    from glomssl.engine import resolve_device
    from glomssl.mining.yolo import optimizer_args, report_progress, train_offline
    from glomssl.runs import next_run_dir, removed_on_error, save_weights

    info = check_dataset(cfg.data)
    device = resolve_device(cfg.device)
    if not cfg.init:
        build_net(
            cfg.model
        )  # a bad --model is refused naming the user's file, before any run exists
    with removed_on_error(next_run_dir(cfg.out, "detector")) as run:
        save_config(cfg, run / "config.yaml")
        data_file = ultralytics_data_file(cfg.data, run)
        layout = run / "glomerulus_detector.yaml"
        shutil.copyfile(cfg.model, layout)
        if cfg.init:
            yolo, _ = load_yolo(cfg.init, work_dir=run, flag="--init")
            # ultralytics copies the YOLO object's weights into its trainer's fresh model only when
            # it believes they came from a checkpoint; the tensors were loaded safely above.
            yolo.ckpt = {"model": yolo.model}
        else:
            yolo = build_net(layout, work_dir=run)
    report_progress(yolo, "detect train", cfg.quiet)
    t0 = time.perf_counter()
    train_offline(
        yolo,
        run,
        cfg.data,
        cfg.quiet,
        data=os.fspath(data_file),
        epochs=cfg.epochs,
        imgsz=cfg.imgsz,
        batch=cfg.batch,
        device="cpu" if device == "cpu" else device.partition(":")[2] or "0",
        workers=cfg.workers,
        seed=cfg.seed,
        patience=cfg.patience,
        cache="ram" if cfg.cache else False,
        pretrained=bool(cfg.init),
        warmup_epochs=min(1.0, cfg.epochs / 10),
        degrees=0.0,
        fliplr=0.5,
        flipud=0.5,
        scale=0.15,
        translate=0.1,
        hsv_h=0.015,
        hsv_s=0.5,
        hsv_v=0.3,
        **optimizer_args(cfg.lr0),
    )
    train_s = time.perf_counter() - t0
    metrics = {k: float(v) for k, v in (getattr(yolo.trainer, "metrics", None) or {}).items()}
    # ultralytics reloads the best epoch into yolo.model at the end (a file this process wrote)
    net = yolo.model.float().eval()
    det = Detector(net.to(device), device, {"mpp": info["mpp"]})
    val = labelled_tiles(cfg.data, "val")
    conf, at_conf = best_f1_threshold(predict_files(det, [v[0] for v in val]), [v[1] for v in val])
    state = {k: v.float() for k, v in net.state_dict().items()}
    meta = {
        "architecture": ARCHITECTURE,
        "model_yaml": layout.name,
        "mpp": info["mpp"],
        "tile": info.get("size"),
        "conf": conf,
        "val_at_conf": at_conf,
        "val_metrics": metrics,
        "train_seconds": round(train_s, 1),
        "data": os.fspath(Path(cfg.data).resolve()),
        "data_options": info.get("options"),
        "config": to_dict(cfg),
    }
    weights = save_weights(
        run / "glomerulus_detector.safetensors", state, meta, kind="glomerulus-detector"
    )
    return {
        "run": str(run),
        "weights": str(weights),
        "conf": conf,
        "val": at_conf,
        "train_seconds": round(train_s, 1),
    }
