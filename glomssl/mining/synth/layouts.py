"""Layouts of synthetic compound figures: where the panels go.

A layout divides the figure's inner rectangle into cells, one panel each. Real journal figures are
built in a few recurring ways, and each has a generator here:

- ``single``: one panel (the non-compound figure, also the home of the hard negatives);
- ``grid``: rows of unequal height, each with its own number of unequal columns;
- ``cuts``: recursive guillotine cuts (panels spanning rows or columns, nested groups);
- ``rows``: justified rows, each panel keeping its aspect ratio (the layout of most image montages);
- ``uniform``: an r x c grid of equal panels, up to 30 (histology series: stains by conditions);
- ``big``: one large panel beside (or above) a grid of small ones;
- ``strip``: one row or one column of 2-10 panels (very wide or very tall figures).

Every generator returns the cells as boxes (x0, y0, x1, y1), exclusive ends, inside the rectangle,
separated by ``gutter`` pixels (0: touching panels).
"""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]
Rng = np.random.Generator
LAYOUTS = ("single", "grid", "cuts", "rows", "uniform", "big", "strip")
LAYOUT_WEIGHTS = (0.08, 0.2, 0.2, 0.18, 0.14, 0.1, 0.1)


def _split(rng: Rng, rect: Box, gutter: int, depth: int, out: list[Box], min_cell: int) -> None:
    """Recursive guillotine cuts of ``rect`` into 2-4 parts along its longer side (mostly)."""
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    if depth > 0 and (rng.random() < 0.25 + 0.2 * depth or min(w, h) < 2 * min_cell + 10):
        out.append(rect)
        return
    horizontal = (w > h) if rng.random() < 0.75 else (w <= h)
    k = int(rng.integers(2, 5 if depth == 0 else 4))
    length = w if horizontal else h
    usable = length - gutter * (k - 1)
    if usable / k < max(40, min_cell):
        out.append(rect)
        return
    share = rng.dirichlet(np.full(k, 4.0)) if rng.random() < 0.5 else np.full(k, 1.0 / k)
    pos = float(x0 if horizontal else y0)
    for i in range(k):
        size = usable * share[i]
        a, b = int(round(pos)), int(round(pos + size))
        sub = (a, y0, b, y1) if horizontal else (x0, a, x1, b)
        _split(rng, sub, gutter, depth + 1, out, min_cell)
        pos += size + gutter


def _even(
    start: float, length: float, k: int, gutter: int, shares: np.ndarray
) -> list[tuple[int, int]]:
    """``k`` intervals along [start, start + length) with ``gutter`` between, sized by ``shares``."""
    usable = length - gutter * (k - 1)
    out, pos = [], float(start)
    for s in shares:
        out.append((int(round(pos)), int(round(pos + usable * s))))
        pos += usable * s + gutter
    return out


