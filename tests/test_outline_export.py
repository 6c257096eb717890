"""Outlines of masks as files: valid rings, pixel-edge geometry, XML holes, table centroids.

Every polygon that ``mask_to_regions`` returns must be one QuPath (JTS) and ImageScope can build: each
ring with at least 3 distinct vertices (4 positions closed) and an area, no ring crossing or touching
itself or another, holes inside the exterior. The checks here are written out independently of the
library's own (exact integer arithmetic on the 0.01 px the files store), so they need no shapely.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from glomssl.annotations import (
    MIN_HOLE_PX,
    Region,
    mask_to_regions,
    read_geojson,
    read_imagescope_xml,
    write_geojson,
    write_imagescope_xml,
)
from glomssl.finetune.segmenter.slide import _objects

Point = tuple[int, int]


# ---------------------------------------------------------------- an independent polygon checker


def _int_ring(ring: list[tuple[float, float]] | list[list[float]]) -> list[Point]:
    """A ring in hundredths of a pixel (what the files store), open, as exact integers."""
    pts = [(round(float(p[0]) * 100), round(float(p[1]) * 100)) for p in ring]
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts = pts[:-1]
    return pts


def _area2(ring: list[Point]) -> int:
    return sum(
        ring[i][0] * ring[(i + 1) % len(ring)][1] - ring[(i + 1) % len(ring)][0] * ring[i][1]
        for i in range(len(ring))
    )


def _orient(a: Point, b: Point, c: Point) -> int:
    v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    return (v > 0) - (v < 0)


def _on_segment(a: Point, b: Point, c: Point) -> bool:
    return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])


def _segments_meet(a: Point, b: Point, c: Point, d: Point) -> bool:
    """Whether closed segments ab and cd share any point (crossing or touching)."""
    o1, o2, o3, o4 = _orient(a, b, c), _orient(a, b, d), _orient(c, d, a), _orient(c, d, b)
    if o1 * o2 < 0 and o3 * o4 < 0:
        return True
    return (
        (o1 == 0 and _on_segment(a, b, c))
        or (o2 == 0 and _on_segment(a, b, d))
        or (o3 == 0 and _on_segment(c, d, a))
        or (o4 == 0 and _on_segment(c, d, b))
    )


def _strictly_inside(p: Point, ring: list[Point]) -> bool:
    inside = False
    for i in range(len(ring)):
        (x0, y0), (x1, y1) = ring[i], ring[(i + 1) % len(ring)]
        if (y0 > p[1]) != (y1 > p[1]):
            # x of the edge at the ray's height, compared without division
            lhs = (p[0] - x0) * (y1 - y0)
            rhs = (p[1] - y0) * (x1 - x0)
            if (lhs < rhs) == (y1 > y0):
                inside = not inside
    return inside


def polygon_problems(rings: list[Any]) -> list[str]:
    """What makes a polygon (exterior first, then holes) unfit for JTS; empty when it is valid."""
    rs = [_int_ring(r) for r in rings]
    out = []
    for k, r in enumerate(rs):
        if len(set(r)) < 3:
            out.append(f"ring {k} has {len(set(r))} distinct vertices")
        elif len(set(r)) != len(r):
            out.append(f"ring {k} repeats a vertex")
        if _area2(r) == 0:
            out.append(f"ring {k} has zero area")
    if out:
        return out
    segs = [(k, i, r[i], r[(i + 1) % len(r)]) for k, r in enumerate(rs) for i in range(len(r))]
    for s in range(len(segs)):
        k1, i1, a, b = segs[s]
        for t in range(s + 1, len(segs)):
            k2, i2, c, d = segs[t]
            n = len(rs[k1])
            if k1 == k2 and (i2 - i1) % n in (1, n - 1):  # neighbours share one vertex
                shared = b if b == c else a
                far1, far2 = (a if shared == b else b), (d if shared == c else c)
                if _orient(far1, shared, far2) == 0 and _on_segment(far1, far2, shared) is False:
                    out.append(f"ring {k1} folds back at {shared}")
                continue
            if _segments_meet(a, b, c, d):
                out.append(f"rings {k1}/{k2} edges {i1}/{i2} meet")
                return out
    for k, hole in enumerate(rs[1:], 1):
        if not _strictly_inside(hole[0], rs[0]):
            out.append(f"hole {k} is not inside the exterior")
        for m, other in enumerate(rs[1:], 1):
            if m != k and _strictly_inside(hole[0], other):
                out.append(f"hole {k} lies in hole {m}")
    return out


def assert_valid(r: Region) -> None:
    assert r.kind == "polygon"
    problems = polygon_problems([r.points, *r.holes])
    assert not problems, problems


def test_the_checker_itself() -> None:
    square = [(0, 0), (4, 0), (4, 4), (0, 4)]
    assert polygon_problems([square]) == []
    assert polygon_problems([square, [(1, 1), (1, 2), (2, 2), (2, 1)]]) == []
    assert polygon_problems([[(0, 0), (4, 0), (0, 0)]])  # 2 distinct vertices
    assert polygon_problems([[(0, 0), (4, 0), (8, 0)]])  # no area
    assert polygon_problems([[(0, 0), (4, 4), (4, 0), (0, 4)]])  # a bow tie
    touching = [(0, 0), (2, 0), (2, 2), (4, 2), (4, 4), (2, 4), (2, 2), (0, 2)]
    assert polygon_problems([touching])  # one ring through (2, 2) twice
    assert polygon_problems([square, [(5, 5), (5, 6), (6, 6), (6, 5)]])  # hole outside
    assert polygon_problems([square, [(0, 1), (1, 1), (1, 2), (0, 2)]])  # hole touching the shell


# ---------------------------------------------------------------- B, E: mask outlines


def test_a_square_at_scale_4_follows_the_pixel_edges() -> None:
    m = np.zeros((30, 30), bool)
    m[10:20, 10:20] = True
    (r,) = mask_to_regions(m, "x", scale=4)
    assert r.bbox() == (40, 40, 80, 80)  # not 40..76 (pixel indices)
    assert r.area() == 1600  # not 1296
    assert r.pixels is not None
    assert r.pixels.area == 1600 and r.pixels.box == (40, 40, 80, 80)
    assert r.pixels.centroid == (60, 60)
    (o,) = mask_to_regions(m, "x", scale=4, offset=(1000.5, 2000))
    assert o.bbox() == (1040.5, 2040, 1080.5, 2080)
    assert_valid(r)


def test_objects_on_the_mask_border_and_single_pixels() -> None:
    m = np.zeros((8, 8), bool)
    m[0, 0] = True  # one pixel in the corner
    m[3:8, 5:8] = True  # a block touching two borders
    regs = mask_to_regions(m, "x", scale=2)
    assert [r.bbox() for r in regs] == [(0, 0, 2, 2), (10, 6, 16, 16)]
    assert [r.area() for r in regs] == [4, 60]
    for r in regs:
        assert_valid(r)


def test_a_one_pixel_hole_is_filled_and_a_larger_one_kept() -> None:
    m = np.zeros((30, 30), bool)
    m[5:25, 5:25] = True
    m[10, 10] = False  # 1 px: filled
    m[15:20, 15:20] = False  # 25 px: a real hole
    (r,) = mask_to_regions(m, "x", scale=4)
    assert len(r.holes) == 1
    assert r.area() == (400 - 25) * 16  # the 1-px hole is filled, the 5x5 one cut out exactly
    assert r.pixels is not None and r.pixels.area == (400 - 25) * 16
    hx0 = min(p[0] for p in r.holes[0])
    hx1 = max(p[0] for p in r.holes[0])
    assert (hx0, hx1) == (60, 80)
    assert_valid(r)
    assert MIN_HOLE_PX > 1
    m[15:20, 15:20] = True
    m[15:18, 15:20] = False  # a hole of 15 px, one under the limit: filled
    assert MIN_HOLE_PX == 16
    (r,) = mask_to_regions(m, "x")
    assert r.holes == [] and r.area() == 400
    (r,) = mask_to_regions(m, "x", min_hole=0)  # every hole kept when asked
    assert len(r.holes) == 2
    assert_valid(r)


def test_a_hole_that_simplification_would_collapse_stays_a_valid_ring() -> None:
    m = np.zeros((24, 24), bool)
    m[2:22, 2:22] = True
    m[9, 3:21] = False  # a slit hole, 1 px wide and 18 px long (over the minimum hole)
    m[14:16, 5:19] = False  # a 2 px wide one
    for tol in (0, 1, 2, 5):
        (r,) = mask_to_regions(m, "x", scale=3, tolerance=tol)
        assert len(r.holes) == 2, tol
        assert_valid(r)
        assert r.area() == pytest.approx((400 - 18 - 28) * 9)


def test_blobs_touching_at_a_corner_are_one_valid_polygon() -> None:
    m = np.zeros((20, 20), bool)
    m[2:6, 2:6] = True
    m[6:10, 6:10] = True  # touches the first only at one corner
    m[12:15, 2:5] = True
    m[15:18, 5:8] = True  # another corner contact, and an edge-sharing pair:
    m[2:5, 12:15] = True
    m[5:8, 12:18] = True
    regs = mask_to_regions(m, "x", scale=2)
    exact = mask_to_regions(m, "x", scale=2, tolerance=0)
    assert len(regs) == len(exact) == 3
    for r, e in zip(regs, exact):
        assert_valid(r)
        assert_valid(e)
        assert r.pixels is not None and r.pixels == e.pixels
        assert r.pixels.area <= e.area() <= r.pixels.area + 1  # a sliver cuts each contact
        assert r.area() == pytest.approx(r.pixels.area, abs=2 * 4)  # simplified within 1 px
    assert sorted(r.pixels.area for r in regs if r.pixels) == [18 * 4, 27 * 4, 32 * 4]
    ring = np.zeros((12, 12), bool)  # a diamond ring: its hole touches itself at corners
    for i in range(5):
        ring[1 + i, 5 - i] = ring[1 + i, 6 + i] = ring[10 - i, 5 - i] = ring[10 - i, 6 + i] = True
    for tol in (0, 1):
        regs = mask_to_regions(ring, "x", tolerance=tol, min_hole=0)
        assert len(regs) == 1 and len(regs[0].holes) == 1
        assert_valid(regs[0])


def test_a_diagonal_one_pixel_line_is_one_thin_valid_polygon() -> None:
    m = np.zeros((14, 14), bool)
    for i in range(12):
        m[i + 1, i + 1] = True
    for tol in (0, 1):
        (r,) = mask_to_regions(m, "x", scale=4, tolerance=tol)
        assert_valid(r)
        assert r.area() == pytest.approx(12 * 16, rel=0.3)  # not its 48 x 48 box
        assert r.bbox() == (4, 4, 52, 52)
        assert r.pixels is not None and r.pixels.area == 12 * 16


def test_zero_area_objects_and_empty_masks_give_nothing() -> None:
    assert mask_to_regions(np.zeros((5, 5), bool), "x") == []
    m = np.zeros((5, 5), np.uint8)
    m[2, 2] = 255
    assert mask_to_regions(m, "x", min_area=2) == []
    assert len(mask_to_regions(m, "x", min_area=1)) == 1
    with pytest.raises(ValueError):
        mask_to_regions(np.zeros((2, 2, 2)), "x")


def test_random_masks_give_only_valid_polygons_that_cover_their_pixels() -> None:
    rng = np.random.default_rng(7)
    n = 0
    for it in range(40):
        h, w = (int(v) for v in rng.integers(8, 40, 2))
        m = rng.random((h, w)) < rng.uniform(0.3, 0.7)
        if it % 2:
            m = cv2.GaussianBlur(m.astype(np.float32), (0, 0), float(rng.uniform(0.7, 2))) > 0.5
        scale = [1.0, 4.0, 0.5, 2.5][it % 4]
        tol = [0.0, 1.0, 2.0][it % 3]
        regs = mask_to_regions(m, "x", scale=scale, offset=(3.5, 7.0), tolerance=tol, min_hole=0)
        total = 0.0
        for r in regs:
            assert_valid(r)
            assert r.pixels is not None
            total += r.pixels.area
            n += 1
            if tol == 0:  # the exact outline: the pixels, plus a sliver per diagonal contact
                assert r.pixels.area <= r.area() <= r.pixels.area + 0.07 * scale**2 * len(r.points)
        assert total == pytest.approx(m.sum() * scale * scale)
    assert n > 100


def test_pixel_centroid_of_an_l_shape() -> None:
    m = np.zeros((20, 20), bool)
    m[2:18, 2:4] = True  # a tall bar
    m[16:18, 2:18] = True  # and a long foot
    (r,) = mask_to_regions(m, "x", scale=2)
    ys, xs = np.nonzero(m)
    assert r.pixels is not None
    assert r.pixels.centroid == pytest.approx(((xs.mean() + 0.5) * 2, (ys.mean() + 0.5) * 2))
    assert r.centroid() == pytest.approx(r.pixels.centroid)  # the polygon's is the same here


# ---------------------------------------------------------------- C: ImageScope XML


def _region_areas(path: Path) -> list[tuple[str, str, float, float]]:
    """(layer, NegativeROA, Area, area of its vertices) of every region of an XML file."""
    out = []
    for ann in ET.parse(path).getroot().iter("Annotation"):
        for reg in ann.iter("Region"):
            pts = [(float(v.get("X", 0)), float(v.get("Y", 0))) for v in reg.iter("Vertex")]
            if reg.get("Type") == "2":
                (a, b), (c, d) = pts
                own = np.pi * abs(c - a) * abs(d - b) / 4
            else:
                own = abs(_area2(_int_ring(pts))) / 2 / 10000
            neg = reg.get("NegativeROA", "0")
            out.append((ann.get("Name", ""), neg, float(reg.get("Area", "nan")), own))
    return out


def test_xml_writes_holes_as_negative_regions_with_matching_areas(tmp_path: Path) -> None:
    m = np.zeros((30, 30), bool)
    m[5:25, 5:25] = True
    m[8:13, 8:13] = False
    m[15:20, 15:22] = False
    regs = mask_to_regions(m, "Tuft", scale=4) + [
        Region("GS", "ellipse", [(0, 0), (40, 20)], [], 0.5),
        Region("GS", "polygon", [(0, 0), (10, 0), (0, 0)], [], 0.4),  # degenerate: not written
        Region("GS", "polygon", [(0, 0), (10, 0), (10, 10)], [[(1, 1), (2, 1)]], 0.3),
    ]
    p = write_imagescope_xml(tmp_path / "s.xml", regs, ["Tuft", "GS"], mpp=0.5)
    areas = _region_areas(p)
    assert [(a[0], a[1]) for a in areas] == [
        ("Tuft", "0"),
        ("Tuft", "1"),
        ("Tuft", "1"),
        ("GS", "0"),
        ("GS", "0"),
    ]
    for _, _, stated, own in areas:
        assert stated == pytest.approx(own, abs=0.05)  # Area = area of what the region lists
    root = ET.parse(p).getroot()
    for reg in root.iter("Region"):
        assert float(reg.get("AreaMicrons", "nan")) == pytest.approx(
            float(reg.get("Area", "nan")) * 0.25, abs=0.05
        )
        if reg.get("Type") == "0":
            assert len({(v.get("X"), v.get("Y")) for v in reg.iter("Vertex")}) >= 3
    # what is written is the object: outer area less the holes = the mask's pixels
    tuft = [a for a in areas if a[0] == "Tuft"]
    assert tuft[0][2] - tuft[1][2] - tuft[2][2] == pytest.approx((400 - 25 - 35) * 16)
    names, back, mpp = read_imagescope_xml(p)
    assert names == ["Tuft", "GS"] and mpp == 0.5 and len(back) == 3
    assert back[0].points == regs[0].points and back[0].holes == regs[0].holes
    assert back[0].area() == regs[0].area() == (400 - 25 - 35) * 16
    assert back[1].kind == "ellipse" and back[2].holes == [] and back[2].score == 0.3


def test_xml_and_geojson_hold_the_same_valid_polygons(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    noise = cv2.GaussianBlur(rng.random((80, 80)).astype(np.float32), (0, 0), 2.5)
    m = noise > np.quantile(noise, 0.55)
    ring = np.zeros((80, 80), np.uint8)
    cv2.circle(ring, (20, 20), 15, 1, 4)  # rings with holes, over the noise
    cv2.circle(ring, (58, 55), 12, 1, 3)
    m |= ring > 0
    regs = mask_to_regions(m, "Tuft", scale=2.5, offset=(100, 50), min_hole=4)
    assert len(regs) > 3 and any(r.holes for r in regs)
    gj = write_geojson(tmp_path / "a.geojson", regs)
    xml = write_imagescope_xml(tmp_path / "a.xml", regs, ["Tuft"], mpp=0.25)
    doc = json.loads(gj.read_text())
    for f in doc["features"]:
        rings = f["geometry"]["coordinates"]
        for ring in rings:
            assert ring[0] == ring[-1] and len(ring) >= 4
        assert not polygon_problems(rings)
    from_gj = read_geojson(gj)
    _, from_xml, _ = read_imagescope_xml(xml)
    assert len(from_gj) == len(from_xml) == len(regs)
    for a, b, r in zip(from_gj, from_xml, regs):
        assert a.points == b.points == r.points and a.holes == b.holes == r.holes
    for _, _, stated, own in _region_areas(xml):
        assert stated == pytest.approx(own, abs=0.05)


# ---------------------------------------------------------------- D: objects.csv


def test_objects_table_uses_pixel_centroids_and_areas() -> None:
    m = np.zeros((40, 40), bool)
    m[2:38, 2:5] = True  # an L: the mean of its outline's vertices is far from its centroid
    m[35:38, 2:38] = True
    regs = mask_to_regions(m, "Tuft", scale=4)
    (row,) = _objects(regs, 0.5)
    ys, xs = np.nonzero(m)
    assert (row["x"], row["y"]) == (
        pytest.approx((xs.mean() + 0.5) * 4, abs=0.05),
        pytest.approx((ys.mean() + 0.5) * 4, abs=0.05),
    )
    assert row["area_px"] == m.sum() * 16 and row["area_um2"] == pytest.approx(m.sum() * 4)
    assert (row["x0"], row["y0"], row["x1"], row["y1"]) == (8, 8, 152, 152)
    # a region not traced from a mask: the polygon's own centroid (holes subtracted)
    poly = Region("Tuft", "polygon", [(0, 0), (10, 0), (10, 10), (0, 10)], [[(0, 0), (5, 0), (5, 10), (0, 10)]])  # fmt: skip
    (row,) = _objects([poly], None)
    assert (row["x"], row["y"], row["area_px"]) == (7.5, 5.0, 50.0)
    poly.points.reverse()  # either orientation of either ring
    assert poly.centroid() == pytest.approx((7.5, 5.0))
    poly.holes[0].reverse()
    assert poly.centroid() == pytest.approx((7.5, 5.0))


# ---------------------------------------------------------------- end to end: glomssl segment


class _DarkPixels(torch.nn.Module):
    """A per-pixel 'segmenter': class 0 = dark pixels, class 1 = everything (stride 16)."""

    stride = 16

    def probabilities(self, x: torch.Tensor, idx: Any = None) -> torch.Tensor:
        dark = (x[:, 0] < 0.5).float()
        p = torch.stack([dark, torch.ones_like(dark)], dim=1)
        return p if idx is None else p[:, list(idx)]


def _slide(path: Path) -> Path:
    """A 2-level pyramidal TIFF (1024 px, 0.5 um/px) with dark shapes: disks, a ring with a hole
    and a pinhole, an L, blobs touching at a corner, a diagonal line and a slit hole."""
    tifffile = pytest.importorskip("tifffile")
    img = np.full((1024, 1024, 3), 235, np.uint8)
    img[60:980, 60:980] = (225, 150, 200)
    dark = np.zeros((1024, 1024), np.uint8)
    cv2.circle(dark, (250, 250), 90, 1, -1)
    cv2.circle(dark, (250, 250), 40, 0, -1)  # a ring
    dark[178:182, 248:252] = 0  # a pinhole in it (2 x 2 working px at level 1): filled
    cv2.circle(dark, (700, 220), 60, 1, -1)
    dark[450:750, 120:160] = 1  # an L
    dark[710:750, 120:420] = 1
    dark[480:540, 520:580] = 1  # two squares touching at a corner
    dark[540:600, 580:640] = 1
    for i in range(0, 160, 2):  # a diagonal line, 1 working px wide
        dark[820 + i : 822 + i, 650 + i : 652 + i] = 1
    dark[400:560, 760:920] = 1  # a square with a slit hole
    dark[480:482, 780:900] = 0
    img[dark > 0] = (60, 30, 90)
    with tifffile.TiffWriter(path) as tw:
        opts = {"tile": (256, 256), "photometric": "rgb", "resolutionunit": "CENTIMETER"}
        tw.write(img, subifds=1, resolution=(1e4 / 0.5, 1e4 / 0.5), **opts)
        tw.write(img[::2, ::2], subfiletype=1, resolution=(1e4 / 1.0, 1e4 / 1.0), **opts)
    return path


def test_segment_on_a_slide_writes_valid_outlines_and_true_centroids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from glomssl.cli import cli
    from glomssl.finetune.segmenter import infer

    meta = {"classes": ["Tuft", "Tissue"], "image_size": 128, "stride": 16}
    monkeypatch.setattr(
        infer, "load_segmenter", lambda path, device="cpu", **kw: (_DarkPixels(), meta)
    )
    slide = _slide(tmp_path / "slide.tif")
    args = ["segment", "--model", str(tmp_path), "--input", str(slide), "--out", str(tmp_path / "o"),
            "--classes", "Tuft", "--level", "1", "--tile", "128", "--overlap", "32", "--device", "cpu"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    d = tmp_path / "o" / "slide"
    doc = json.loads((d / "slide.geojson").read_text())
    feats = doc["features"]
    assert len(feats) == 6
    for f in feats:
        rings = f["geometry"]["coordinates"]
        for ring in rings:
            assert ring[0] == ring[-1] and len(ring) >= 4
        assert not polygon_problems(rings), (f["properties"]["name"], polygon_problems(rings))
    assert sum(len(f["geometry"]["coordinates"]) - 1 for f in feats) == 2  # ring and slit holes
    for _, _, stated, own in _region_areas(d / "slide.xml"):
        assert stated == pytest.approx(own, abs=0.05)
    # objects.csv against the mask itself: the thresholded canvas, components at level 1 (x2)
    canvas = np.fromfile(d / "probabilities.u8", np.uint8).reshape(1, 512, 512)[0]
    mask = (canvas >= 128).astype(np.uint8)
    n, lab, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
    rows = list(csv.DictReader(open(d / "objects.csv", encoding="utf-8")))
    assert len(rows) == n - 1 == 6
    ring = lab[88, 124]  # the ring, just above its pinhole
    for row in rows:
        x, y = float(row["x"]), float(row["y"])
        k = lab[int(y / 2), int(x / 2)]
        if k == 0:  # a ring's centroid lies in its hole: the nearest component centroid
            k = 1 + int(np.argmin(np.hypot(cents[1:, 0] * 2 + 1 - x, cents[1:, 1] * 2 + 1 - y)))
        filled = 4 if k == ring else 0  # the pinhole's working px count as the ring's
        ys, xs = np.nonzero(lab == k)
        assert x == pytest.approx((xs.mean() + 0.5) * 2, abs=0.6)
        assert y == pytest.approx((ys.mean() + 0.5) * 2, abs=0.6)
        assert float(row["area_px"]) == (len(xs) + filled) * 4
        assert float(row["x0"]) == xs.min() * 2 and float(row["x1"]) == (xs.max() + 1) * 2
    # the same objects, ids and names in the GeoJSON
    ids = sorted(f["properties"]["measurements"]["id"] for f in feats)
    assert ids == sorted(int(r["id"]) for r in rows)
    assert all(f["properties"]["name"] == f"Tuft {f['properties']['id']}" for f in feats)
