"""Slide-wide detection: glomeruli cut by tile seams are found once, in level-0 coordinates.

A pyramidal TIFF (0.5 um/px) holds blue discs ("glomeruli") on pink tissue, placed across the seams of
the tile grid at 2 um/px. The predictor is a colour threshold (connected components of blue pixels in a
tile), so every tile that sees part of a disc reports a box: a disc on a seam is reported by two or
four tiles, some of them cut. The merged result must hold each disc exactly once with its full box.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from glomssl.detect.slide import detect_tiles, merge_rows
from glomssl.slidechain.pyramid import write_pyramid
from glomssl.tiling import from_level0, tile_grid, to_level0, working_level
from glomssl.wsi import open_any

W0, H0 = 2400, 2000  # level-0 size at 0.5 um/px -> 600 x 500 working px at 2 um/px
# (cx, cy, r) in working pixels; the grid (tile 256, overlap 64) starts tiles at x 0/192/344 and
# y 0/192/244, cores split at x 224/396 and y 224/346
DISCS = [
    (224, 120, 36),
    (250, 300, 30),
    (396, 224, 40),
    (100, 400, 33),
    (470, 90, 28),
    (330, 346, 34),
]


@pytest.fixture(scope="module")
def disc_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    img = np.full((H0, W0, 3), (242, 240, 244), np.uint8)
    img[40:-40, 40:-40] = (205, 120, 170)
    img[40:-40, 40:-40] = np.clip(
        img[40:-40, 40:-40] + rng.integers(-15, 15, img[40:-40, 40:-40].shape), 0, 255
    ).astype(np.uint8)
    for cx, cy, r in DISCS:
        cv2.circle(img, (cx * 4, cy * 4), r * 4, (40, 50, 200), -1)
    path = tmp_path_factory.mktemp("seams") / "discs.tif"
    return write_pyramid(path, lambda x, y, w, h: _crop(img, x, y, w, h), W0, H0, 0.5)


def _crop(img: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    out = np.full((h, w, 3), 242, np.uint8)
    sub = img[y : y + h, x : x + w]
    out[: sub.shape[0], : sub.shape[1]] = sub
    return out


def blue_predictor(tiles: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for t in tiles:
        blue = (t[..., 2].astype(int) - t[..., 0].astype(int)) > 80
        n, _, st, _ = cv2.connectedComponentsWithStats(blue.astype(np.uint8))
        boxes = [(s[0], s[1], s[0] + s[2], s[1] + s[3]) for s in st[1:n] if s[4] > 15]
        out.append((np.array(boxes, float).reshape(-1, 4), np.full(len(boxes), 0.9)))
    return out


def test_seam_merging_finds_each_glomerulus_once_in_level0(disc_slide: Path) -> None:
    slide = open_any(disc_slide)
    work = working_level(slide, mpp=2.0)
    assert work.scale == pytest.approx(4.0) and (work.width, work.height) == (600, 500)
    tiles = tile_grid(slide, work, 256, 64)
    assert len(tiles) == 9
    raw = [len(b) for b, _ in blue_predictor([_read(slide, work, t) for t in tiles])]
    assert sum(raw) > len(DISCS) + 4  # the seams really do show discs to several tiles
    rows = detect_tiles(slide, work, tiles, blue_predictor, batch=3)
    g = merge_rows(rows, work, iou=0.35)
    assert len(g) == len(DISCS)
    want = np.array(
        [[4 * (cx - r), 4 * (cy - r), 4 * (cx + r), 4 * (cy + r)] for cx, cy, r in DISCS], float
    )
    for b in want:  # every disc once, its whole box in level-0 pixels (to ~2 working pixels)
        assert np.abs(g.boxes - b).max(axis=1).min() <= 10, (b, g.boxes)
    assert np.allclose(
        g.circles[:, 2], (g.boxes[:, 2] - g.boxes[:, 0]).clip(min=g.boxes[:, 3] - g.boxes[:, 1]) / 2
    )
    slide.close()


def test_without_core_ownership_duplicates_remain(disc_slide: Path) -> None:
    """The same run keeping every tile's detections (no ownership, no NMS) double counts seams."""
    from glomssl.detect.slide import tile_rows

    slide = open_any(disc_slide)
    work = working_level(slide, mpp=2.0)
    tiles = tile_grid(slide, work, 256, 64)
    preds = blue_predictor([_read(slide, work, t) for t in tiles])
    everything = sum(len(b) for b, _ in preds)
    kept = sum(len(tile_rows(t, work, b, s)) for t, (b, s) in zip(tiles, preds))
    assert everything > kept >= len(DISCS)
    slide.close()


def _read(slide: object, work: object, t: object) -> np.ndarray:
    from glomssl.tiling import read_tile

    return read_tile(slide, work, t)  # type: ignore[arg-type]


def test_level0_working_round_trip(disc_slide: Path) -> None:
    slide = open_any(disc_slide)
    work = working_level(slide, mpp=2.0)
    xy = np.array([[0.0, 0.0], [123.5, 77.25], [599.0, 499.0]])
    assert np.allclose(from_level0(to_level0(xy, work), work), xy)
    assert np.allclose(to_level0(xy, work), xy * 4)
    slide.close()
