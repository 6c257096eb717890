"""Classifier metrics as Glo-In-One reports them, and the confusion-matrix picture.

- balanced accuracy: the mean of per-class recalls over the classes present in the truth (chance is
  1 / C whatever the class balance, 0.5 for GS vs nonGS);
- macro F1: the unweighted mean of per-class F1 (a class never predicted counts as 0);
- AUC: one-vs-rest ROC AUC per class present with both outcomes, then averaged (the paper's external
  binary AUC is the binary case of this);
- the confusion matrix (rows: truth, columns: prediction) and a PNG of it with counts and row shares.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("balanced_accuracy", "macro_f1", "auc")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts: row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def balanced_accuracy(cm: np.ndarray) -> float:
    rows = cm.sum(axis=1)
    present = rows > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / rows[present]))


def macro_f1(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # (fp + tp) + (fn + tp)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def auc_ovr(y_true: np.ndarray, prob: np.ndarray) -> float:
    """Mean one-vs-rest ROC AUC; NaN when no class has both positives and negatives."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true)
    if prob.shape[1] == 2:
        return float(roc_auc_score(y == 1, prob[:, 1])) if len(np.unique(y)) == 2 else math.nan
    aucs = [
        float(roc_auc_score(y == c, prob[:, c]))
        for c in range(prob.shape[1])
        if 0 < int((y == c).sum()) < len(y)
    ]
    return float(np.mean(aucs)) if aucs else math.nan


def evaluate(y_true: np.ndarray, prob: np.ndarray) -> dict[str, Any]:
    """All metrics of probabilities ``prob`` (N, C) against class ids ``y_true`` (N,)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    pred = prob.argmax(axis=1)
    cm = confusion(y_true, pred, prob.shape[1])
    return {
        "n": int(len(y_true)),
        "balanced_accuracy": balanced_accuracy(cm),
        "macro_f1": macro_f1(cm),
        "auc": auc_ovr(y_true, prob),
        "accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "confusion": cm.tolist(),
    }


def summarise(per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (n - 1; 0 for one value) over folds of each metric,
    ignoring NaN entries."""
    out: dict[str, Any] = {"folds": len(per_fold)}
    for m in (*METRICS, "accuracy"):
        vals = np.asarray([f[m] for f in per_fold if f.get(m) is not None], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        out[m] = float(vals.mean()) if len(vals) else None
        out[m + "_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else (0.0 if len(vals) else None)
    return out


def confusion_png(
    cm: np.ndarray, classes: list[str], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Draw the confusion matrix (counts and row percentages, blue by row share) as a PNG."""
    from PIL import Image, ImageDraw, ImageFont

    from glomssl.data.images import save_png

    n = len(classes)
    cell, left, top = 84, 150, 70 if title else 44
    w, h = left + n * cell + 16, top + n * cell + 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    small = ImageFont.load_default(size=11)
    if title:
        d.text((8, 8), title, fill="black", font=font)
    d.text((left, top - 36), "predicted", fill="black", font=small)
    d.text((8, top + n * cell + 8), "rows: true class", fill="black", font=small)
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    share = cm / rows
    for j, name in enumerate(classes):
        d.text((left + j * cell + 4, top - 20), name[:12], fill="black", font=small)
    for i, name in enumerate(classes):
        d.text((8, top + i * cell + cell // 2 - 7), name[:20], fill="black", font=font)
        for j in range(n):
            s = float(share[i, j])
            colour = (int(255 - 200 * s), int(255 - 150 * s), 255)
            x0, y0 = left + j * cell, top + i * cell
            d.rectangle((x0, y0, x0 + cell - 2, y0 + cell - 2), fill=colour, outline="grey")
            ink = "white" if s > 0.6 else "black"
            d.text((x0 + 8, y0 + 22), f"{int(cm[i, j])}", fill=ink, font=font)
            d.text((x0 + 8, y0 + 42), f"{100 * s:.0f}%", fill=ink, font=small)
    return save_png(path, img)


def format_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """Fixed-width text table: one line per (name, summary) with mean +- std of each metric."""
    lines = [f"{'':<10} {'balanced acc':>15} {'macro F1':>15} {'AUC':>15}"]
    for name, s in rows:
        cells = []
        for m in METRICS:
            v, sd = s.get(m), s.get(m + "_std")
            cells.append("-" if v is None else (f"{v:.3f}" + (f" +- {sd:.3f}" if sd else "")))
        lines.append(f"{name:<10} " + " ".join(f"{c:>15}" for c in cells))
    return "\n".join(lines)
