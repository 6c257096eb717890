"""The panel detector: an offline ultralytics YOLO with safe weight loading.

Ultralytics is configured to never touch the network or the user's home (``YOLO_OFFLINE=1``,
``YOLO_AUTOINSTALL=False``, a private ``YOLO_CONFIG_DIR`` with settings sync off, and an ``Arial.ttf``
that is a copy of matplotlib's DejaVuSans so its plotting never downloads a font) and to build models
without ``eval`` (``ULTRALYTICS_SAFE_LOAD=1``). The model is always built from a checked copy of a
model YAML (the packaged ``panel_detector.yaml``, a slim single-class YOLOv8 layout, by default), never
from a hub name. Shipped and trained weights are a safetensors state dict of that model plus a JSON
sidecar, so loading them unpickles nothing; a ``.pt`` file is refused. Training lives in
:mod:`glomssl.mining.yolo_train`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from glomssl.errors import GlomsslError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
MODEL_YAML = WEIGHTS_DIR / "panel_detector.yaml"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "panel_detector.safetensors"
ARCHITECTURE = "glomssl-panel-yolo"

_CONFIGURED = False


@contextlib.contextmanager
def torch_settings_kept() -> Iterator[None]:
    """Run ultralytics without letting it change torch's process-wide settings for what follows.

    On a CPU, ultralytics' device selection (first prediction of a model, every training) sets
    torch's intra-op threads to min(8, cores - 1), and training with ``deterministic=True`` turns on
    torch's deterministic algorithms; both stayed set for the rest of the process, so a stage after
    ``separate`` in ``glomssl mine`` or ``make demo`` ran on one thread on a 2-core machine. The
    thread count and the deterministic flag are put back as they were."""
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ) != (deterministic, warn_only):
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def train_offline(yolo: Any, run: Path, what: object, quiet: bool, **args: Any) -> None:
    """``yolo.train(**args)`` with this project's fixed settings: outputs under ``run``/ultralytics,
    deterministic, no mixed precision, no plots, no mosaic or mixup (they break panel letters and
    whole-figure layouts), quiet unless asked, torch's settings kept (:func:`torch_settings_kept`).
    A failure becomes one line naming ``what`` (the training data as the user gave it)."""
    try:
        with torch_settings_kept():
            yolo.train(
                project=os.fspath(run.resolve()),
                name="ultralytics",
                exist_ok=True,
                deterministic=True,
                amp=False,
                plots=False,
                verbose=not quiet,
                mosaic=0.0,
                mixup=0.0,
                close_mosaic=0,
                **args,
            )
    except GlomsslError:
        raise
    except (FileNotFoundError, RuntimeError) as exc:
        raise GlomsslError(f"training failed on {what}: {exc}".splitlines()[0]) from exc


def setup_offline(config_dir: str | os.PathLike[str] | None = None) -> Path:
    """Point ultralytics at a private, offline set-up; call before importing ultralytics.

    Returns the config folder. An existing ``YOLO_CONFIG_DIR`` (e.g. set by the test suite) is kept.
    """
    global _CONFIGURED
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"  # model YAMLs parsed without eval, known layers only
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


def ultralytics_device(name: str, what: str = "--device") -> str:
    """A ``--device`` value as ultralytics takes it (``cpu``, ``0``, ``0,1``), checked first.

    Accepts glomssl's names (``auto``, ``cpu``, ``cuda``, ``cuda:N``) and ultralytics' (``0``, ``0,1``);
    a device this machine lacks is a one-line GlomsslError (see :func:`glomssl.engine.resolve_device`).
    """
    from glomssl.engine import resolve_device

    text = str(name).strip().lower()
    parts = [p.strip() for p in text.split(",")] if "," in text else [text]
    if len(parts) > 1:
        if not all(p.isdigit() for p in parts):
            raise GlomsslError(f"{what} {name!r} is not a device; use cpu, auto, 0 or 0,1")
        return ",".join(resolve_device(p, what).partition(":")[2] for p in parts)
    dev = resolve_device(text, what)
    return "cpu" if dev == "cpu" else dev.partition(":")[2] or "0"


def optimizer_args(lr0: float | None) -> dict[str, Any]:
    """ultralytics ``train`` arguments for a starting learning rate.

    With its default ``optimizer="auto"`` ultralytics ignores ``lr0`` and picks the optimizer and
    rate itself (AdamW at 0.002 for a one-class detector on short runs). ``None`` keeps that
    choice; a number asks for AdamW starting at that rate, so the value given is the one used
    (a lower rate fine-tunes shipped weights more gently).
    """
    return {} if lr0 is None else {"optimizer": "AdamW", "lr0": float(lr0)}


def report_progress(yolo: Any, what: str, quiet: bool = False, every_s: float = 30.0) -> None:
    """Print plain progress lines to stderr while ``yolo`` trains.

    glomssl keeps ultralytics' own logger quiet (``YOLO_VERBOSE``), so without this a training run
    prints nothing for many minutes. Lines, also in a log without a terminal: the batches done over
    all epochs (at most one line per ``every_s`` seconds, with a time left), and one line per
    finished epoch with its validation mAP50.
    """
    if quiet:
        return
    import sys
    import time

    from glomssl.engine import progress_line

    state = {"batch": 0, "start": time.perf_counter(), "last": time.perf_counter()}

    def on_train_start(trainer: Any) -> None:  # the clock starts after data loading and caching
        state["start"] = state["last"] = time.perf_counter()

    def on_epoch_start(trainer: Any) -> None:
        state["batch"] = 0

    def on_batch_end(trainer: Any) -> None:
        state["batch"] += 1
        now = time.perf_counter()
        if now - state["last"] < every_s:
            return
        state["last"] = now
        per_epoch = len(trainer.train_loader)
        done = (trainer.epoch - trainer.start_epoch) * per_epoch + state["batch"]
        total = (trainer.epochs - trainer.start_epoch) * per_epoch
        line = progress_line(
            f"{what}: batches", done, total, state["start"], epoch=trainer.epoch + 1
        )
        print(line, file=sys.stderr, flush=True)

    def on_epoch_end(trainer: Any) -> None:
        metrics = getattr(trainer, "metrics", None) or {}
        done, total = trainer.epoch - trainer.start_epoch + 1, trainer.epochs - trainer.start_epoch
        if done > total:  # ultralytics' closing check of the best epoch calls this hook again
            return
        spent = time.perf_counter() - state["start"]
        left = spent / done * (total - done)
        line = (
            f"{what}: epoch {done}/{total} ({100 * done / max(total, 1):.0f}%) "
            f"{spent / done:.0f} s/epoch eta {int(left // 60)}m{int(left % 60):02d}s"
        )
        if "metrics/mAP50(B)" in metrics:
            line += f" mAP50={float(metrics['metrics/mAP50(B)']):.4g}"
        print(line, file=sys.stderr, flush=True)

    yolo.add_callback("on_train_start", on_train_start)
    yolo.add_callback("on_train_epoch_start", on_epoch_start)
    yolo.add_callback("on_train_batch_end", on_batch_end)
    yolo.add_callback("on_fit_epoch_end", on_epoch_end)


def build_model(
    model_yaml: str | os.PathLike[str] = MODEL_YAML,
    work_dir: str | os.PathLike[str] | None = None,
    kind: str = "panel",
) -> Any:
    """An untrained ``ultralytics.YOLO`` detector built from a checked copy of ``model_yaml``.

    The copy is written into ``work_dir`` (training re-reads it, so a run passes its own folder) or,
    when None, into a temporary folder removed once the model is built. ``kind`` is the one class
    the detector finds, as errors name it (``panel``; ``glomerulus`` for ``glomssl detect``).
    """
    import tempfile

    from glomssl.mining.yolo_files import safe_model_yaml

    p = Path(model_yaml)
    if not p.is_file():
        raise GlomsslError(f"model yaml {p} does not exist; pass a YOLO model .yaml file")
    setup_offline()
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory(prefix="glomssl-model-") as tmp:
        clean = safe_model_yaml(p, Path(work_dir) if work_dir is not None else Path(tmp), kind)
        try:
            return YOLO(str(clean), task="detect")
        except Exception as exc:
            raise GlomsslError(
                f"{p} is not a usable YOLO model yaml ({exc})".splitlines()[0]
            ) from exc


def _read_state_dict(path: Path, flag: str = "--weights") -> tuple[dict[str, Any], dict[str, Any]]:
    """State dict and metadata of a safetensors file; anything else (or another kind of model's
    weights, e.g. a glomerulus detector's) is refused."""
    from glomssl.runs import WeightsKindError, load_weights

    if path.suffix.lower() != ".safetensors":
        raise GlomsslError(
            f"{path} is not a detector checkpoint glomssl can load safely (a {path.suffix or 'bare'} "
            "file may need unpickling); pass the panel_detector.safetensors that "
            "`glomssl separator train` writes"
        )
    try:
        return load_weights(path, expect="panel-detector", flag=flag)
    except WeightsKindError:  # already says what the file is and where it goes
        raise
    except GlomsslError as exc:  # say which file is wrong: the weights or their sidecar
        raise GlomsslError(
            f"{path} is not a detector checkpoint ({str(exc).split(';')[0]}); pass the "
            "panel_detector.safetensors that `glomssl separator train` writes"
        ) from exc


def weights_meta(weights: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The JSON sidecar of a weights file (shipped ones by default); empty when there is none."""
    import json

    side = (Path(weights) if weights is not None else DEFAULT_WEIGHTS).with_suffix(".json")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        return {}
    return meta if isinstance(meta, dict) else {}


def check_weights(
    weights: str | os.PathLike[str] | None = None, flag: str = "--weights"
) -> tuple[dict[str, Any], Path]:
    """Read and check detector weights without building the model: (state dict, model yaml).

    Raises a one-line GlomsslError for a missing file, a file that is not safetensors, or weights of
    another architecture; ``separate`` calls it before it creates any state.
    """
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if path.is_dir():
        raise GlomsslError(
            f"{flag} {path} is a folder; pass the panel_detector.safetensors file inside a run"
        )
    if not path.is_file():
        hint = f"check {flag}" if weights is not None else "reinstall glomssl"
        raise GlomsslError(f"detector weights {path} do not exist; {hint}")
    state, meta = _read_state_dict(path, flag)
    if meta and meta.get("architecture") not in (None, ARCHITECTURE):
        raise GlomsslError(
            f"{path} holds a {meta.get('architecture')!r} model, not a panel detector checkpoint"
        )
    yaml_path = path.parent / str(meta.get("model_yaml", MODEL_YAML.name))
    if not yaml_path.is_file():
        yaml_path = MODEL_YAML
    return state, yaml_path


def load_detector(
    weights: str | os.PathLike[str] | None = None, work_dir: str | os.PathLike[str] | None = None
) -> Any:
    """The panel detector (``ultralytics.YOLO``, eval mode) with shipped or given weights.

    Refuses, with a one-line GlomsslError, a file that is not a checkpoint of this detector.
    """
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    state, yaml_path = check_weights(weights)
    yolo = build_model(yaml_path, work_dir)
    try:
        yolo.model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (RuntimeError, AttributeError) as exc:
        raise GlomsslError(
            f"{path} is not a checkpoint of the panel detector (its tensors do not match "
            f"{yaml_path.name}); pass weights written by `glomssl separator train`"
        ) from exc
    yolo.model.eval()
    return yolo
