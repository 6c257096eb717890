"""Glomerulus detection over a whole slide: tissue tiles, per-tile detections, seam merging.

The slide is read at a working resolution (:func:`glomssl.tiling.working_level`, the detector's own
mpp by default) in overlapping tiles that touch tissue (:func:`glomssl.tiling.tile_grid`). Each tile
*owns* its core (cores partition the slide), and a detection is kept only by the tile whose core holds
its centre. With an overlap of at least one glomerulus diameter, the tile that owns a glomerulus's
centre sees it whole, and the truncated copy a neighbour sees has its centre on the owner's side, so
it is dropped. A glomerulus larger than the overlap is seen whole by no tile: tiles keep the pieces
they see, cut by their edges, and pieces cut by the two sides of one seam are joined into their
union (:func:`join_seam_pieces`). What remains near seams (detections of one glomerulus by two
tiles) is removed by circle NMS (CircleNet's rule; Glo-In-One uses a circle IoU of 0.35), where a
detection cut by an inner tile edge yields to one seen whole. Boxes are clipped to the slide first,
so no circle or area counts the white beyond its edge.

Per-tile results are plain rows in working pixels (so a resumable queue can store them) and are
converted to level-0 pixels at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from glomssl.detect.geometry import boxes_to_circles, circle_nms_groups
from glomssl.tiling import Tile, WorkingLevel

#: (tiles as RGB arrays) -> per tile (boxes (N, 4) in tile pixels, scores (N,))
Predictor = Callable[[list[np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]

EDGE_PX = 2.0  # a box this close to an inner tile edge is "cut" by it
# The inner edges of its tile a box reaches (a row's last column, a sum of these): within SEAM_PX,
# since a detector's box of a glomerulus cut by the edge may stop a few pixels short of it. Pieces
# of two separate glomeruli cannot be joined across a seam while the overlap is >= 2 * SEAM_PX.
LEFT, TOP, RIGHT, BOTTOM = 1, 2, 4, 8
SEAM_PX = 8.0
# pieces across a seam share at least this part of the shorter one's extent along it
SEAM_SHARE = 0.5
ROW_COLUMNS = 7  # x0 y0 x1 y1 score cut sides (rows saved before sides were recorded have 6)


@dataclass
class Glomeruli:
    """Merged detections of one slide in level-0 pixels."""

    boxes: np.ndarray  # (N, 4) x0 y0 x1 y1
    scores: np.ndarray  # (N,)
    circles: np.ndarray  # (N, 3) cx cy r

    def __len__(self) -> int:
        return len(self.scores)


def tile_rows(
    t: Tile, work: WorkingLevel, boxes: np.ndarray, scores: np.ndarray
) -> list[list[float]]:
    """The detections a tile keeps, as rows [x0, y0, x1, y1, score, cut, sides] in working pixels.

    Kept: detections whose box centre lies in the tile's core. ``cut`` is 1 when the box touches an
    edge of the tile that is not the slide's edge (the glomerulus may continue beyond it); ``sides``
    says which of those edges the box reaches, within ``SEAM_PX`` (a sum of ``LEFT``, ``TOP``,
    ``RIGHT``, ``BOTTOM``).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    cx0, cy0, cx1, cy1 = t.core
    rows: list[list[float]] = []
    inner = (
        t.x > 0,
        t.y > 0,
        t.x + t.size < work.width,
        t.y + t.size < work.height,
    )
    for (x0, y0, x1, y1), sc in zip(b, s):
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        if not (cx0 <= cx < cx1 and cy0 <= cy < cy1):
            continue
        cut = (
            (inner[0] and x0 <= EDGE_PX)
            or (inner[1] and y0 <= EDGE_PX)
            or (inner[2] and x1 >= t.size - EDGE_PX)
            or (inner[3] and y1 >= t.size - EDGE_PX)
        )
        sides = (
            LEFT * (inner[0] and x0 <= SEAM_PX)
            + TOP * (inner[1] and y0 <= SEAM_PX)
            + RIGHT * (inner[2] and x1 >= t.size - SEAM_PX)
            + BOTTOM * (inner[3] and y1 >= t.size - SEAM_PX)
        )
        rows.append([x0 + t.x, y0 + t.y, x1 + t.x, y1 + t.y, float(sc), float(cut), float(sides)])
    return rows


