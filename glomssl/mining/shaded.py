"""Shaded plot panels: a chart drawn on a pale flat background, found and filled into the ink mask.

Charts made with ggplot2's default theme (and matplotlib's "ggplot" style, seaborn's "darkgrid")
draw their plot on a pale grey panel crossed by white grid lines. The panel is 20-30 levels off the
page's white, under the ink mask's tolerance of 30, so the cuts read it as background, and its
white grid lines as gutters: the chart comes apart into bars, boxes and lines, and a small one
vanishes (docs/experiments/panel-detector.md, section 89).

:func:`shaded_panels` finds such panels: connected areas of *shade*, pixels pale but off the
background (more than :data:`SHADE_PALE` levels) and flat (each of their four neighbours within
:data:`SHADE_JUMP` levels), joined across lines at most :data:`SHADE_SPAN` - 1 px wide that are
lighter than the shade on both sides of them and end in the same colour (grid lines). A panel is
such an area whose box is at least :data:`SHADE_LEAST` px a side and

- at least :data:`SHADE_SHARE` of it shade, at least :data:`SHADE_FULL` of it shade, pale, ink
  or grid line, and every one of its four edge lines at least :data:`SHADE_EDGE` so (a rectangle,
  not a ragged patch of a micrograph's glass);
- one flat tone: its shade pixels spread at most :data:`SHADE_STD` levels in every channel;
- crossed by at least :data:`SHADE_LINES` grid lines: runs of columns or rows with bridged pixels
  along at least :data:`SHADE_GRID` of them (bare glass is flat and pale too, but has none, and
  two blank pictures side by side have one: the gutter between them);
- with data drawn on it: at least :data:`SHADE_INK` of it ink (two blank pictures side by side
  have a white line between them that passes for a grid line, but no ink).

:func:`fill_shaded` marks those boxes as ink. Inside a picture that changes nothing that matters:
the picture was one piece of ink and pale pixels already.
"""

from __future__ import annotations

import numpy as np

from glomssl.mining.boxes import Box
from glomssl.mining.classic import neighbour_jump, off_background

#: levels: shade is more than this off the background (the ink mask's pale level, ``pale`` 8)
SHADE_PALE = 8
#: levels: ... and each of its four neighbours is within this of it (a flat fill, not tissue)
SHADE_JUMP = 4
#: px: a grid line is bridged when it is under this wide
SHADE_SPAN = 5
#: px: a panel's box is at least this large a side
SHADE_LEAST = 12
#: share of the box that is shade
SHADE_SHARE = 0.3
#: share of the box that is shade, pale, ink or bridged grid line; also of each edge line
SHADE_FULL = 0.75
SHADE_EDGE = 0.7
#: a grid line crosses at least this share of the panel's height (or width), between its data
SHADE_GRID = 0.4
#: grid lines (upright and level together) a panel has at least
SHADE_LINES = 2
#: share of the panel that is ink (its data)
SHADE_INK = 0.01
#: levels: the largest spread (standard deviation) of the shade's colour in any channel
SHADE_STD = 3.0


