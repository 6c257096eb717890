"""Glomeruli larger than the tile overlap: cut by seams, joined once; boxes clipped to the slide.

A pyramidal TIFF (0.5 um/px) holds blue discs ("glomeruli") on pink tissue. At the working 2 um/px the
grid of 128-px tiles overlapping by 32 px starts tiles every 96 px, so a disc 80-140 px across is seen
whole by no tile: every tile keeps the piece it sees, cut by its edges (two pieces on a seam, four on
a corner, more when the disc is wider than a tile). The stand-in detector (conftest's ``BlueDetector``:
connected blue components) boxes each piece exactly, so the merged result is known: each disc once,
with its whole box.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from glomssl.detect.slide import detect_tiles, merge_rows, tile_rows
from glomssl.slidechain.pyramid import write_pyramid
from glomssl.tiling import WorkingLevel, tile_grid, working_level
from glomssl.wsi import open_any

W, H = 640, 480  # working px at 2 um/px; level 0 is 4x that at 0.5 um/px
TILE, OVERLAP = 128, 32
# (cx, cy, r) in working px. Tiles start at x 0/96/192/288/384/480/512 and y 0/96/192/288/352.
BIG = [
    (208, 112, 50),  # on the corner of four tiles
    (400, 304, 45),  # another corner
    (112, 330, 70),  # wider than a tile: cut by two seams each way
]
ALONG_SEAM = [
    (496, 60, 40),
    (496, 150, 40),
]  # both cut by the seam x 480..512, 10 px apart along it
CLOSE = [(337, 160, 12), (367, 160, 12)]  # 6 px apart inside one tile, cut by nothing
DISCS = BIG + ALONG_SEAM + CLOSE


def _slide(path: Path, discs: list[tuple[int, int, int]]) -> Path:
    rng = np.random.default_rng(0)
    w0, h0 = 4 * W, 4 * H
    img = np.full((h0, w0, 3), (243, 241, 245), np.uint8)
    core = rng.integers(-12, 12, (h0 - 32, w0 - 32, 3)) + np.array([205, 120, 170])
    img[16:-16, 16:-16] = np.clip(core, 0, 255).astype(np.uint8)
    for cx, cy, r in discs:
        cv2.circle(img, (4 * cx, 4 * cy), 4 * r, (40, 50, 200), -1)

    def region(x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), 243, np.uint8)
        sub = img[y : y + h, x : x + w]
        out[: sub.shape[0], : sub.shape[1]] = sub
        return out

    return write_pyramid(path, region, w0, h0, 0.5)


@pytest.fixture(scope="module")
def seam_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _slide(tmp_path_factory.mktemp("seams") / "discs.tif", DISCS)


def _detector(blue: str) -> Any:
    """conftest's stand-in detector (the ``blue`` fixture puts it behind ``load_detector``)."""
    from glomssl.detect.model import load_detector

    return load_detector(blue)


def _detect(path: Path, predict: Any) -> tuple[Any, list[list[float]]]:
    slide = open_any(path)
    work = working_level(slide, mpp=2.0)
    assert (work.width, work.height) == (W, H)
    tiles = tile_grid(slide, work, TILE, OVERLAP)
    rows = detect_tiles(slide, work, tiles, predict, batch=4)
    slide.close()
    return work, rows


def _box(cx: float, cy: float, r: float) -> np.ndarray:
    return 4 * np.array([cx - r, cy - r, cx + r, cy + r], float)  # level 0


def test_a_glomerulus_larger_than_the_overlap_comes_out_once_with_its_whole_box(
    seam_slide: Path, blue: str
) -> None:
    work, rows = _detect(seam_slide, _detector(blue).predict)
    assert len(rows) > len(DISCS) + 8  # the tiles really do keep several pieces of the big discs
    g = merge_rows(rows, work)
    assert len(g) == len(DISCS), g.boxes / 4
    for disc in DISCS:  # each disc once, its whole box (to ~2 working px)
        d = np.abs(g.boxes - _box(*disc)).max(axis=1)
        assert d.min() <= 10, (disc, g.boxes / 4)


