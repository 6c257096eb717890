"""Boxes, their circle view, IoUs, non-maximum suppression, and detection metrics.

Glomeruli are round, so Glo-In-One's CircleNet (Nguyen et al., MICCAI 2020) describes each one by a
centre and a radius and suppresses duplicates by *circle* IoU (threshold 0.35 in Glo-In-One's slide
chain). A box detector gives the same view: centre = box centre, radius = half the longer side. Circle
IoU is rotation invariant and, unlike box IoU, does not punish a box that is slightly too wide on one
axis, which is what happens to the two halves of a glomerulus seen by two overlapping tiles.

All arrays are float64; boxes are (N, 4) ``x0, y0, x1, y1``; circles (N, 3) ``cx, cy, r``.
"""

from __future__ import annotations

import numpy as np


def boxes_to_circles(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) boxes -> (N, 3) circles: centre and half the longer side."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx = (b[:, 0] + b[:, 2]) / 2
    cy = (b[:, 1] + b[:, 3]) / 2
    r = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / 2
    return np.stack([cx, cy, r], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of two sets of boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)  # type: ignore[no-any-return]


def circle_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of two sets of circles (exact lens area of two intersecting discs)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 3)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 3)
    r1 = a[:, None, 2]
    r2 = b[None, :, 2]
    d = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    area1 = np.pi * r1**2
    area2 = np.pi * r2**2
    inter = np.zeros(np.broadcast(r1, r2, d).shape)
    # one disc inside the other
    inside = d <= np.abs(r1 - r2)
    inter = np.where(inside, np.pi * np.minimum(r1, r2) ** 2, inter)
    # proper lens
    lens = (d < r1 + r2) & ~inside
    with np.errstate(invalid="ignore", divide="ignore"):
        c1 = np.clip((d**2 + r1**2 - r2**2) / (2 * d * r1), -1, 1)
        c2 = np.clip((d**2 + r2**2 - r1**2) / (2 * d * r2), -1, 1)
        k = (-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2)
        lens_area = (
            r1**2 * np.arccos(c1) + r2**2 * np.arccos(c2) - 0.5 * np.sqrt(np.clip(k, 0, None))
        )
    inter = np.where(lens, lens_area, inter)
    union = area1 + area2 - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)  # type: ignore[no-any-return]


def circle_nms_groups(
    circles: np.ndarray, scores: np.ndarray, iou: float = 0.35, priority: np.ndarray | None = None
) -> list[tuple[int, list[int]]]:
    """Greedy NMS on circle IoU: (kept index, indices it suppressed) pairs, best first.

    ``priority`` (optional, higher first) orders candidates before the score does: the slide chain
    uses it to prefer a glomerulus seen whole over the same glomerulus cut by a tile edge.
    """
    c = np.asarray(circles, dtype=np.float64).reshape(-1, 3)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(c) == 0:
        return []
    keys = (-s,) if priority is None else (-s, -np.asarray(priority, dtype=np.float64))
    order = np.lexsort(keys)  # last key is the primary one
    ious = circle_iou(c, c)
    suppressed = np.zeros(len(c), dtype=bool)
    groups: list[tuple[int, list[int]]] = []
    for i in order:
        if suppressed[i]:
            continue
        hit = (ious[i] > iou) & ~suppressed
        hit[i] = False
        groups.append((int(i), [int(j) for j in np.nonzero(hit)[0]]))
        suppressed |= hit
        suppressed[i] = True
    return groups


def circle_nms(
    circles: np.ndarray, scores: np.ndarray, iou: float = 0.35, priority: np.ndarray | None = None
) -> np.ndarray:
    """Indices kept by greedy NMS on circle IoU, best first (see :func:`circle_nms_groups`)."""
    groups = circle_nms_groups(circles, scores, iou, priority)
    return np.asarray([k for k, _ in groups], dtype=np.int64)


def match_detections(
    pred: np.ndarray, scores: np.ndarray, gt: np.ndarray, iou: float = 0.5
) -> np.ndarray:
    """True-positive flags of predictions (sorted by score, best first) matched greedily to ``gt``.

    Returns an array aligned with ``pred``: 1 where the prediction is the best-scoring match of a
    not-yet-matched ground-truth box at IoU >= ``iou`` (the PASCAL VOC rule), else 0.
    """
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    tp = np.zeros(len(p), dtype=np.int64)
    if len(p) == 0 or len(g) == 0:
        return tp
    ious = box_iou(p, g)
    used = np.zeros(len(g), dtype=bool)
    for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        cand = np.where(used, -1.0, ious[i])
        j = int(np.argmax(cand))
        if cand[j] >= iou:
            used[j] = True
            tp[i] = 1
    return tp


def average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> float:
    """Area under the interpolated precision-recall curve (all points, VOC 2010+ / COCO style)."""
    if n_gt == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    t = np.asarray(tp, dtype=np.float64)[order]
    if len(t) == 0:
        return 0.0
    ctp = np.cumsum(t)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(t) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def detection_metrics(
    images: list[tuple[np.ndarray, np.ndarray, np.ndarray]], conf: float, iou: float = 0.5
) -> dict[str, float]:
    """Precision and recall at score >= ``conf`` and AP at ``iou`` over images.

    ``images`` holds (pred boxes, scores, gt boxes) per image; matching is per image.
    """
    all_tp: list[np.ndarray] = []
    all_s: list[np.ndarray] = []
    n_gt = 0
    for pred, scores, gt in images:
        all_tp.append(match_detections(pred, scores, gt, iou))
        all_s.append(np.asarray(scores, dtype=np.float64).reshape(-1))
        n_gt += len(np.asarray(gt).reshape(-1, 4))
    tp = np.concatenate(all_tp) if all_tp else np.zeros(0)
    s = np.concatenate(all_s) if all_s else np.zeros(0)
    kept = s >= conf
    n_tp = int(tp[kept].sum())
    n_pred = int(kept.sum())
    return {
        "precision": n_tp / n_pred if n_pred else float("nan"),
        "recall": n_tp / n_gt if n_gt else float("nan"),
        f"ap{int(round(iou * 100))}": average_precision(tp, s, n_gt),
        "tp": n_tp,
        "fp": n_pred - n_tp,
        "fn": n_gt - n_tp,
        "n_gt": n_gt,
    }