def _flat(arr: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose four neighbours all lie within :data:`SHADE_JUMP` levels."""
    h, w = arr.shape[:2]
    out = np.ones((h, w), dtype=bool)
    across = neighbour_jump(arr, 1) <= SHADE_JUMP  # (H, W - 1)
    down = neighbour_jump(arr, 0) <= SHADE_JUMP  # (H - 1, W)
    out[:, 1:] &= across
    out[:, :-1] &= across
    out[1:] &= down
    out[:-1] &= down
    return out


def _bridge_rows(arr: np.ndarray, shade: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels of runs along each row, 1 to :data:`SHADE_SPAN` - 1 px long, that
    lie between two shade pixels of the same colour (within :data:`SHADE_JUMP`) and are no shade
    and no darker than the left one in any channel: a grid line crossing a shaded panel."""
    h, w = shade.shape
    out = np.zeros((h, w), dtype=bool)
    ys, xs = np.nonzero(shade[:, :-1] & ~shade[:, 1:])  # shade, then a run of no shade
    if ys.size == 0:
        return out
    a = arr.astype(np.int16)
    base = a[ys, xs]  # (n, C) the left shade colour
    alive = np.ones(ys.size, dtype=bool)
    for k in range(2, SHADE_SPAN + 1):
        mid = np.minimum(xs + k - 1, w - 1)  # the run's newest pixel
        alive &= (xs + k - 1 < w) & ~shade[ys, mid] & (a[ys, mid] >= base - SHADE_JUMP).all(axis=1)
        end = np.minimum(xs + k, w - 1)
        reach = alive & (xs + k < w) & shade[ys, end]
        same = reach & (np.abs(a[ys, end] - base).max(axis=1) <= SHADE_JUMP)
        for j in range(1, k):
            out[ys[same], xs[same] + j] = True
        alive &= ~reach  # a run ends at the next shade pixel, matched or not
        if not alive.any():
            break
    return out


def _lines(mask: np.ndarray) -> int:
    """The number of runs of True in 1-D ``mask`` (neighbouring lines are one grid line)."""
    return int(mask[0]) + int(np.count_nonzero(mask[1:] & ~mask[:-1])) if mask.size else 0


def shaded_panels(arr: np.ndarray, ink: np.ndarray, bg: np.ndarray) -> list[Box]:
    """The shaded plot panels of figure ``arr`` (H, W, C) uint8 with ink mask ``ink`` on
    background ``bg`` (C,), as boxes: see the module's docstring."""
    from scipy import ndimage

    pale = off_background(arr, bg, SHADE_PALE) & ~ink
    if int(pale.sum()) < SHADE_SHARE * SHADE_LEAST * SHADE_LEAST:
        return []
    shade = pale & _flat(arr)
    if int(shade.sum()) < SHADE_SHARE * SHADE_LEAST * SHADE_LEAST:
        return []
    across = _bridge_rows(arr, shade)  # pixels of upright grid lines
    down = _bridge_rows(arr.transpose(1, 0, 2), shade.T).T  # ... of level ones
    joined = shade | across | down
    labels, _ = ndimage.label(joined)
    filled = pale | ink | joined
    out: list[Box] = []
    for sl in ndimage.find_objects(labels):
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        if x1 - x0 < SHADE_LEAST or y1 - y0 < SHADE_LEAST:
            continue
        sub = shade[y0:y1, x0:x1]
        if sub.mean() < SHADE_SHARE:
            continue
        full = filled[y0:y1, x0:x1]
        if full.mean() < SHADE_FULL:
            continue
        edges = (full[0].mean(), full[-1].mean(), full[:, 0].mean(), full[:, -1].mean())
        if min(edges) < SHADE_EDGE:
            continue
        upright = _lines(across[y0:y1, x0:x1].sum(axis=0) >= SHADE_GRID * (y1 - y0))
        level = _lines(down[y0:y1, x0:x1].sum(axis=1) >= SHADE_GRID * (x1 - x0))
        if upright + level < SHADE_LINES:  # bare glass, or two blank pictures and their gutter
            continue
        if ink[y0:y1, x0:x1].mean() < SHADE_INK:  # no data drawn on it: two blank pictures
            continue
        tone = arr[y0:y1, x0:x1][sub].astype(np.float32)  # (n, C)
        if float(tone.std(axis=0).max()) > SHADE_STD:
            continue
        out.append((x0, y0, x1, y1))
    return out


def fill_shaded(arr: np.ndarray, ink: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """``ink`` with every :func:`shaded_panels` box set (a new array when any is found)."""
    boxes = shaded_panels(arr, ink, bg)
    if not boxes:
        return ink
    out = ink.copy()
    for x0, y0, x1, y1 in boxes:
        out[y0:y1, x0:x1] = True
    return out
