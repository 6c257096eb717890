"""The panel detector: an offline ultralytics YOLO, its training, and safe weight loading.

Ultralytics is configured to never touch the network or the user's home (``YOLO_OFFLINE=1``,
``YOLO_AUTOINSTALL=False``, a private ``YOLO_CONFIG_DIR`` with settings sync off, and an ``Arial.ttf``
that is a copy of matplotlib's DejaVuSans so its plotting never downloads a font). The model is always
built from the packaged ``panel_detector.yaml`` (a slim single-class YOLOv8 layout), never from a hub
name. Shipped and trained weights are a safetensors state dict of that model plus a JSON sidecar, so
loading them unpickles nothing; a ``.pt`` file is accepted only if ``torch.load(weights_only=True)``
yields a plain state dict.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from glomssl.config import opt
from glomssl.errors import GlomsslError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
MODEL_YAML = WEIGHTS_DIR / "panel_detector.yaml"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "panel_detector.safetensors"
ARCHITECTURE = "glomssl-panel-yolo"

_CONFIGURED = False


def setup_offline(config_dir: str | os.PathLike[str] | None = None) -> Path:
    """Point ultralytics at a private, offline set-up; call before importing ultralytics.

    Returns the config folder. An existing ``YOLO_CONFIG_DIR`` (e.g. set by the test suite) is kept.
    """
    global _CONFIGURED
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    if config_dir is not None:
        os.environ["YOLO_CONFIG_DIR"] = os.fspath(config_dir)
    elif "YOLO_CONFIG_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "glomssl"
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError:
            base = Path(tempfile.gettempdir()) / f"glomssl-{os.getuid()}"
        os.environ["YOLO_CONFIG_DIR"] = os.fspath(base / "ultralytics")
    cfg_dir = Path(os.environ["YOLO_CONFIG_DIR"])
    cfg_dir.mkdir(parents=True, exist_ok=True)
    font = cfg_dir / "Arial.ttf"
    if not font.is_file():
        try:
            import matplotlib

            src = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
            if src.is_file():
                shutil.copyfile(src, font)
        except ImportError:  # pragma: no cover - matplotlib comes with ultralytics
            pass
    if not _CONFIGURED:
        from ultralytics import settings

        try:
            settings.update({"sync": False})
        except Exception:  # pragma: no cover - older settings API
            pass
        _restore_pil_open()
        _CONFIGURED = True
    return cfg_dir


def _restore_pil_open() -> None:
    """Undo ultralytics' patch of ``PIL.Image.open``.

    On import, ultralytics replaces ``Image.open`` with a wrapper that, on the first file Pillow cannot
    identify, tries to install and load a HEIF plug-in: offline that raises ImportError instead of
    Pillow's UnidentifiedImageError, which breaks every corrupt-image check in the process.
    """
    from PIL import Image

    try:
        from ultralytics.utils import patches
    except ImportError:  # pragma: no cover - layout of another ultralytics version
        return
    original = getattr(patches, "_image_open", None)
    if original is not None and Image.open is not original:
        Image.open = original


def build_model(model_yaml: str | os.PathLike[str] = MODEL_YAML) -> Any:
    """An untrained ``ultralytics.YOLO`` detector built from ``model_yaml`` (random init)."""
    p = Path(model_yaml)
    if not p.is_file():
        raise GlomsslError(f"model yaml {p} does not exist; pass a YOLO model .yaml file")
    setup_offline()
    from ultralytics import YOLO

    try:
        return YOLO(str(p), task="detect")
    except Exception as exc:
        raise GlomsslError(f"{p} is not a usable YOLO model yaml ({exc})".splitlines()[0]) from exc


def _read_state_dict(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """State dict and metadata from a safetensors file (or a plain state-dict ``.pt``)."""
    if path.suffix == ".pt":
        import torch

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise GlomsslError(
                f"{path} is not a detector checkpoint glomssl can load safely (it needs unpickling); "
                "pass the panel_detector.safetensors that `glomssl separator train` writes"
            ) from exc
        if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
            raise GlomsslError(f"{path} is not a detector checkpoint (no state dict inside)")
        return obj, {}
    from glomssl.runs import load_weights

    try:
        return load_weights(path)
    except GlomsslError as exc:
        raise GlomsslError(
            f"{path} is not a detector checkpoint (not a safetensors file); pass the "
            "panel_detector.safetensors that `glomssl separator train` writes"
        ) from exc


def weights_meta(weights: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The JSON sidecar of a weights file (shipped ones by default); empty when there is none."""
    import json

    side = (Path(weights) if weights is not None else DEFAULT_WEIGHTS).with_suffix(".json")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def load_detector(weights: str | os.PathLike[str] | None = None) -> Any:
    """The panel detector (``ultralytics.YOLO``, eval mode) with shipped or given weights.

    Refuses, with a one-line GlomsslError, a file that is not a checkpoint of this detector.
    """
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        hint = "check --weights" if weights is not None else "reinstall glomssl"
        raise GlomsslError(f"detector weights {path} do not exist; {hint}")
    state, meta = _read_state_dict(path)
    if meta and meta.get("architecture") not in (None, ARCHITECTURE):
        raise GlomsslError(
            f"{path} holds a {meta.get('architecture')!r} model, not a panel detector checkpoint"
        )
    yaml_path = path.parent / str(meta.get("model_yaml", MODEL_YAML.name))
    if not yaml_path.is_file():
        yaml_path = MODEL_YAML
    yolo = build_model(yaml_path)
    try:
        yolo.model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (RuntimeError, AttributeError) as exc:
        raise GlomsslError(
            f"{path} is not a checkpoint of the panel detector (its tensors do not match "
            f"{yaml_path.name}); pass weights written by `glomssl separator train`"
        ) from exc
    yolo.model.eval()
    return yolo


