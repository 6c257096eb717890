"""Cheap image statistics that tell light-microscopy tissue from everything else a journal prints.

:func:`image_stats` measures an RGB thumbnail; :func:`classify_stats` applies the curation rules to
those numbers and returns one reason code (or None: kept). No model is involved. The rules follow
from how the pictures are made:

* a stained section seen in transmitted light is a solid, textured region of stain colours (pink,
  purple, blue, brown) on little white glass;
* drawings (charts, text, schematics) are flat areas of a few colours, thin marks on white paper, or
  smoothly shaded fills (gradient bars, 3-D renderings) without any texture;
* fluorescence is bright marks on a black background;
* electron micrographs and phase contrast are grey; a grey picture with a few coloured insets,
  arrows or dots is still grey (``ink_neutral``);
* false-colour maps (heat maps, element maps, "jet" colour scales) and coloured drawings use
  saturated colours (max - min channel >= 140) that stained tissue in transmitted light hardly
  ever shows (``ink_vivid``; ``vivid_hues``, how many hues they span, is a scorer feature).

Measured bounds on real tissue (../shared/data: 676 PAS glomerulus crops, 12 PAS whole-slide tiles,
H&E and IHC images, 40 H&E slide patches): ``ink_neutral`` <= 0.25, ``ink_vivid`` <= 0.02,
``ink_smooth`` <= 0.31 where white covers at least 20% of the panel. The default thresholds (0.55,
0.1, 0.45) sit well outside those bounds. Stains these sets lack may come closer: a very saturated
red IHC chromogen can pass ``ink_vivid`` 0.1, and a silver stain with little counterstain can pass
``ink_neutral`` 0.55; raise ``vivid_fraction`` / ``grey_fraction`` for such corpora (docs/curate.md).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

#: Long side of the thumbnail the statistics are measured on.
STATS_SIDE = 256
#: Every reason a panel can be dropped for, in the order the rules are applied.
REASONS = (
    "tiny",
    "blank",
    "chart",
    "text",
    "diagram",
    "fluorescence",
    "false_colour",
    "greyscale",
    "score",
)


class RuleOptions(Protocol):
    """The thresholds :func:`classify_stats` reads (the fields of ``CurateConfig``)."""

    min_side: int
    blank_std: float
    graphic_flat: float
    graphic_palette: float
    paper_white: float
    smooth_shading: float
    dark_fraction: float
    vivid_fraction: float
    grey_chroma: float
    grey_fraction: float


def _max_run(mask: np.ndarray) -> np.ndarray:
    """Longest run of True along the last axis, per row. mask: (R, C) bool -> (R,) int."""
    r, c = mask.shape
    if c == 0:
        return np.zeros(r, dtype=np.int64)
    padded = np.zeros((r, c + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)  # +1 at run starts, -1 one past run ends
    rows_s, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)
    best = np.zeros(r, dtype=np.int64)
    np.maximum.at(best, rows_s, ends - starts)
    return best


def _hue(a: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of RGB pixels. a: (N, 3) int -> (N,) float."""
    r, g, b = (a[:, k].astype(np.float64) for k in range(3))
    mx, mn = a.max(axis=1).astype(np.float64), a.min(axis=1).astype(np.float64)
    span = np.maximum(mx - mn, 1e-9)
    h = np.where(
        mx == r, (g - b) / span % 6.0, np.where(mx == g, (b - r) / span + 2.0, (r - g) / span + 4.0)
    )
    return (h * 60.0) % 360.0  # type: ignore[no-any-return]


def _neighbour_max_diff(a: np.ndarray, limit: int) -> np.ndarray:
    """(H, W) bool: the right and lower neighbours differ by <= ``limit`` in every channel."""
    out = np.zeros(a.shape[:2], dtype=bool)
    if a.shape[0] > 1 and a.shape[1] > 1:
        dx = np.abs(np.diff(a, axis=1)).max(axis=2)[:-1, :]  # (H-1, W-1)
        dy = np.abs(np.diff(a, axis=0)).max(axis=2)[:, :-1]  # (H-1, W-1)
        out[:-1, :-1] = (dx <= limit) & (dy <= limit)
    return out


