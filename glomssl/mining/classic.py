"""The classic panel splitter: recursive XY cuts on a figure's gutters, and box clean-up.

It needs no model. It finds the figure's background (gutter) colour, marks "ink" pixels that differ
from it, and cuts the figure recursively along rows or columns that hold no ink (the recursive XY-cut
of Nagy & Seth, 1984, on projection profiles). A region with no such line left is cut once more along
a straight seam where two pictures touch, if it has one. Regions too small to be panels (letters,
stray text) are dropped.

The background colour is the colour of full-length uniform rows and columns (the gutters themselves)
when there are any, and otherwise the dominant colour of the border, so pictures that touch the
figure's edge do not turn white gutters into "ink" (the first version took the border's median).

``--seams`` (:meth:`ClassicParams.touching`) is for montages of pictures that touch: a one-pixel
gutter counts (otherwise about 1/256 of the long side), and a region with no gutter left is cut along
a straight line where the colour jumps along most of its length, much more than at the lines beside
it, with textured content (not white, not background) on both sides: the seam of two pasted photos,
not an edge inside one, nor a chart's axis. It is off by default because on real journal figures with
charts it also cuts charts at their axes (docs/experiments/panel-detector.md, section 7).

The narrowest gutter is also at most 1/32 of the short side (``ClassicParams.strip``, version 3):
in one long row or column of pictures at full resolution the pictures are as large as the short
side, so 1/256 of the length would ask for gutters wider than the pictures' own spacing. Figures
whose long side is under 640 px, or at most 8 times the short side, are cut exactly as before.

It is exact when panels are separated by gutters, and it still keeps together a chart whose parts are
separated by whitespace only when the parts are too small to be panels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from glomssl.mining.boxes import Box, Scored, area, inter


@dataclasses.dataclass(frozen=True)
class ClassicParams:
    """Settings of the classic splitter.

    The defaults are what ``glomssl separate`` runs: version 1's cuts with the gutter-colour
    background. :meth:`touching` adds one-pixel gutters and seams (``--seams``), :meth:`v1` is the
    first version. Values were chosen on the tuning set T of docs/experiments/panel-detector.md
    (section 7), never on the held-out set or on real figures.
    """

    background: str = (
        "gutters"  # "gutters": uniform full lines, then the border's mode; "border": median
    )
    min_gap: int = 0  # narrowest gutter (px); 0: about 1/256 of the long side, at least 2
    seam: float = 0.0  # a seam's jump must exceed this many times the jumps beside it (0: no seams)
    seam_jump: float = 30.0  # ... and be at least this large (median over the line, 0-255 scale)
    seam_white: float = 0.1  # ... with at most this share of near-white pixels on either side
    seam_ink: float = 0.9  # ... and at least this share of ink on either side
    thin: float = 0.0  # a gutter narrower than min_gap counts when the lines on both its sides are
    # at least this share ink: two pictures' edges, not a chart's axis beside its tick labels (0: never)
    strip: float = 32.0  # the automatic narrowest gutter is at most 1/strip of the SHORT side too:
    # a long row or column of pictures at full resolution (0: the long side alone; section 27)

    @classmethod
    def v1(cls) -> ClassicParams:
        """The first version: border-median background, gutters of ~1/256 of the long side, no seams."""
        return cls(background="border", strip=0.0)

    @classmethod
    def touching(cls) -> ClassicParams:
        """For montages of touching pictures: one-pixel gutters count, and seams are cut."""
        return cls(min_gap=1, seam=2.0)


DEFAULT_CLASSIC = ClassicParams()


def _colour_mode(colours: np.ndarray) -> tuple[np.ndarray, float]:
    """Median colour of the most common 32-level colour bin of (N, 3) ``colours``, and its share."""
    q = colours.astype(np.int32) // 32
    key = q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2]
    keys, counts = np.unique(key, return_counts=True)
    k = int(np.argmax(counts))
    return np.median(colours[key == keys[k]], axis=0), float(counts[k] / len(key))


def background_colour(
    arr: np.ndarray, params: ClassicParams = DEFAULT_CLASSIC, tol: int = 12
) -> np.ndarray:
    """The figure's background (gutter) colour, (C,) float.

    ``border``: median of the border pixels (version 1). ``gutters``: the most common colour of the
    rows and columns that are uniform (every channel within ``tol``) from edge to edge; without any,
    the dominant colour of the border when it holds at least 30% of it; else the border median.
    """
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])  # (N, C)
    if params.background == "border":
        return np.median(border, axis=0)
    lines = []
    for axis in (1, 0):  # rows (uniform along x), then columns
        # a cheap pass on every 4th pixel finds the candidates; the full line then decides
        step = arr[:, ::4] if axis == 1 else arr[::4]
        rough = step.max(axis=axis).astype(np.int16) - step.min(axis=axis)  # (L, C)
        cand = np.flatnonzero((rough <= tol).all(axis=1))
        if cand.size == 0:
            continue
        full = arr[cand] if axis == 1 else arr[:, cand].transpose(1, 0, 2)  # (n, len, C)
        span = full.max(axis=1).astype(np.int16) - full.min(axis=1)  # (n, C)
        uniform = (span <= tol).all(axis=1)
        if uniform.any():
            lines.append(full[uniform].mean(axis=1, dtype=np.float32))  # (m, C)
    if lines:
        return _colour_mode(np.concatenate(lines))[0]
    colour, share = _colour_mode(border)
    return colour if share >= 0.3 else np.median(border, axis=0)


def ink_mask(
    arr: np.ndarray,
    tol: int = 30,
    params: ClassicParams = DEFAULT_CLASSIC,
    bg: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean (H, W) mask of pixels that differ from the background (:func:`background_colour`, or
    ``bg`` when the caller has it) by more than ``tol`` in any channel. Compares each uint8 channel
    with the band bg +- tol (no int16 copy of the image: ten times faster than the absolute
    difference)."""
    if bg is None:
        bg = background_colour(arr, params)  # (C,)
    out = np.zeros(arr.shape[:2], dtype=bool)  # (H, W)
    for c in range(arr.shape[2]):
        ch = arr[:, :, c]
        out |= (ch < bg[c] - tol) | (ch > bg[c] + tol)
    return out


