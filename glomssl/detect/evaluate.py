"""Scoring a detector on labelled tiles, and the score threshold it ships with.

The threshold rule is fixed in advance: after training, the detector runs on the validation tiles
(slides never trained on) and the score threshold with the best F1 (precision and recall at box
IoU 0.5) becomes its default ``conf``, stored in the weights' sidecar.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.detect.geometry import detection_metrics


def labelled_tiles(root: str | os.PathLike[str], split: str) -> list[tuple[Path, np.ndarray]]:
    """(image path, (N, 4) pixel boxes) of a data set split written by ``glomssl detect data``."""
    from PIL import Image

    from glomssl.detect.dataset import read_labels

    d = Path(root)
    out = []
    for img in sorted((d / "images" / split).glob("*.jpg")):
        with Image.open(img) as im:
            w, h = im.size
        lab = d / "labels" / split / f"{img.stem}.txt"
        rows = read_labels(lab) if lab.is_file() else np.zeros((0, 5))
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        out.append((img, boxes))
    return out


def predict_files(
    detector: Any, files: list[Path], conf: float = 0.001, batch: int = 8
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Raw detections (low threshold, for curves) of image files, in order."""
    from glomssl.data.images import load_rgb

    out: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(0, len(files), batch):
        tiles = [np.asarray(load_rgb(f), dtype=np.uint8) for f in files[i : i + batch]]
        out.extend(detector.predict(tiles, conf=conf))
    return out


def best_f1_threshold(
    preds: list[tuple[np.ndarray, np.ndarray]], gts: list[np.ndarray]
) -> tuple[float, dict[str, float]]:
    """The score threshold with the highest F1 at IoU 0.5 and the metrics there."""
    images = [(p[0], p[1], g) for p, g in zip(preds, gts)]
    best: tuple[float, float, dict[str, float]] = (-1.0, 0.25, {})
    for thr in np.round(np.arange(0.05, 0.951, 0.025), 3):
        m = detection_metrics(images, float(thr))
        p, r = m["precision"], m["recall"]
        f1 = 2 * p * r / (p + r) if p == p and r == r and p + r > 0 else 0.0
        if f1 > best[0]:
            best = (f1, float(thr), {**m, "f1": f1})
    return best[1], best[2]


def evaluate_tiles(
    detector: Any, root: str | os.PathLike[str], split: str, conf: float | None = None
) -> dict[str, Any]:
    """Precision/recall at ``conf`` (the detector's own by default) and AP50 on a data set split."""
    tiles = labelled_tiles(root, split)
    preds = predict_files(detector, [t[0] for t in tiles])
    thr = detector.conf if conf is None else conf
    m = detection_metrics([(p[0], p[1], t[1]) for p, t in zip(preds, tiles)], thr)
    return {**m, "conf": thr, "tiles": len(tiles)}