def image_stats(rgb: np.ndarray) -> dict[str, float]:
    """Statistics of an RGB thumbnail that separate micrographs from drawings and other modalities.

    rgb: (H, W, 3) uint8. Returns plain floats (JSON-ready), all in [0, 1] unless named otherwise.
    """
    a = rgb.astype(np.int16)  # (H, W, 3)
    lum = 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]  # (H, W)
    chroma = (a.max(axis=2) - a.min(axis=2)).astype(np.float64)  # (H, W)
    white = (lum >= 225) & (chroma <= 25)
    dark = lum <= 40
    ink = ~white  # foreground: anything that is not paper-white background
    n = lum.size
    n_ink = int(ink.sum())

    # flat: right and lower neighbours within 3 grey levels (drawn fills); smooth: within 6
    # (also gradient fills and rendered shading; a micrograph's texture and noise break both)
    flat = _neighbour_max_diff(a, 3)
    smooth = _neighbour_max_diff(a, 6)
    # palette: colours quantised to 5 bits per channel
    q = (a >> 3).astype(np.int32)
    codes = (q[..., 0] << 10) | (q[..., 1] << 5) | q[..., 2]  # (H, W)
    all_counts = np.sort(np.bincount(codes.ravel(), minlength=1 << 15))[::-1]
    top1 = float(all_counts[0]) / n
    vivid_hues = 0.0
    if n_ink:
        ink_counts = np.sort(np.bincount(codes[ink], minlength=1 << 15))[::-1]
        ink_top8 = float(ink_counts[:8].sum()) / n_ink
        ink_flat = float(flat[ink].mean())
        ink_smooth = float(smooth[ink].mean())
        ink_grey = float((chroma[ink] <= 25).mean())
        ink_neutral = float((chroma[ink] < 16).mean())
        vivid = ink & (chroma >= 140)
        ink_vivid = float(vivid.sum()) / n_ink
        if vivid.any():  # how many 60-degree hue sectors hold >= 10% of the vivid pixels
            sectors = np.bincount((_hue(a[vivid]) // 60).astype(np.int64) % 6, minlength=6)
            vivid_hues = float((sectors >= 0.1 * sectors.sum()).sum())
        fg = ink & ~dark
        fg_chroma = float(chroma[fg].mean()) if fg.any() else 0.0
    else:
        ink_top8 = ink_flat = ink_smooth = ink_grey = ink_neutral = 1.0
        ink_vivid = fg_chroma = 0.0
    # thin marks: ink pixels touching paper-white within one pixel (lines and letters are all edge;
    # a tissue section on glass is a solid region whose pixels mostly have no white neighbour)
    near_white = white.copy()
    near_white[1:, :] |= white[:-1, :]
    near_white[:-1, :] |= white[1:, :]
    near_white[:, 1:] |= white[:, :-1]
    near_white[:, :-1] |= white[:, 1:]
    thin = float(near_white[ink].mean()) if n_ink else 1.0
    strokes = lum < 160
    h_run = float(_max_run(strokes).max(initial=0)) / lum.shape[1]
    v_run = float(_max_run(strokes.T).max(initial=0)) / lum.shape[0]
    means = a.reshape(-1, 3).mean(axis=0)
    bright = ~dark
    if bright.any():
        ch_means = a[bright].mean(axis=0)
        channels = int((ch_means >= 0.5 * ch_means.max()).sum()) if ch_means.max() > 0 else 0
    else:
        channels = 0
    return {
        "lum_mean": float(lum.mean()) / 255.0,
        "lum_std": float(lum.std()),  # in grey levels 0..255
        "lum_median": float(np.median(lum)) / 255.0,
        "white": float(white.mean()),
        "dark": float(dark.mean()),
        "ink": n_ink / n,
        "colour": float((chroma >= 25).mean()),
        "fg_chroma": fg_chroma,  # mean max-min channel spread of foreground, grey levels
        "top1": top1,
        "ink_top8": ink_top8,
        "ink_flat": ink_flat,
        "ink_smooth": ink_smooth,
        "ink_grey": ink_grey,
        "ink_neutral": ink_neutral,
        "ink_vivid": ink_vivid,
        "vivid_hues": vivid_hues,  # 0..6 sectors
        "ink_thin": thin,
        "h_run": h_run,
        "v_run": v_run,
        "r_mean": float(means[0]) / 255.0,
        "g_mean": float(means[1]) / 255.0,
        "b_mean": float(means[2]) / 255.0,
        "channels": float(channels),
    }


def _graphic(stats: dict[str, float], cfg: RuleOptions) -> str | None:
    """Why the statistics look drawn (None: they do not)."""
    # Anti-aliased, JPEG-compressed plots and text have no flat ink at all (every stroke pixel is an
    # edge), so one test looks for marks on paper: mostly white, and the marks are thin (touch the
    # white) or largely grey (axes, letters). Real PAS/H&E crops stay below both (measured on
    # ../shared/data: white <= 0.60, thin <= 0.27, grey ink <= 0.34; exsclaim plots: white >= 0.65).
    if stats["ink"] < 0.005:
        return "almost no ink"
    if stats["white"] >= cfg.paper_white and (
        stats["ink_thin"] >= 0.25 or stats["ink_grey"] >= 0.45 or stats["white"] >= 0.85
    ):
        return f"marks on paper (white {stats['white']:.2f}, thin {stats['ink_thin']:.2f})"
    # flat areas of a few colours, on paper-white or in colour (a smooth greyscale micrograph
    # without white background is also flat and few-toned, so it is left to `greyscale`)
    if (
        stats["ink_flat"] >= cfg.graphic_flat
        and stats["ink_top8"] >= cfg.graphic_palette
        and (stats["white"] >= 0.25 or stats["colour"] >= 0.05)
    ):
        return f"flat {stats['ink_flat']:.2f}, palette top-8 {stats['ink_top8']:.2f}"
    # shaded drawings on paper: gradient-filled bars, rendered 3-D schematics (no texture at all)
    if stats["white"] >= 0.2 and stats["ink_smooth"] >= cfg.smooth_shading:
        return f"smooth shading {stats['ink_smooth']:.2f} on white {stats['white']:.2f}"
    return None


def classify_stats(
    stats: dict[str, float], width: int, height: int, cfg: RuleOptions
) -> tuple[str | None, str]:
    """Apply the statistics rules in order; return (reason or None when kept, human detail)."""
    if min(width, height) < cfg.min_side:
        return "tiny", f"{width}x{height} px, shorter side below {cfg.min_side}"
    if stats["lum_std"] < cfg.blank_std or stats["top1"] >= 0.98:
        return "blank", f"luminance std {stats['lum_std']:.1f}, top colour {stats['top1']:.2f}"
    drawn = _graphic(stats, cfg)
    if drawn is not None:
        if stats["h_run"] >= 0.4 and stats["v_run"] >= 0.4:
            return "chart", f"{drawn}, axis lines {stats['h_run']:.2f}/{stats['v_run']:.2f}"
        if stats["ink_grey"] >= 0.9 and stats["ink"] <= 0.35:
            return "text", f"{drawn}, grey ink {stats['ink']:.2f} of the area"
        return "diagram", drawn
    if stats["dark"] >= cfg.dark_fraction:
        return "fluorescence", (
            f"dark background {stats['dark']:.2f}, {int(stats['channels'])} bright channel(s)"
        )
    if stats["ink_vivid"] >= cfg.vivid_fraction:
        return "false_colour", (
            f"saturated colour on {stats['ink_vivid']:.2f} of the ink (colour scales and drawings; "
            "stained tissue stays below 0.02)"
        )
    if stats["fg_chroma"] < cfg.grey_chroma and stats["colour"] < 0.02:
        return "greyscale", f"foreground chroma {stats['fg_chroma']:.1f} (no stain colour)"
    if stats["ink_neutral"] >= cfg.grey_fraction:
        return "greyscale", (
            f"{stats['ink_neutral']:.2f} of the ink is grey (a grey image with colour marks)"
        )
    return None, "light-microscopy statistics"
