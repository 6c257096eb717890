"""Tiling at a working resolution, seamless stitching, and the GeoJSON / ImageScope XML round trips."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glomssl.annotations import (
    Region,
    bgr_int,
    mask_to_regions,
    read_geojson,
    read_imagescope_xml,
    write_geojson,
    write_imagescope_xml,
)
from glomssl.errors import GlomsslError
from glomssl.tiling import (
    CoreStitcher,
    Tile,
    from_level0,
    read_tile,
    tile_grid,
    to_level0,
    working_level,
)
from glomssl.wsi import open_any, slide_mpp


@pytest.fixture()
def pyramid(tmp_path: Path) -> Path:
    """A 2-level pyramidal TIFF (2048 px, 0.5 um/px) with tissue in a rectangle, made with tifffile."""
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(0)
    img = np.full((2048, 2048, 3), 240, np.uint8)
    img[400:1600, 300:1800] = rng.integers(90, 200, (1200, 1500, 3), dtype=np.uint8)
    img[400:1600, 300:1800, 1] //= 3  # purple-ish: saturated
    p = tmp_path / "slide.tif"
    with tifffile.TiffWriter(p, bigtiff=False) as tw:
        opts = {"tile": (256, 256), "photometric": "rgb", "resolutionunit": "CENTIMETER"}
        tw.write(img, subifds=1, resolution=(1e4 / 0.5, 1e4 / 0.5), **opts)
        tw.write(img[::2, ::2], subfiletype=1, resolution=(1e4 / 1.0, 1e4 / 1.0), **opts)
    return p


def test_working_level_picks_level_and_resize(pyramid: Path) -> None:
    s = open_any(pyramid, mpp=0.5)
    assert slide_mpp(s) == 0.5
    w = working_level(s, mpp=2.0)
    assert w.scale == pytest.approx(4.0) and w.width == 512 and w.mpp == pytest.approx(2.0)
    assert working_level(s, level=0).scale == 1.0
    with pytest.raises(GlomsslError, match="finer than the slide's level 0"):
        working_level(s, mpp=0.1)
    s2 = open_any(pyramid)  # no mpp given and (maybe) none recorded usable
    if slide_mpp(s2) is None:
        with pytest.raises(GlomsslError, match="--slide-mpp"):
            working_level(s2, mpp=2.0)
    xy = np.array([[10.0, 20.0]])
    assert np.allclose(from_level0(to_level0(xy, w), w), xy)


def test_tile_cores_partition_the_slide_exactly(pyramid: Path) -> None:
    s = open_any(pyramid, mpp=0.5)
    w = working_level(s, level=0)
    tiles = tile_grid(s, w, tile=512, overlap=96, tissue=np.ones((8, 8), bool), tissue_down=256.0)
    cover = np.zeros((w.height, w.width), np.int32)
    for t in tiles:
        x0, y0, x1, y1 = t.core
        cover[t.y + y0 : t.y + y1, t.x + x0 : t.x + x1] += 1
    assert cover.min() == 1 and cover.max() == 1  # every pixel owned by exactly one tile
    on_tissue = tile_grid(s, w, tile=512, overlap=96)
    assert 0 < len(on_tissue) < len(tiles)  # glass-only tiles are skipped
    with pytest.raises(GlomsslError, match="overlap less than half"):
        tile_grid(s, w, tile=64, overlap=40)


def test_stitching_tiles_equals_the_whole_image(pyramid: Path, tmp_path: Path) -> None:
    s = open_any(pyramid, mpp=0.5)
    w = working_level(s, level=1)
    whole = read_tile(
        s, w, tile_grid(s, w, 1024, 0, tissue=np.ones((4, 4), bool), tissue_down=512.0)[0]
    )
    st = CoreStitcher(3, w.height, w.width, path=tmp_path / "canvas.u8")
    tiles = tile_grid(s, w, tile=256, overlap=64, tissue=np.ones((4, 4), bool), tissue_down=512.0)
    for t in tiles:
        st.add(t, read_tile(s, w, t).transpose(2, 0, 1))
    st.flush()
    assert np.array_equal(st.canvas.transpose(1, 2, 0), whole[: w.height, : w.width])
    again = CoreStitcher(3, w.height, w.width, path=tmp_path / "canvas.u8")  # reopened on resume
    assert np.array_equal(np.asarray(again.canvas), np.asarray(st.canvas))


def test_mask_polygons_with_holes_and_offsets() -> None:
    m = np.zeros((40, 40), bool)
    m[5:25, 5:25] = True
    m[10:15, 10:15] = False  # a hole
    m[30:35, 30:38] = True
    regs = mask_to_regions(m, "Tuft", scale=2.0, offset=(100, 200), tolerance=0)
    assert len(regs) == 2
    big = max(regs, key=lambda r: r.area())
    assert len(big.holes) == 1
    x0, y0, x1, y1 = big.bbox()
    assert (x0, y0) == (110, 210) and (x1, y1) == (150, 250)
    # outlines along the pixels' outer edges: 20 x 20 px less the 5 x 5 px hole, 2 x 2 each
    assert big.area() == (20 * 20 - 5 * 5) * 4


def test_geojson_round_trip(tmp_path: Path) -> None:
    regs = [
        Region(
            "Tuft", "polygon", [(0, 0), (10, 0), (10, 10), (0, 10)], [[(2, 2), (4, 2), (4, 4)]], 0.9
        ),
        Region("GS", "ellipse", [(100, 100), (140, 120)], [], 0.75, {"id": 3}),
    ]
    p = write_geojson(tmp_path / "a.geojson", regs, classes=["Tuft", "GS"])
    doc = json.loads(p.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 2
    for f in doc["features"]:
        ring = f["geometry"]["coordinates"][0]
        assert f["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) >= 4
        assert f["properties"]["classification"]["name"] in ("Tuft", "GS")
    back = read_geojson(p)
    assert [r.name for r in back] == ["Tuft", "GS"]
    assert back[0].points == regs[0].points and back[0].holes == regs[0].holes
    assert back[1].kind == "ellipse" and back[1].bbox() == (100, 100, 140, 120)
    assert back[1].score == 0.75 and back[1].properties == {"id": 3}


def test_imagescope_xml_keeps_every_class_layer(tmp_path: Path) -> None:
    classes = ["normal", "obsolescent", "solidified", "disappearing"]
    regs = [Region("normal", "ellipse", [(0, 0), (50, 40)], [], 0.8)]
    p = write_imagescope_xml(tmp_path / "s.xml", regs, classes, mpp=0.25)
    root = ET.parse(p).getroot()
    assert [a.get("Name") for a in root.iter("Annotation")] == classes  # empty layers too
    assert root.get("MicronsPerPixel") == "0.25"
    names, back, mpp = read_imagescope_xml(p)
    assert names == classes and mpp == 0.25
    assert (
        back[0].kind == "ellipse" and back[0].points == [(0, 0), (50, 40)] and back[0].score == 0.8
    )
    assert bgr_int((255, 0, 0)) == 255 and bgr_int((0, 0, 255)) == 16711680
    with pytest.raises(GlomsslError, match="have no layer"):
        write_imagescope_xml(tmp_path / "t.xml", [Region("x", "polygon", [(0, 0)] * 3)], classes)


def test_a_tile_far_larger_than_the_slide_reads_only_the_slide(tmp_path: Path) -> None:
    """A coarse working resolution on a small slide: the tile spans 128x the slide, and reading
    it whole at level 0 used to allocate tens of gigabytes (a MemoryError, a traceback)."""
    img = np.zeros((60, 80, 3), np.uint8)
    img[:, :, 0] = 200  # a red slide, 80 x 60 px at 0.5 um/px
    Image.fromarray(img).save(tmp_path / "small.png")
    slide = open_any(tmp_path / "small.png", mpp=0.5)
    work = working_level(slide, mpp=64.0)  # 128 level-0 px per working px
    t = Tile(0, 0, 0, 1024, (0, 0, 1024, 1024))
    calls: list[tuple[int, int]] = []
    original = slide.read_region

    def spy(location, level, size):  # type: ignore[no-untyped-def]
        calls.append(size)
        return original(location, level, size)

    slide.read_region = spy
    tile = read_tile(slide, work, t)
    assert tile.shape == (1024, 1024, 3)
    assert calls == [(80, 60)]  # the slide's own pixels, not 131072 x 131072
    assert tile[0, 0, 0] > 150 and tile[0, 0, 1] < 50  # the slide, shrunk into the corner
    assert (tile[10:, 10:] == 255).all()  # white beyond it
