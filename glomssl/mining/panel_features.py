"""The feature vector of the learned curation scorer (shared by ``curate`` and ``curate train``).

Computed on a 128 x 128 resize of a panel (``FEATURE_NAMES`` in order): the curation statistics of
:func:`glomssl.mining.panel_stats.image_stats`, HSV histograms (hue weighted by saturation,
saturation, value), a uniform local-binary-pattern texture histogram (Ojala et al., TPAMI 2002) at
two scales, and a gradient-magnitude histogram. Hand-made on purpose: the scorer must train in seconds
on a CPU and need no pretrained network. Numpy and Pillow only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from glomssl.mining.panel_stats import image_stats

SIDE = 128
_STAT_KEYS = (
    "lum_mean lum_std lum_median white dark ink colour fg_chroma top1 ink_top8 ink_flat ink_smooth "
    "ink_grey ink_neutral ink_vivid vivid_hues h_run v_run r_mean g_mean b_mean channels"
).split()
_SCALE = {"lum_std": 255.0, "fg_chroma": 255.0, "vivid_hues": 6.0}
_BINS = {"hue": 12, "sat": 8, "val": 8, "lbp1": 10, "lbp2": 10, "grad": 8}
FEATURE_NAMES: tuple[str, ...] = tuple(
    [f"stat_{k}" for k in _STAT_KEYS] + [f"{k}_{i}" for k, n in _BINS.items() for i in range(n)]
)


def _lbp_uniform(grey: np.ndarray, radius: int) -> np.ndarray:
    """Histogram (10 bins) of rotation-invariant uniform LBP codes with 8 neighbours.

    grey: (H, W) float. Code = number of neighbours >= centre when the circular bit pattern has at most
    two 0/1 transitions (0..8), else 9 ("non-uniform").
    """
    h, w = grey.shape
    r = radius
    if h <= 2 * r or w <= 2 * r:
        return np.zeros(10)
    c = grey[r : h - r, r : w - r]  # (H-2r, W-2r)
    offs = [(-r, -r), (-r, 0), (-r, r), (0, r), (r, r), (r, 0), (r, -r), (0, -r)]  # circular order
    bits = np.stack([grey[r + dy : h - r + dy, r + dx : w - r + dx] >= c for dy, dx in offs])
    ones = bits.sum(axis=0)  # (H-2r, W-2r)
    transitions = (bits != np.roll(bits, 1, axis=0)).sum(axis=0)
    code = np.where(transitions <= 2, ones, 9)
    hist = np.bincount(code.ravel(), minlength=10).astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def image_features(img: Any) -> np.ndarray:
    """Feature vector (len(FEATURE_NAMES),) float64 of a PIL RGB image."""
    from PIL import Image

    small = img.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BOX)
    rgb = np.asarray(small)  # (128, 128, 3) uint8
    stats = image_stats(rgb)
    feats: list[float] = [stats[k] / _SCALE.get(k, 1.0) for k in _STAT_KEYS]
    hsv = np.asarray(small.convert("HSV")).astype(np.float64) / 255.0  # (128, 128, 3)
    hue, sat, val = hsv[..., 0].ravel(), hsv[..., 1].ravel(), hsv[..., 2].ravel()
    hh = np.histogram(hue, bins=_BINS["hue"], range=(0, 1), weights=sat)[0]
    feats += list(hh / max(sat.sum(), 1e-9))
    feats += list(np.histogram(sat, bins=_BINS["sat"], range=(0, 1))[0] / sat.size)
    feats += list(np.histogram(val, bins=_BINS["val"], range=(0, 1))[0] / val.size)
    grey = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # (128, 128)
    feats += list(_lbp_uniform(grey, 1))
    feats += list(_lbp_uniform(grey, 3))
    gy, gx = np.gradient(grey)
    mag = np.hypot(gx, gy).ravel()
    edges = np.array([0, 2, 4, 8, 16, 32, 64, 128, np.inf])
    feats += list(np.histogram(mag, bins=edges)[0] / mag.size)
    out = np.asarray(feats, dtype=np.float64)
    assert out.shape == (len(FEATURE_NAMES),)
    return out
