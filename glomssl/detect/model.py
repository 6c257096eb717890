"""The glomerulus detector: packaged layout, safe loading, and prediction on RGB tiles.

The detector is an offline ultralytics YOLO built from ``glomssl/weights/glomerulus_detector.yaml``
(never from a hub name), with the same safety rules as the panel detector
(:mod:`glomssl.mining.yolo`: ``setup_offline``, ``build_model``). Weights are a safetensors state dict
plus a JSON sidecar (``architecture``, the working ``mpp`` it was trained at, the score threshold
``conf`` chosen on held-out data, the training command); nothing is ever unpickled, and a ``.pt`` file
is refused.

Prediction calls the network directly on batches of tiles (RGB, sides a multiple of 32) and
ultralytics' box NMS per tile; slide-level merging (circle NMS) is the caller's job
(:mod:`glomssl.detect.slide`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.errors import GlomsslError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
MODEL_YAML = WEIGHTS_DIR / "glomerulus_detector.yaml"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "glomerulus_detector.safetensors"
ARCHITECTURE = "glomssl-glomerulus-yolo"
DEFAULT_MPP = 2.0
DEFAULT_CONF = 0.25


@dataclass
class Detector:
    """A loaded detector: the torch module, where it runs, and its sidecar facts."""

    net: Any  # ultralytics DetectionModel, eval mode
    device: str
    meta: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def mpp(self) -> float:
        """Working resolution (um/px) the detector was trained at."""
        v = self.meta.get("mpp")
        return float(v) if isinstance(v, int | float) and v > 0 else DEFAULT_MPP

    @property
    def conf(self) -> float:
        """Score threshold chosen on held-out tiles when it was trained (max F1)."""
        v = self.meta.get("conf")
        return float(v) if isinstance(v, int | float) and 0 < v < 1 else DEFAULT_CONF

    def predict(
        self, tiles: list[np.ndarray], conf: float | None = None, iou: float = 0.5
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Boxes (N, 4) x0 y0 x1 y1 in tile pixels and scores (N,) for each RGB uint8 tile."""
        import torch

        from glomssl.mining.yolo import setup_offline

        setup_offline()
        from ultralytics.utils.nms import non_max_suppression

        if not tiles:
            return []
        thr = self.conf if conf is None else conf
        out: list[tuple[np.ndarray, np.ndarray]] = []
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, t in enumerate(tiles):
            by_shape.setdefault(t.shape, []).append(i)
        results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for shape, idx in by_shape.items():
            h, w = shape[:2]
            ph, pw = (-h) % 32, (-w) % 32  # the network needs sides divisible by its stride
            batch = np.stack([tiles[i] for i in idx])  # (B, H, W, 3) uint8 RGB
            if ph or pw:
                batch = np.pad(batch, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=114)
            x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float() / 255.0
            with torch.inference_mode():
                pred = self.net(x)  # (B, 4 + 1, anchors) decoded xywh + score
                dets = non_max_suppression(pred, conf_thres=thr, iou_thres=iou, max_det=300)
            for i, d in zip(idx, dets):
                d = d.float().cpu().numpy()  # (N, 6): x0 y0 x1 y1 score class
                boxes = d[:, :4].astype(np.float64)
                boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
                boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
                results[i] = (boxes, d[:, 4].astype(np.float64))
        for i in range(len(tiles)):
            out.append(results[i])
        return out


def build_net(
    model_yaml: str | os.PathLike[str] = MODEL_YAML, work_dir: str | os.PathLike[str] | None = None
) -> Any:
    """The untrained ``ultralytics.YOLO`` object of a detector layout (.yaml only).

    Training re-reads the layout file, so a training run passes its own folder as ``work_dir`` (the
    checked copy stays there); otherwise the copy is temporary.
    """
    p = Path(model_yaml)
    if p.suffix.lower() not in (".yaml", ".yml"):
        raise GlomsslError(
            f"--model {p} must be a model layout .yaml (weights go to --init); glomssl never loads "
            "a pickled model file"
        )
    from glomssl.mining.yolo import build_model

    return build_model(p, work_dir, kind="glomerulus")


def read_meta(weights: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The JSON sidecar of a detector weights file (the shipped one by default); {} if none."""
    import json

    side = (Path(weights) if weights is not None else DEFAULT_WEIGHTS).with_suffix(".json")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def load_yolo(
    weights: str | os.PathLike[str] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    flag: str = "--weights",
) -> tuple[Any, dict[str, Any]]:
    """(``ultralytics.YOLO`` with the weights loaded, sidecar) -- safetensors only; errors name
    the option ``flag`` that gave the weights."""
    from glomssl.runs import WeightsKindError, load_weights

    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if path.is_dir():
        raise GlomsslError(
            f"{flag} {path} is a folder; pass the glomerulus_detector.safetensors file inside a run"
        )
    if not path.is_file():
        hint = f"check {flag}" if weights is not None else "reinstall glomssl"
        raise GlomsslError(f"detector weights {path} do not exist; {hint}")
    if path.suffix.lower() != ".safetensors":
        raise GlomsslError(
            f"{flag} {path} is not a .safetensors file; pass the "
            "glomerulus_detector.safetensors that `glomssl detect train` writes"
        )
    try:
        state, meta = load_weights(path, expect="glomerulus-detector", flag=flag)
    except WeightsKindError:  # already says what the file is and where it goes
        raise
    except GlomsslError as exc:
        raise GlomsslError(f"{path} is not a detector checkpoint ({exc})".splitlines()[0]) from exc
    if meta.get("architecture") not in (None, ARCHITECTURE):
        raise GlomsslError(
            f"{path} holds a {meta.get('architecture')!r} model, not a glomerulus detector; pass "
            "weights written by `glomssl detect train`"
        )
    yaml_path = path.parent / str(meta.get("model_yaml", MODEL_YAML.name))
    if not yaml_path.is_file() or yaml_path.suffix.lower() not in (".yaml", ".yml"):
        yaml_path = MODEL_YAML
    yolo = build_net(yaml_path, work_dir)
    try:
        yolo.model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (RuntimeError, AttributeError) as exc:
        raise GlomsslError(
            f"{path} does not fit the detector layout {yaml_path.name} (its tensors differ); pass "
            "weights written by `glomssl detect train`"
        ) from exc
    return yolo, meta


def load_detector(
    weights: str | os.PathLike[str] | None = None, device: str = "cpu", flag: str = "--weights"
) -> Detector:
    """The glomerulus detector (shipped weights by default) on ``device``, ready to predict."""
    from glomssl.engine import resolve_device

    dev = resolve_device(device)
    yolo, meta = load_yolo(weights, flag=flag)
    net = yolo.model.to(dev).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return Detector(net, dev, meta, str(weights or DEFAULT_WEIGHTS))