def test_close_separate_glomeruli_stay_two(seam_slide: Path, blue: str) -> None:
    """Two discs 6 px apart, cut by nothing, and two discs on one seam 10 px apart along it."""
    work, rows = _detect(seam_slide, _detector(blue).predict)
    g = merge_rows(rows, work)
    for pair in (CLOSE, ALONG_SEAM):
        for disc in pair:
            assert np.abs(g.boxes - _box(*disc)).max(axis=1).min() <= 10, (disc, g.boxes / 4)
    # and no box spans both discs of a pair
    for a, b in (CLOSE, ALONG_SEAM):
        both = _box(*a)
        both[:2] = np.minimum(both[:2], _box(*b)[:2])
        both[2:] = np.maximum(both[2:], _box(*b)[2:])
        assert np.abs(g.boxes - both).max(axis=1).min() > 40


def test_rows_record_the_cutting_edges_and_old_rows_still_merge(
    seam_slide: Path, blue: str
) -> None:
    """Rows carry the tile edges that cut them; rows saved before that (6 values) merge as before."""
    work, rows = _detect(seam_slide, _detector(blue).predict)
    assert all(len(r) == 7 for r in rows)
    assert {int(r[6]) for r in rows} >= {0, 1, 4}  # uncut, cut on the left, cut on the right
    old = merge_rows([r[:6] for r in rows], work)
    assert len(DISCS) <= len(old) <= len(rows)


def test_boxes_are_clipped_to_the_slide(tmp_path: Path, blue: str) -> None:
    """A detector whose boxes reach past the slide's edge (into the white padding of edge tiles)."""
    path = _slide(tmp_path / "edge.tif", [(620, 455, 30), (300, 200, 30)])
    det = _detector(blue)

    def sloppy(tiles: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for b, s in det.predict(tiles):
            out.append((b + np.array([-6.0, -6.0, 30.0, 30.0]), s))  # too large, past the tile
        return out

    work, rows = _detect(path, sloppy)
    assert max(r[2] for r in rows) > W and max(r[3] for r in rows) > H  # rows reach past the slide
    g = merge_rows(rows, work, dimensions=(4 * W - 3, 4 * H - 3))
    assert len(g) == 2
    assert g.boxes[:, [0, 2]].max() <= 4 * W - 3 and g.boxes[:, [1, 3]].max() <= 4 * H - 3
    assert g.boxes.min() >= 0
    corner = g.boxes[np.argmax(g.boxes[:, 0])]
    assert corner[2] == 4 * W - 3 and corner[3] == 4 * H - 3
    # the circle (and so the area) counts only the slide: from the clipped box
    c = g.circles[np.argmax(g.boxes[:, 0])]
    assert c[2] == pytest.approx(max(corner[2] - corner[0], corner[3] - corner[1]) / 2)
    # without dimensions the working size is the limit
    g2 = merge_rows(rows, work)
    assert g2.boxes[:, [0, 2]].max() <= 4 * W and g2.boxes[:, [1, 3]].max() <= 4 * H


def test_clipping_drops_a_box_wholly_off_the_slide() -> None:
    work = WorkingLevel(level=0, level_downsample=1.0, resize=4.0, mpp=2.0, width=100, height=80)
    rows = [
        [10, 10, 30, 30, 0.9, 0, 0],
        [101, 20, 120, 40, 0.8, 0, 0],
        [90, 70, 110, 95, 0.7, 0, 0],
    ]
    g = merge_rows(rows, work, dimensions=(400, 320))
    assert len(g) == 2
    assert np.allclose(g.boxes[1], [360, 280, 400, 320])


def test_tile_rows_mark_the_sides_of_the_tile_that_cut_a_box() -> None:
    from glomssl.detect.slide import BOTTOM, LEFT, RIGHT, TOP
    from glomssl.tiling import Tile

    work = WorkingLevel(level=0, level_downsample=1.0, resize=4.0, mpp=2.0, width=400, height=400)
    t = Tile(5, 96, 96, 128, (16, 16, 112, 112))
    boxes = np.array(
        [
            [0.5, 40, 60, 70],
            [40, 1, 70, 60],
            [50, 50, 126.5, 90],
            [60, 40, 90, 128],
            [40, 40, 80, 80],
        ]
    )
    rows = tile_rows(t, work, boxes, np.full(len(boxes), 0.9))
    assert [int(r[6]) for r in rows] == [LEFT, TOP, RIGHT, BOTTOM, 0]
    assert [r[5] for r in rows] == [1, 1, 1, 1, 0]
    # the slide's own edges cut nothing
    edge = Tile(0, 0, 0, 128, (0, 0, 112, 112))
    r0 = tile_rows(edge, work, np.array([[0, 0, 60, 60]]), np.array([0.9]))
    assert r0[0][5:] == [0.0, 0.0]
