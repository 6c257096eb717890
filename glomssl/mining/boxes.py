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


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes (pixel or float coordinates)."""
    i = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (
        max(0, a[2] - a[0]) * max(0, a[3] - a[1]) + max(0, b[2] - b[0]) * max(0, b[3] - b[1]) - i
    )
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


def strip_windows(shape: tuple[int, ...], ratio: float) -> list[Box]:
    """Windows along a long strip, so a detector sees its pictures at a usable size: for an (H, W)
    figure whose long side is more than ``ratio`` times its short side s, windows ``ratio`` * s long
    (the whole short side across), each starting half a window after the last, the last one flush
    with the far end; any picture up to half a window long lies wholly inside one of them. Other
    figures (or ``ratio`` <= 0): one window, the whole figure."""
    h, w = int(shape[0]), int(shape[1])
    long_side, short = max(h, w), min(h, w)
    if ratio <= 0 or long_side <= ratio * short:
        return [(0, 0, w, h)]
    length = max(1, round(ratio * short))
    step = max(1, length // 2)
    starts = list(range(0, long_side - length, step)) + [long_side - length]
    if w >= h:
        return [(a, 0, a + length, h) for a in starts]
    return [(0, a, w, a + length) for a in starts]


def merge_windows(
    found: Sequence[Sequence[tuple[tuple[float, float, float, float], float]]],
    windows: Sequence[Box],
    shape: tuple[int, ...],
    iou_thr: float = 0.5,
) -> list[tuple[tuple[float, float, float, float], float]]:
    """One figure's detections from per-window detections (``found[k]`` in window k's own pixels).
    A box that reaches a window's inner border (one that is not the figure's edge, within 1% of
    the window's length or 2 px) is cut by the window and dropped: the next window holds that
    picture whole. Then greedy NMS at ``iou_thr`` over all windows, the most confident first."""
    h, w = int(shape[0]), int(shape[1])
    kept: list[tuple[tuple[float, float, float, float], float]] = []
    for (wx0, wy0, wx1, wy1), dets in zip(windows, found):
        tol = max(2.0, 0.01 * max(wx1 - wx0, wy1 - wy0))
        for (x0, y0, x1, y1), conf in dets:
            fx0, fy0, fx1, fy1 = x0 + wx0, y0 + wy0, x1 + wx0, y1 + wy0
            cut = (
                (wx0 > 0 and fx0 - wx0 < tol)
                or (wy0 > 0 and fy0 - wy0 < tol)
                or (wx1 < w and wx1 - fx1 < tol)
                or (wy1 < h and wy1 - fy1 < tol)
            )
            if not cut:
                kept.append(((fx0, fy0, fx1, fy1), conf))
    kept.sort(key=lambda d: -d[1])
    out: list[tuple[tuple[float, float, float, float], float]] = []
    for box, conf in kept:
        if all(iou(box, b) <= iou_thr for b, _ in out):
            out.append((box, conf))
    return out