def merge_rows(
    rows: list[list[float]],
    work: WorkingLevel,
    iou: float = 0.35,
    dimensions: tuple[float, float] | None = None,
) -> Glomeruli:
    """All tiles' rows -> the slide's glomeruli: level-0 boxes sorted by position.

    Boxes are clipped to the slide (``dimensions``: its level-0 width and height; default: the working
    size scaled back), pieces of a glomerulus cut by the two sides of a seam (larger than the overlap)
    are joined into their union (:func:`join_seam_pieces`), then circle NMS keeps one box per
    glomerulus. Whole views win over cut ones; a kept cut box is also widened to the union of the cut
    boxes it suppressed.
    """
    a = np.zeros((len(rows), ROW_COLUMNS))
    for i, r in enumerate(rows):  # rows saved by an older version lack the sides: none joined
        a[i, : min(len(r), ROW_COLUMNS)] = r[:ROW_COLUMNS]
    w0, h0 = (
        dimensions
        if dimensions is not None
        else (work.width * work.scale, work.height * work.scale)
    )
    if len(a):
        a[:, [0, 2]] = a[:, [0, 2]].clip(0, w0 / work.scale)
        a[:, [1, 3]] = a[:, [1, 3]].clip(0, h0 / work.scale)
        a = a[(a[:, 2] > a[:, 0]) & (a[:, 3] > a[:, 1])]  # a box wholly off the slide is glass
    if len(a) == 0:
        z = np.zeros((0, 4))
        return Glomeruli(z, np.zeros(0), np.zeros((0, 3)))
    a = join_seam_pieces(a)
    groups = circle_nms_groups(boxes_to_circles(a[:, :4]), a[:, 4], iou, priority=1 - a[:, 5])
    kept = []
    for k, members in groups:
        box = a[k, :4].copy()
        if a[k, 5]:
            for j in members:
                if a[j, 5]:
                    box[:2] = np.minimum(box[:2], a[j, :2])
                    box[2:] = np.maximum(box[2:], a[j, 2:4])
        kept.append([*box, a[k, 4]])
    b = np.asarray(kept, dtype=np.float64)
    boxes = b[:, :4] * work.scale
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w0)  # no rounding past the edge either
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h0)
    order = np.lexsort((boxes[:, 0], boxes[:, 1]))  # top to bottom, then left to right
    boxes, scores = boxes[order], b[order, 4]
    return Glomeruli(boxes, scores, boxes_to_circles(boxes))


def join_seam_pieces(a: np.ndarray) -> np.ndarray:
    """Rows (N, 7) with the pieces of each glomerulus cut by tile seams joined into one row.

    Two pieces are one glomerulus cut by a seam when the first reaches its tile's right (bottom)
    edge, the second its tile's left (top) edge (the rows' ``sides``), the first's centre lies left
    of (above) the second's, their boxes overlap or abut across the seam, and their extents along it
    share at least ``SEAM_SHARE`` of the shorter one. Joined pieces (also chains: a glomerulus on a
    corner, or wider than a tile) become their union box with the best score, still marked cut, so
    a view of the glomerulus seen whole wins in NMS. Boxes that reach no inner tile edge are never
    joined: two close glomeruli stay two.
    """
    n = len(a)
    sides = a[:, 6].astype(np.int64)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    joined = False
    for first, second, ax in ((RIGHT, LEFT, 0), (BOTTOM, TOP, 1)):
        lo, hi = np.nonzero(sides & first)[0], np.nonzero(sides & second)[0]
        if len(lo) == 0 or len(hi) == 0:
            continue
        q = a[hi]
        for i in lo:  # across the seam: axis ``ax``; along it: the other axis
            p = a[i]
            across = (q[:, ax] - p[ax + 2] <= 2 * SEAM_PX) & (
                p[ax] + p[ax + 2] < q[:, ax] + q[:, ax + 2]
            )
            o = 1 - ax
            share = np.minimum(p[o + 2], q[:, o + 2]) - np.maximum(p[o], q[:, o])
            shorter = np.minimum(p[o + 2] - p[o], q[:, o + 2] - q[:, o])
            for j in hi[across & (share >= SEAM_SHARE * shorter)]:
                ri, rj = root(int(i)), root(int(j))
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
                    joined = True
    if not joined:
        return a
    roots = np.array([root(i) for i in range(n)])
    out = []
    for r in np.unique(roots):
        m = a[roots == r]
        if len(m) == 1:
            out.append(m[0])
            continue
        row = m[0].copy()
        row[:2] = m[:, :2].min(axis=0)
        row[2:4] = m[:, 2:4].max(axis=0)
        row[4] = m[:, 4].max()
        row[5] = 1.0
        row[6] = float(np.bitwise_or.reduce(m[:, 6].astype(np.int64)))
        out.append(row)
    return np.asarray(out, dtype=np.float64)


def iter_tiles(
    slide: Any, work: WorkingLevel, tiles: list[Tile], prefetch: int = 2
) -> Iterator[tuple[Tile, np.ndarray]]:
    """(tile, RGB array) in order, read one tile ahead in a thread (I/O overlaps the network)."""
    import queue
    import threading

    from glomssl.tiling import read_tile

    q: queue.Queue[Any] = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()

    def reader() -> None:
        try:
            for t in tiles:
                if stop.is_set():
                    return
                q.put((t, read_tile(slide, work, t)))
            q.put(None)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while th.is_alive():  # unblock a reader waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(timeout=0.05)


def detect_tiles(
    slide: Any,
    work: WorkingLevel,
    tiles: list[Tile],
    predict: Predictor,
    batch: int = 1,
    on_tile: Callable[[Tile, list[list[float]]], None] | None = None,
) -> list[list[float]]:
    """Run ``predict`` on ``tiles`` in batches; ``on_tile`` gets each tile's kept rows when done."""
    rows: list[list[float]] = []
    pending: list[tuple[Tile, np.ndarray]] = []

    def flush() -> None:
        results = predict([img for _, img in pending])
        for (t, _), (b, s) in zip(pending, results):
            kept = tile_rows(t, work, b, s)
            rows.extend(kept)
            if on_tile is not None:
                on_tile(t, kept)
        pending.clear()

    for t, img in iter_tiles(slide, work, tiles):
        pending.append((t, img))
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    return rows