def _fit(n: int, length: int, gutter: int, min_cell: int) -> int:
    """At most ``n`` cells of at least ``min_cell`` px along ``length`` (at least 1)."""
    return max(1, min(n, (length + gutter) // (min_cell + gutter)))


def grid_cells(rng: Rng, rect: Box, gutter: int, min_cell: int) -> list[Box]:
    """Rows of unequal height, each with its own number of (un)equal columns."""
    x0, y0, x1, y1 = rect
    rows = _fit(int(rng.integers(1, 5)), y1 - y0, gutter, int(min_cell * 1.5))
    cells: list[Box] = []
    counts: list[int] = []
    for r, (a, b) in enumerate(_even(y0, y1 - y0, rows, gutter, rng.dirichlet(np.full(rows, 6.0)))):
        cols = int(rng.integers(1, 6)) if r == 0 or rng.random() < 0.5 else counts[-1]
        cols = _fit(cols, x1 - x0, gutter, int(min_cell * 1.5))
        counts.append(cols)
        share = rng.dirichlet(np.full(cols, 5.0)) if rng.random() < 0.5 else np.full(cols, 1 / cols)
        cells += [(c0, a, c1, b) for c0, c1 in _even(x0, x1 - x0, cols, gutter, share)]
    return cells


def uniform_cells(rng: Rng, rect: Box, gutter: int, min_cell: int) -> list[Box]:
    """An r x c grid of equal panels (2 to 30 of them)."""
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    for _ in range(10):
        cols = int(rng.integers(2, 7))
        rows = int(rng.integers(1, 6))
        if 2 <= rows * cols <= 30 and (w - gutter * (cols - 1)) / cols >= min_cell:
            if (h - gutter * (rows - 1)) / rows >= min_cell:
                break
    else:
        rows, cols = 1, 2
    xs = _even(x0, w, cols, gutter, np.full(cols, 1 / cols))
    ys = _even(y0, h, rows, gutter, np.full(rows, 1 / rows))
    return [(a, c, b, d) for c, d in ys for a, b in xs]


def rows_cells(rng: Rng, rect: Box, gutter: int, min_cell: int) -> list[Box]:
    """Justified rows: panels of one row share a height and keep their aspect ratios; the rows are
    then scaled to fill the rectangle's height."""
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    n_rows = _fit(int(rng.integers(1, 5)), h, gutter, min_cell)
    same = rng.random() < 0.4
    k0 = _fit(int(rng.integers(1, 7)), w, gutter, min_cell)
    spec = []
    for _ in range(n_rows):
        k = k0 if same else _fit(int(rng.integers(1, 7)), w, gutter, min_cell)
        aspects = np.exp(rng.normal(0.0, 0.35, k)) * rng.choice([1.0, 1.33, 0.75, 1.5])  # w / h
        spec.append(aspects)
    natural = [(w - gutter * (len(a) - 1)) / float(np.sum(a)) for a in spec]  # row heights
    scale = (h - gutter * (n_rows - 1)) / sum(natural)
    cells: list[Box] = []
    y = float(y0)
    for aspects, rh in zip(spec, natural):
        rh_s = rh * scale
        share = aspects / aspects.sum()
        cells += [
            (a, int(round(y)), b, int(round(y + rh_s)))
            for a, b in _even(x0, w, len(aspects), gutter, share)
        ]
        y += rh_s + gutter
    return cells


def big_cells(rng: Rng, rect: Box, gutter: int, min_cell: int) -> list[Box]:
    """One big panel on one side, a grid of small ones filling the rest."""
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    frac = rng.uniform(0.35, 0.6)
    side = rng.choice(["left", "right", "top"], p=[0.5, 0.25, 0.25])
    if side in ("left", "right"):
        bw = int((w - gutter) * frac)
        big = (x0, y0, x0 + bw, y1) if side == "left" else (x1 - bw, y0, x1, y1)
        rest = (x0 + bw + gutter, y0, x1, y1) if side == "left" else (x0, y0, x1 - bw - gutter, y1)
    else:
        bh = int((h - gutter) * frac)
        big, rest = (x0, y0, x1, y0 + bh), (x0, y0 + bh + gutter, x1, y1)
    if rng.random() < 0.6:
        small = uniform_cells(rng, rest, gutter, min_cell)
    else:
        small = grid_cells(rng, rest, gutter, min_cell)
    return [big, *small]


def strip_cells(rng: Rng, rect: Box, gutter: int, min_cell: int) -> list[Box]:
    """One row (wide rectangle) or one column (tall rectangle) of 2-10 panels."""
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    k = int(rng.integers(2, 11))
    length = w if w >= h else h
    k = max(2, _fit(k, length, gutter, min_cell))
    share = np.full(k, 1 / k) if rng.random() < 0.7 else rng.dirichlet(np.full(k, 8.0))
    if w >= h:
        return [(a, y0, b, y1) for a, b in _even(x0, w, k, gutter, share)]
    return [(x0, a, x1, b) for a, b in _even(y0, h, k, gutter, share)]


def layout(rng: Rng, mode: str, rect: Box, gutter: int, min_cell: int = 30) -> list[Box]:
    """Cells of ``rect`` for one layout ``mode`` (one of :data:`LAYOUTS`), mostly no smaller than
    ``min_cell`` px (grids and strips take fewer cells rather than smaller ones)."""
    if mode == "single":
        return [rect]
    if mode == "cuts":
        cells: list[Box] = []
        _split(rng, rect, gutter, 0, cells, min_cell)
        return cells
    makers = {
        "grid": grid_cells,
        "uniform": uniform_cells,
        "rows": rows_cells,
        "big": big_cells,
        "strip": strip_cells,
    }
    return makers[mode](rng, rect, gutter, min_cell)