def trim_box(ink: np.ndarray, box: Box) -> Box | None:
    """Shrink ``box`` to the ink inside it; None when it holds no ink."""
    x0, y0, x1, y1 = box
    sub = ink[y0:y1, x0:x1]
    rows = np.flatnonzero(sub.any(axis=1))
    cols = np.flatnonzero(sub.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return None
    return (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)


def _gaps(
    profile: np.ndarray, min_gap: int, flanks: np.ndarray | None = None, thin: float = 0.0
) -> list[tuple[int, int]]:
    """Runs of empty entries (start, end) at least ``min_gap`` long, excluding the two ends.

    With ``thin`` > 0, a shorter run also counts when ``flanks`` (the share of ink on each line, (L,))
    is at least ``thin`` on the lines just before and just after it."""
    empty = np.concatenate([[False], profile == 0, [False]]).astype(np.int8)  # (L + 2,)
    edges = np.flatnonzero(np.diff(empty))  # run starts and ends, alternating
    starts, ends = edges[::2], edges[1::2]
    inside = (starts > 0) & (ends < len(profile))
    keep = inside & (ends - starts >= min_gap)
    if thin > 0 and flanks is not None:
        before = flanks[np.clip(starts - 1, 0, len(profile) - 1)]
        after = flanks[np.clip(ends, 0, len(profile) - 1)]
        keep |= inside & (before >= thin) & (after >= thin)
    return [(int(a), int(b)) for a, b in zip(starts[keep], ends[keep])]


def channel_min(arr: np.ndarray) -> np.ndarray:
    """(H, W) smallest channel value of (H, W, C) ``arr``, as ``arr.min(axis=2)`` (one channel at a
    time: a reduction over the short last axis is several times slower)."""
    out = arr[:, :, 0].copy()
    for c in range(1, arr.shape[2]):
        np.minimum(out, arr[:, :, c], out=out)
    return out


def neighbour_jump(arr: np.ndarray, axis: int) -> np.ndarray:
    """Largest per-channel absolute difference between neighbouring pixels of (H, W, C) uint8
    ``arr``: axis 1 between each column and the next, (H, W - 1); axis 0 between rows, (H - 1, W).
    Exact in uint8 (max - min), channel by channel."""
    a, b = (arr[:, :-1], arr[:, 1:]) if axis == 1 else (arr[:-1], arr[1:])
    out: np.ndarray | None = None
    for c in range(arr.shape[2]):
        x, y = a[:, :, c], b[:, :, c]
        d = np.maximum(x, y) - np.minimum(x, y)
        out = d if out is None else np.maximum(out, d, out=out)
    assert out is not None
    return out


def median_and_quarter(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (L, n) ``values`` (n >= 1): the median and the first quartile, equal to
    ``np.median(values, axis=1)`` and ``np.quantile(values, 0.25, axis=1)`` for integer values
    (one partition for both)."""
    n = values.shape[1]
    pos = 0.25 * (n - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    kth = sorted({lo, hi, (n - 1) // 2, n // 2})
    part = np.partition(values, kth, axis=1)
    median = (part[:, (n - 1) // 2].astype(np.float64) + part[:, n // 2]) / 2
    a, b = part[:, lo].astype(np.float64), part[:, hi].astype(np.float64)
    return median, a + (b - a) * frac


class LineSums:
    """Per-figure sums for :func:`seam_cut`: ink and near-white counts along every row and column of
    any box, from cumulative sums (one pass over the figure, not one per region), and the colour
    jumps between neighbouring pixels (made on first use)."""

    def __init__(self, arr: np.ndarray, ink: np.ndarray) -> None:
        self.arr = arr
        white = channel_min(arr) > 225  # (H, W) near-white pixels
        self.down = {  # cumulative down the rows: column sums of any row range, (H + 1, W)
            "ink": np.pad(np.cumsum(ink, axis=0, dtype=np.int32), ((1, 0), (0, 0))),
            "white": np.pad(np.cumsum(white, axis=0, dtype=np.int32), ((1, 0), (0, 0))),
        }
        self.across = {  # cumulative along the columns: row sums of any column range, (H, W + 1)
            "ink": np.pad(np.cumsum(ink, axis=1, dtype=np.int32), ((0, 0), (1, 0))),
            "white": np.pad(np.cumsum(white, axis=1, dtype=np.int32), ((0, 0), (1, 0))),
        }
        self._jumps: dict[int, np.ndarray] = {}

    def shares(self, box: Box, axis: int, what: str) -> np.ndarray:
        """Share of ``what`` pixels on each line across ``axis`` of ``box`` (axis 1: per column)."""
        x0, y0, x1, y1 = box
        if axis == 1:
            c = self.down[what]
            return (c[y1, x0:x1] - c[y0, x0:x1]) / (y1 - y0)
        c = self.across[what]
        return (c[y0:y1, x1] - c[y0:y1, x0]) / (x1 - x0)

    def jumps(self, box: Box, axis: int) -> np.ndarray:
        """(L - 1, n) colour jumps across each line between neighbours inside ``box``: axis 1
        between each column and the next (one row per column pair, n = the box's height), axis 0
        between rows (n = its width); uint8, the largest over the channels."""
        if axis not in self._jumps:  # whole figure, laid out so a line's jumps are one row
            jump = neighbour_jump(self.arr, axis)
            self._jumps[axis] = np.ascontiguousarray(jump.T) if axis == 1 else jump
        x0, y0, x1, y1 = box
        if axis == 1:
            return self._jumps[1][x0 : x1 - 1, y0:y1]
        return self._jumps[0][y0 : y1 - 1, x0:x1]


def seam_cut(
    lines: LineSums, box: Box, limit: int, params: ClassicParams = DEFAULT_CLASSIC
) -> tuple[int, int] | None:
    """The straight seam where two touching pictures meet inside ``box``, as (axis, offset) (axis 1:
    a vertical seam before column ``offset`` of the box, axis 0: a horizontal one before that row),
    or None. Both parts must be at least ``limit`` px; see :class:`ClassicParams` for the tests."""
    if params.seam <= 0:
        return None
    x0, y0, x1, y1 = box
    best: tuple[float, int, int] | None = None
    for axis in (1, 0):
        length, across = (x1 - x0, y1 - y0) if axis == 1 else (y1 - y0, x1 - x0)
        if length < 2 * limit + 2 or across < 8:
            continue
        inked = lines.shares(box, axis, "ink")  # (L,)
        white = lines.shares(box, axis, "white")  # (L,)
        textured = (np.minimum(inked[:-1], inked[1:]) >= params.seam_ink) & (
            np.maximum(white[:-1], white[1:]) <= params.seam_white
        )  # (L - 1,) candidate lines: textured content on both sides
        textured[: limit - 1] = False  # both parts at least ``limit``
        textured[length - limit :] = False
        if not textured.any():
            continue
        jump = lines.jumps(box, axis)  # (L - 1, n) between neighbours, per line
        # the typical jump along each line, and the jump along most of it, (L - 1,) each
        strength, steady = median_and_quarter(jump)
        pad = np.pad(strength, 8, mode="edge")  # the 16 lines beside each one (8 per side)
        windows = sliding_window_view(pad, 17)  # (L - 1, 17)
        near = np.partition(np.delete(windows, 8, axis=1), [7, 8], axis=1)  # (L - 1, 16)
        beside = (near[:, 7] + near[:, 8]) / 2  # (L - 1,) their median
        ok = (
            textured
            & (strength >= params.seam_jump)
            & (steady >= params.seam_jump / 2)
            & (strength >= params.seam * (beside + 1))
        )
        if not ok.any():
            continue
        score = np.where(ok, strength / (beside + 1), 0.0)
        j = int(np.argmax(score))
        if best is None or score[j] > best[0]:
            best = (float(score[j]), axis, j + 1)
    return None if best is None else (best[1], best[2])


#: A JPEG's gutter line: at most this share of its pixels are faint ink ...
RINGING_SHARE = 0.03
#: ... and at most this share are pale (more than :data:`RINGING_PALE` levels off the background)
RINGING_PALE_SHARE = 0.5
RINGING_PALE = 8


@dataclasses.dataclass(frozen=True)
class Gutters:
    """How the cuts read a line as blank in a JPEG figure (guided's ``ringing``, section 74 of
    docs/experiments/panel-detector.md).

    JPEG compression rings along every edge: in a gutter two or three pixels wide between two
    pictures, some pixels end up 30-40 levels off the white (more in a colour channel than in
    grey, since colour is stored at half resolution), so the ink mask marks them and the gutter is
    no longer a blank line. Here a line also counts as blank when none of its pixels is ``strong``
    ink (more than the ringing level off the background), at most :data:`RINGING_SHARE` of them
    are ink, and at most :data:`RINGING_PALE_SHARE` are ``pale`` (bare glass or a pale wash inside
    a picture is pale along most of the line; a gutter's ringing is sparse). Both masks are
    (H, W) bool over the whole figure. ``ridge`` above 0 (guided's hairline cuts only) also reads
    as blank a gutter 1-3 px wide that the JPEG blurred pale along its length: see
    :func:`ridge_lines`."""

    strong: np.ndarray
    pale: np.ndarray
    ridge: float = 0.0
    reach: int = 0

    def blank(self, box: Box, ink_counts: np.ndarray, axis: int) -> np.ndarray:
        """(L,) bool: lines of ``box`` (axis 1: rows, counts per row; axis 0: columns) that hold
        ink (``ink_counts`` > 0) yet read as blank gutter lines."""
        x0, y0, x1, y1 = box
        length = x1 - x0 if axis == 1 else y1 - y0
        strong = self.strong[y0:y1, x0:x1].sum(axis=axis)
        pale = self.pale[y0:y1, x0:x1].sum(axis=axis)
        out = (
            (ink_counts > 0)
            & (strong == 0)
            & (ink_counts <= RINGING_SHARE * length)
            & (pale <= RINGING_PALE_SHARE * length)
        )
        if self.ridge > 0:
            faint = (ink_counts > 0) & (strong == 0)
            out |= ridge_lines(faint, strong, length, self.ridge, self.reach)
        return out


#: a ridge (see :func:`ridge_lines`) is at most this many lines wide
RIDGE_WIDTH = 3


def ridge_lines(
    faint: np.ndarray, strong: np.ndarray, length: int, share: float, reach: int = 0
) -> np.ndarray:
    """(L,) bool: the ``faint`` lines (ink, but none of it strong) that lie in a run of at most
    :data:`RIDGE_WIDTH` faint lines with a line on each side holding at least ``share`` of its
    ``length`` in strong ink: a gutter one to three pixels wide between two pictures, pale along
    its length where JPEG blurred the pictures' edges into it. ``reach`` > 0 lets that line on
    each side lie up to ``reach`` lines further out (a figure shrunk from a larger size blends the
    picture edge next to the gutter too; guided's ``ridge_reach``, section 77)."""
    out = np.zeros_like(faint)
    n = faint.size
    i = 0
    while i < n:
        if not faint[i]:
            i += 1
            continue
        j = i
        while j < n and faint[j]:
            j += 1
        if j - i <= RIDGE_WIDTH and i > 0 and j < n:
            left = strong[max(0, i - 1 - reach) : i].max()
            right = strong[j : j + 1 + reach].max()
            if left >= share * length and right >= share * length:
                out[i:j] = True
        i = j
    return out


#: guided's ``valley`` (section 80 of docs/experiments/panel-detector.md): the lines beside a valley
#: average at least this many grey levels off the background (pictures, not a chart's white plot) ...
VALLEY_FLANK = 40.0
#: ... and may lie this many lines further out than the next line (the shrink blends that one too)
VALLEY_REACH = 1
#: ... and lines shorter than this (px) are never valleys: across a narrow lane, a mean is noise
VALLEY_LEAST = 20


def valley_lines(level: np.ndarray, ratio: float) -> np.ndarray:
    """(L,) bool: the lines that lie in a valley of ``level`` (L,), each line's mean difference
    from the background. A valley is a run of at most :data:`RIDGE_WIDTH` lines, each at most
    ``ratio`` times as far off the background as the lines beside it, which average at least
    :data:`VALLEY_FLANK` levels (on each side the farther off of the next :data:`VALLEY_REACH` + 1
    lines; the paler side counts). A gutter of a figure shrunk from print size: the shrink blended
    it with both pictures' edges, so it holds ink along its length, yet it is far paler than they
    are."""
    n = level.size
    out = np.zeros(n, dtype=bool)
    if n < 3 or level.max() < VALLEY_FLANK or level.min() > ratio * level.max():
        return out  # no line is pale enough beside any line dark enough (the common case)
    for width in range(1, RIDGE_WIDTH + 1):
        if n < width + 2:
            break
        starts = np.arange(1, n - width)  # runs [i, i + width) with a line on each side
        left = np.full(starts.size, -np.inf)
        right = np.full(starts.size, -np.inf)
        for r in range(VALLEY_REACH + 1):
            before = starts - 1 - r
            after = starts + width + r
            left = np.maximum(left, np.where(before >= 0, level[np.maximum(before, 0)], -np.inf))
            right = np.maximum(right, np.where(after < n, level[np.minimum(after, n - 1)], -np.inf))
        run = np.max(np.stack([level[starts + k] for k in range(width)]), axis=0)
        beside = np.minimum(left, right)
        ok = (beside >= VALLEY_FLANK) & (run <= ratio * beside)
        for k in range(width):
            out[starts[ok] + k] = True
    return out


def off_level(arr: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """(H, W) uint8: each pixel's largest difference from the background colour ``bg`` (C,) over
    its channels (``bg`` rounded to whole levels)."""
    out = np.zeros(arr.shape[:2], dtype=np.uint8)
    for c in range(arr.shape[2]):
        level = np.uint8(min(255, max(0, round(float(bg[c])))))
        chan = arr[:, :, c]
        np.maximum(out, np.maximum(chan, level) - np.minimum(chan, level), out=out)
    return out


@dataclasses.dataclass(frozen=True)
class Valleys:
    """How guided's hairline cuts read blank lines with ``valley`` (section 80): as ``base`` reads
    them (a JPEG figure's :class:`Gutters`; None: plain ink), and a line in a valley (see
    :func:`valley_lines`) is blank too, when it is at least :data:`VALLEY_LEAST` px long.
    ``level``: :func:`off_level` of the figure; ``across_rows`` (H, W + 1) and ``down_columns``
    (H + 1, W) its running sums along rows and down columns, so a line's mean inside a box costs
    one subtraction (see :meth:`of`)."""

    level: np.ndarray
    across_rows: np.ndarray
    down_columns: np.ndarray
    ratio: float
    base: Gutters | None = None

    @classmethod
    def of(
        cls, arr: np.ndarray, bg: np.ndarray, ratio: float, base: Gutters | None = None
    ) -> Valleys:
        """The reader for figure ``arr`` (H, W, C) on background ``bg`` (C,)."""
        level = off_level(arr, bg)
        h, w = level.shape
        across = np.zeros((h, w + 1), dtype=np.int32)
        np.cumsum(level, axis=1, out=across[:, 1:])
        down = np.zeros((h + 1, w), dtype=np.int32)
        np.cumsum(level, axis=0, out=down[1:])
        return cls(level, across, down, ratio, base)

    def blank(self, box: Box, ink_counts: np.ndarray, axis: int) -> np.ndarray:
        """(L,) bool, as :meth:`Gutters.blank`."""
        if self.base is not None:
            out = self.base.blank(box, ink_counts, axis)
        else:
            out = np.zeros(ink_counts.shape, dtype=bool)
        x0, y0, x1, y1 = box
        length = x1 - x0 if axis == 1 else y1 - y0
        if length < VALLEY_LEAST:
            return out
        if axis == 1:  # rows of the box: sums across x0..x1
            sums = self.across_rows[y0:y1, x1] - self.across_rows[y0:y1, x0]
        else:  # columns: sums down y0..y1
            sums = self.down_columns[y1, x0:x1] - self.down_columns[y0, x0:x1]
        return out | valley_lines(sums / length, self.ratio)


def xy_cut(
    ink: np.ndarray,
    box: Box,
    min_gap: int,
    depth: int = 0,
    lines: LineSums | None = None,
    limit: int = 0,
    params: ClassicParams = DEFAULT_CLASSIC,
    gutters: Gutters | Valleys | None = None,
) -> list[Box]:
    """Recursive XY cut of ``box``: split at blank rows or columns until none is left, then (when
    the figure's ``lines`` are given) at the seam of two touching pictures, parts >= ``limit`` px.
    With ``gutters`` (a JPEG figure), a line with only sparse faint ink counts as blank too."""
    trimmed = trim_box(ink, box)
    if trimmed is None:
        return []
    x0, y0, x1, y1 = trimmed
    sub = ink[y0:y1, x0:x1]
    rows, cols = sub.sum(axis=1), sub.sum(axis=0)  # ink per row (H,) and per column (W,)
    if gutters is not None:  # a JPEG's ringing along a gutter leaves the line blank
        rows = np.where(gutters.blank(trimmed, rows, 1), 0, rows)
        cols = np.where(gutters.blank(trimmed, cols, 0), 0, cols)
    row_gaps = _gaps(rows, min_gap, rows / (x1 - x0), params.thin)
    col_gaps = _gaps(cols, min_gap, cols / (y1 - y0), params.thin)
    if depth > 12:
        return [trimmed]

    def deeper(part: Box) -> list[Box]:
        return xy_cut(ink, part, min_gap, depth + 1, lines, limit, params, gutters)

    if not row_gaps and not col_gaps:
        seam = seam_cut(lines, trimmed, max(limit, 2), params) if lines is not None else None
        if seam is None:
            return [trimmed]
        axis, at = seam
        parts = (
            [(x0, y0, x0 + at, y1), (x0 + at, y0, x1, y1)]
            if axis == 1
            else [(x0, y0, x1, y0 + at), (x0, y0 + at, x1, y1)]
        )
        return [leaf for part in parts for leaf in deeper(part)]
    widest_row = max((b - a for a, b in row_gaps), default=0)
    widest_col = max((b - a for a, b in col_gaps), default=0)
    out: list[Box] = []
    if widest_row >= widest_col:
        edges = [0] + [c for g in row_gaps for c in g] + [y1 - y0]
        for a, b in zip(edges[::2], edges[1::2]):
            out += deeper((x0, y0 + a, x1, y0 + b))
    else:
        edges = [0] + [c for g in col_gaps for c in g] + [x1 - x0]
        for a, b in zip(edges[::2], edges[1::2]):
            out += deeper((x0 + a, y0, x0 + b, y1))
    return out


def min_gap_for(shape: tuple[int, ...], params: ClassicParams = DEFAULT_CLASSIC) -> int:
    """Narrowest blank run (px) that counts as a gutter: ``params.min_gap``, or about 1/256 of the
    long side, at least 2; with ``params.strip`` also at most 1/strip of the short side (a long
    strip's pictures are as large as its short side, not a 256th of its length)."""
    if params.min_gap > 0:
        return params.min_gap
    gap = max(shape[:2]) / 256
    if params.strip > 0:
        gap = min(gap, min(shape[:2]) / params.strip)
    return max(2, round(gap))


def size_limit(shape: tuple[int, ...], min_side: int, share: float = 0.06) -> int:
    """Smallest side (px) a classic region needs to count as a panel: ``min_side``, and 6% (``share``)
    of the figure's short side."""
    return max(min_side, round(share * min(shape[:2])))


def leaves(
    arr: np.ndarray,
    ink: np.ndarray,
    min_side: int,
    params: ClassicParams = DEFAULT_CLASSIC,
    share: float = 0.06,
    gutters: Gutters | None = None,
) -> list[Box]:
    """Every region the cuts leave in the (H, W, 3) figure ``arr`` with ink mask ``ink``; no part is
    cut smaller than :func:`size_limit` (``min_side``, ``share``). ``gutters``: see :class:`Gutters`."""
    h, w = ink.shape
    limit = size_limit(ink.shape, min_side, share)
    lines = LineSums(arr, ink) if params.seam > 0 else None
    gap = min_gap_for(ink.shape, params)
    return xy_cut(ink, (0, 0, w, h), gap, 0, lines, limit, params, gutters)


def classic_boxes(
    img: Image.Image,
    min_side: int = 24,
    tol: int = 30,
    params: ClassicParams = DEFAULT_CLASSIC,
    ink: np.ndarray | None = None,
) -> list[Scored]:
    """Panels by recursive cuts on the figure's gutters and seams; score = share of ink in the box.
    ``ink``: the figure's :func:`ink_mask` when the caller has it already."""
    arr = np.asarray(img.convert("RGB"))  # (H, W, 3)
    if ink is None:
        ink = ink_mask(arr, tol, params)
    limit = size_limit(ink.shape, min_side)
    out = []
    for b in leaves(arr, ink, min_side, params):
        if b[2] - b[0] >= limit and b[3] - b[1] >= limit:
            out.append((b, float(ink[b[1] : b[3], b[0] : b[2]].mean())))
    return out


def clean_boxes(ink: np.ndarray, boxes: Sequence[Scored], min_side: int) -> list[Scored]:
    """Trim each box to its ink, drop tiny ones and ones mostly inside a better-scoring box."""
    h, w = ink.shape
    kept: list[Scored] = []
    for box, score in sorted(boxes, key=lambda s: -s[1]):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        clipped = (max(0, x0), max(0, y0), min(w, x1), min(h, y1))
        if area(clipped) == 0:
            continue
        t = trim_box(ink, clipped)
        if t is None or t[2] - t[0] < min_side or t[3] - t[1] < min_side:
            continue
        if any(inter(t, k) > 0.8 * area(t) for k, _ in kept):
            continue
        kept.append((t, score))
    return sorted(kept, key=lambda s: (s[0][1] // 16, s[0][0]))  # reading order


def whole_figure(ink: np.ndarray) -> Scored:
    """The figure trimmed of empty margins, as the single panel of a non-compound figure."""
    h, w = ink.shape
    return (trim_box(ink, (0, 0, w, h)) or (0, 0, w, h), 1.0)


def off_background(arr: np.ndarray, bg: np.ndarray, tol: float) -> np.ndarray:
    """(H, W) bool: pixels of ``arr`` more than ``tol`` levels off the background colour ``bg`` in
    some channel (pale content such as bare slide glass counts, unlike in :func:`ink_mask`)."""
    bg32 = np.asarray(bg, dtype=np.float32)  # (C,)
    if arr.dtype != np.uint8:
        diff = np.abs(arr.astype(np.float32) - bg32)  # (H, W, C)
        return np.asarray((diff > tol).any(axis=2))
    levels = np.arange(256, dtype=np.float32)
    out = np.zeros(arr.shape[:2], dtype=bool)  # (H, W)
    for c in range(arr.shape[2]):  # per channel, by a table of the 256 levels (uint8 input)
        table = np.abs(levels - bg32[c]) > tol  # (256,) the same float32 test per level
        out |= table[arr[:, :, c]]
    return out


def grow_pale(
    arr: np.ndarray,
    ink: np.ndarray,
    boxes: Sequence[Scored],
    tol: float,
    share: float = 0.6,
    params: ClassicParams = DEFAULT_CLASSIC,
    bg: np.ndarray | None = None,
) -> list[Scored]:
    """Boxes grown back over the pale edges of their pictures (section 57 of
    docs/experiments/panel-detector.md). The ink mask leaves out pixels within 30 grey levels of the
    background, so a micrograph whose edge is bare slide glass (a few levels under white) is trimmed
    short. Each side of a box moves out one line at a time while the line just outside it, along
    the box's span, holds no ink, at least ``share`` of its pixels differ from the background by
    more than ``tol`` levels (pale content, not gutter) and it touches no other box.

    The bare glass of scanned slides is often one flat colour (244 grey in the held-out pictures),
    so flatness cannot tell it from a drawn tint: pictures on a light tinted backdrop share the
    backdrop out among their boxes."""
    if bg is None:  # the figure's background colour, as ink_mask found it
        bg = background_colour(arr, params)
    bg = np.asarray(bg, dtype=np.float32)  # (C,)
    h, w = ink.shape
    out: list[Scored] = [((int(b[0]), int(b[1]), int(b[2]), int(b[3])), s) for b, s in boxes]

    def pale_line(x0: int, y0: int, x1: int, y1: int) -> bool:
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h or ink[y0:y1, x0:x1].any():
            return False
        return bool(off_background(arr[y0:y1, x0:x1], bg, tol).mean() >= share)

    for i in range(len(out)):
        x0, y0, x1, y1 = out[i][0]
        moving = [True] * 4  # left, right, top, bottom
        while any(moving):
            for side in range(4):
                if not moving[side]:
                    continue
                line = (
                    (x0 - 1, y0, x0, y1),
                    (x1, y0, x1 + 1, y1),
                    (x0, y0 - 1, x1, y0),
                    (x0, y1, x1, y1 + 1),
                )[side]
                if not pale_line(*line) or any(
                    inter(line, o) > 0 for j, (o, _) in enumerate(out) if j != i
                ):
                    moving[side] = False
                    continue
                x0, y0 = min(x0, line[0]), min(y0, line[1])
                x1, y1 = max(x1, line[2]), max(y1, line[3])
            out[i] = ((x0, y0, x1, y1), out[i][1])
    return out
