"""Panel boxes: overlap measures and the detection score every separator is judged by.

A box is ``(x0, y0, x1, y1)`` in parent-figure pixels with exclusive ends. :func:`prf1` is the metric
of the panel-separation benchmarks: precision, recall and F1 at IoU >= 0.5 with greedy one-to-one
matching per figure (the ImageCLEF compound-figure-separation convention).
"""

from __future__ import annotations

from collections.abc import Sequence

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends), parent pixels
Scored = tuple[Box, float]


def area(b: Box) -> int:
    """Area of a box (0 when empty)."""
    return max(0, b[2] - b[0]) * max(0, b[3] - b[1])


def inter(a: Box, b: Box) -> int:
    """Area of the intersection of two boxes."""
    return area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    i = inter(a, b)
    union = area(a) + area(b) - i
    return i / union if union else 0.0


def union_box(boxes: Sequence[Box]) -> Box:
    """The smallest box holding all ``boxes``."""
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def prf1(preds: Sequence[Sequence[Box]], truths: Sequence[Sequence[Box]], thr: float = 0.5) -> dict:
    """Precision, recall and F1 at IoU >= ``thr`` with greedy one-to-one matching per figure."""
    tp = fp = fn = 0
    for pred, gt in zip(preds, truths):
        pairs = sorted(
            ((iou(p, g), i, j) for i, p in enumerate(pred) for j, g in enumerate(gt)), reverse=True
        )
        used_p: set[int] = set()
        used_g: set[int] = set()
        for v, i, j in pairs:
            if v < thr:
                break
            if i not in used_p and j not in used_g:
                used_p.add(i)
                used_g.add(j)
        tp += len(used_p)
        fp += len(pred) - len(used_p)
        fn += len(gt) - len(used_g)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "tp": tp, "fp": fp, "fn": fn}
