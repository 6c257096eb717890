"""Glomerulus detection over a whole slide: tissue tiles, per-tile detections, seam merging.

The slide is read at a working resolution (:func:`glomssl.tiling.working_level`, the detector's own
mpp by default) in overlapping tiles that touch tissue (:func:`glomssl.tiling.tile_grid`). Each tile
*owns* its core (cores partition the slide), and a detection is kept only by the tile whose core holds
its centre. With an overlap of at least one glomerulus diameter, the tile that owns a glomerulus's
centre sees it whole, and the truncated copy a neighbour sees has its centre on the owner's side, so
it is dropped. What remains near seams (glomeruli larger than the overlap, detections of one glomerulus
by two tiles) is removed by circle NMS (CircleNet's rule; Glo-In-One uses a circle IoU of 0.35), where
a detection cut by an inner tile edge yields to one seen whole.

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
    """The detections a tile keeps, as rows [x0, y0, x1, y1, score, cut] in working pixels.

    Kept: detections whose box centre lies in the tile's core. ``cut`` is 1 when the box touches an
    edge of the tile that is not the slide's edge (the glomerulus may continue beyond it).
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
        rows.append([x0 + t.x, y0 + t.y, x1 + t.x, y1 + t.y, float(sc), float(cut)])
    return rows


def merge_rows(rows: list[list[float]], work: WorkingLevel, iou: float = 0.35) -> Glomeruli:
    """Circle NMS over all tiles' rows, then level-0 boxes sorted by position.

    Whole views win over cut ones. A glomerulus larger than the overlap is cut in every tile that sees
    it; then the kept (cut) box is widened to the union of the cut boxes it suppressed, which together
    cover the glomerulus.
    """
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    if len(a) == 0:
        z = np.zeros((0, 4))
        return Glomeruli(z, np.zeros(0), np.zeros((0, 3)))
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
    order = np.lexsort((boxes[:, 0], boxes[:, 1]))  # top to bottom, then left to right
    boxes, scores = boxes[order], b[order, 4]
    return Glomeruli(boxes, scores, boxes_to_circles(boxes))


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