@dataclasses.dataclass
class TrainConfig:
    """Options of ``glomssl separator train``."""

    data: str = ""  # data.yaml written by `glomssl separator synth`
    out: str = "runs"  # parent of numbered run folders
    model: str = str(MODEL_YAML)
    epochs: int = 15
    imgsz: int = 512
    batch: int = 16
    device: str = "cpu"
    workers: int = opt(2, ge=0)
    seed: int = opt(0, ge=0)
    patience: int = 50
    fraction: float = 1.0  # share of the training images used (a quick run on a big set)
    warmup_epochs: float = 1.0
    cache: bool = True  # keep decoded training images in RAM (saves CPU on JPEG decoding)
    init: str | None = None  # start from these detector weights (safetensors) instead of random
    quiet: bool = False

    def validate(self) -> None:
        if not self.data or not Path(self.data).is_file():
            raise GlomsslError(
                f"--data {self.data!r} is not a file; pass the data.yaml from `glomssl separator synth`"
            )
        if not Path(self.model).is_file():
            raise GlomsslError(f"--model {self.model} does not exist; pass a YOLO model .yaml")
        for name in ("epochs", "batch"):
            if getattr(self, name) < 1:
                raise GlomsslError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < self.fraction <= 1.0:
            raise GlomsslError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.imgsz < 64 or self.imgsz % 32:
            raise GlomsslError(f"--imgsz must be a multiple of 32 and >= 64, got {self.imgsz}")


def train_detector(cfg: TrainConfig) -> dict[str, Any]:
    """Train the panel detector from scratch; write ``RUN/panel_detector.safetensors`` + sidecar.

    Augmentation keeps whole figures intact (no mosaic, no mixup: a mosaic of figures cuts panels at
    arbitrary lines and teaches the detector wrong panel borders); scale/translate/flip/colour jitter
    stay on.
    """
    cfg.validate()
    from glomssl.config import save_config
    from glomssl.runs import next_run_dir, save_weights

    run = next_run_dir(cfg.out, "separator")
    save_config(cfg, run / "config.yaml")
    if cfg.init:
        yolo = load_detector(cfg.init)
        # ultralytics copies the current module's weights into its trainer's fresh model only when
        # the YOLO object says it came from a checkpoint; the tensors were loaded safely above.
        yolo.ckpt = {"model": yolo.model}
    else:
        yolo = build_model(cfg.model)
    try:
        yolo.train(
            data=os.fspath(Path(cfg.data).resolve()),
            epochs=cfg.epochs,
            imgsz=cfg.imgsz,
            batch=cfg.batch,
            device=cfg.device,
            workers=cfg.workers,
            seed=cfg.seed,
            deterministic=True,
            patience=cfg.patience,
            fraction=cfg.fraction,
            warmup_epochs=cfg.warmup_epochs,
            cache="ram" if cfg.cache else False,
            project=os.fspath(run.resolve()),
            name="ultralytics",
            exist_ok=True,
            pretrained=bool(cfg.init),
            amp=False,
            plots=False,
            verbose=not cfg.quiet,
            mosaic=0.0,
            mixup=0.0,
            close_mosaic=0,
            fliplr=0.5,
            scale=0.3,
            translate=0.05,
            degrees=0.0,
        )
    except GlomsslError:
        raise
    except (FileNotFoundError, RuntimeError) as exc:
        raise GlomsslError(f"training failed on {cfg.data}: {exc}".splitlines()[0]) from exc
    trainer = yolo.trainer
    metrics = {k: float(v) for k, v in (getattr(trainer, "metrics", None) or {}).items()}
    # After training, ultralytics reloads best.pt (a file this process just wrote) into yolo.model.
    state = {k: v.float() for k, v in yolo.model.state_dict().items()}
    weights = save_weights(
        run / "panel_detector.safetensors",
        state,
        {
            "architecture": ARCHITECTURE,
            "model_yaml": Path(cfg.model).name,
            "imgsz": cfg.imgsz,
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "fraction": cfg.fraction,
            "init": cfg.init,
            "data": os.fspath(cfg.data),
            "val_metrics": metrics,
        },
    )
    return {"run": str(run), "weights": str(weights), "metrics": metrics}
