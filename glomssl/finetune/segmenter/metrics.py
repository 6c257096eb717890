"""Segmentation metrics and the trivial baselines every score is reported beside.

- :func:`dice`: per-image Dice of a binary prediction over annotated pixels (255 ignored); an image
  whose truth and prediction are both empty scores 1 (a correct "nothing here").
- :func:`boundary_f1`: the F1 of boundary pixels matched within ``tol`` pixels (2 by default), which
  a centred blob cannot fake the way it fakes Dice on crops centred on their glomerulus.
- :func:`centred_disk` and the all-foreground mask: the priors. On the glomerulus crops of
  ../shared/data the glomerulus fills ~75% of each crop, so these already score Dice ~0.93 / ~0.86.
- :func:`aggregate`: per-class means of per-image scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from glomssl.data.masks import IGNORE


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of ``pred`` (bool, H x W) against ``truth`` ({0, 1, 255}) on annotated pixels."""
    valid = truth != IGNORE
    p = pred.astype(bool) & valid
    t = (truth == 1) & valid
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return 1.0
    return float(2 * int((p & t).sum()) / denom)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (the image border counts as outside)."""
    m = np.pad(mask.astype(bool), 1, constant_values=False)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask.astype(bool) & ~inner


def boundary_f1(pred: np.ndarray, truth: np.ndarray, tol: float = 2.0) -> float:
    """Boundary F1 with a ``tol``-pixel tolerance, on annotated pixels (Csurka et al.'s BF score).

    Both boundaries empty: 1; one empty: 0.
    """
    from scipy import ndimage

    valid = truth != IGNORE
    bp = boundary(pred.astype(bool) & valid)
    bt = boundary((truth == 1) & valid)
    if not bp.any() and not bt.any():
        return 1.0
    if not bp.any() or not bt.any():
        return 0.0
    dist_to_t = ndimage.distance_transform_edt(~bt)
    dist_to_p = ndimage.distance_transform_edt(~bp)
    precision = float((dist_to_t[bp] <= tol).mean())
    recall = float((dist_to_p[bt] <= tol).mean())
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def centred_disk(h: int, w: int, fraction: float) -> np.ndarray:
    """A centred disk covering ``fraction`` of an h x w image (clipped by the borders)."""
    r = float(np.sqrt(max(fraction, 0.0) * h * w / np.pi))
    yy, xx = np.mgrid[:h, :w]
    return np.asarray(((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) <= r * r)


def foreground_fraction(masks: Iterable[np.ndarray]) -> float:
    """Mean foreground share of annotated pixels (the disk prior's size, fixed on training masks)."""
    shares = []
    for m in masks:
        valid = m != IGNORE
        if valid.any():
            shares.append(float((m[valid] == 1).mean()))
    return float(np.mean(shares)) if shares else 0.0


def score(
    pred: np.ndarray, truth: np.ndarray, disk_fraction: float | None = None
) -> dict[str, float]:
    """Dice and boundary F1 of ``pred``, and the same for the trivial priors: all foreground, all
    empty (what a model that learnt nothing scores where many masks of a class are empty) and, with
    ``disk_fraction``, a centred disk."""
    h, w = truth.shape
    out = {"dice": dice(pred, truth), "bf1": boundary_f1(pred, truth)}
    allfg = np.ones((h, w), bool)
    out["dice_all_foreground"] = dice(allfg, truth)
    out["bf1_all_foreground"] = boundary_f1(allfg, truth)
    empty = np.zeros((h, w), bool)
    out["dice_all_empty"] = dice(empty, truth)
    out["bf1_all_empty"] = boundary_f1(empty, truth)
    if disk_fraction is not None:
        disk = centred_disk(h, w, disk_fraction)
        out["dice_centred_disk"] = dice(disk, truth)
        out["bf1_centred_disk"] = boundary_f1(disk, truth)
    return out


def aggregate(records: Iterable[Mapping[str, Any]], classes: Iterable[str]) -> dict[str, Any]:
    """Per-class means of per-image scores: {"per_class": {c: {metric: mean, "n": count}}, "mean_*"}.

    ``records`` hold a ``class`` key plus numeric metrics; the ``mean_<metric>`` entries average the
    classes that have at least one image (the GIO2 convention: mean over classes).
    """
    recs = list(records)
    per: dict[str, dict[str, float]] = {}
    for c in classes:
        rows = [r for r in recs if r["class"] == c]
        if not rows:
            continue
        keys = [k for k in rows[0] if k != "class" and isinstance(rows[0][k], int | float)]
        per[c] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
        per[c]["n"] = len(rows)
    out: dict[str, Any] = {"per_class": per}
    if per:
        keys = [k for k in next(iter(per.values())) if k != "n"]
        for k in keys:
            out[f"mean_{k}"] = float(np.mean([v[k] for v in per.values() if k in v]))
    return out
