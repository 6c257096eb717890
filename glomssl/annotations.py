"""Annotation files pathologists open: QuPath GeoJSON and Aperio ImageScope XML, plus mask polygons.

Everything here is in level-0 slide pixels. A :class:`Region` is one object: a polygon (exterior ring,
optional holes) or an ellipse (its bounding box), with a class name, an optional score and free
properties. Writers and readers round-trip: ``read_geojson(write_geojson(regions))`` gives the same
regions (up to float formatting), and the same for the XML.

- Mask outlines (:func:`mask_to_regions`) follow the pixels' outer edges (mask pixel (r, c) covers
  [c, c+1] x [r, r+1] times the scale, plus the offset) and are valid simple polygons: every ring has
  at least 3 distinct vertices and an area, no ring crosses or touches another or itself, holes lie in
  the exterior; holes under ``MIN_HOLE_PX`` mask pixels are filled. Tables take areas, centroids and
  boxes from the pixels (``Region.pixels``), not from the simplified outline.
- GeoJSON: a ``FeatureCollection``; each feature's ``properties`` carry QuPath's ``objectType``
  (``annotation`` or ``detection``), ``classification`` (``name``, ``color`` as [r, g, b]), an optional
  ``name`` and ``measurements`` (every number: score, id ...), which is all QuPath imports; the same
  keys stay at the top level for other readers. Ellipses are written as 64-point polygons with
  ``"isEllipse": true`` in the geometry (QuPath turns them back into ellipses) and ``"shape":
  "ellipse"``, ``"box"`` in the properties (GeoJSON has no ellipse).
- ImageScope XML: ``<Annotations MicronsPerPixel=..>`` with ONE ``<Annotation>`` layer per class, in
  the order given, every class written even when it has no region (Glo-In-One's own XML silently lost a
  class); ``LineColor`` is the decimal BGR integer ImageScope expects; polygons are ``Type="0"``
  regions, each hole a ``NegativeROA="1"`` region right after its polygon, ellipses ``Type="2"`` with
  their two bounding-box corners; ``Area`` is the area of the region's own vertices; the score goes in
  ``Text``.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.errors import GlomsslError

#: distinct colours for class layers (RGB), reused cyclically
PALETTE = (
    (0, 200, 0),
    (230, 25, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 190),
    (0, 128, 128),
    (170, 110, 40),
    (128, 0, 0),
    (128, 128, 0),
    (0, 0, 128),
    (128, 128, 128),
)


@dataclass(frozen=True)
class PixelStats:
    """What the mask pixels of one traced object measure, in level-0 pixels.

    ``area`` is the pixel count (small holes filled included) x scale^2; ``centroid`` the mean of the
    pixel centres; ``box`` (x0, y0, x1, y1) the outer edges of the extreme pixels.
    """

    area: float
    centroid: tuple[float, float]
    box: tuple[float, float, float, float]


@dataclass
class Region:
    """One annotated object in level-0 pixels."""

    name: str  # class name
    kind: str  # "polygon" or "ellipse"
    points: list[tuple[float, float]]  # polygon: exterior ring (open); ellipse: two box corners
    holes: list[list[tuple[float, float]]] = field(default_factory=list)
    score: float | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    #: measures of the mask pixels the polygon was traced from (``mask_to_regions`` only; not
    #: written to files, not compared)
    pixels: PixelStats | None = field(default=None, compare=False, repr=False)

    def bbox(self) -> tuple[float, float, float, float]:
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        return min(xs), min(ys), max(xs), max(ys)

    def area(self) -> float:
        """Area in level-0 square pixels (holes subtracted)."""
        if self.kind == "ellipse":
            x0, y0, x1, y1 = self.bbox()
            return math.pi * (x1 - x0) * (y1 - y0) / 4
        return _ring_area(self.points) - sum(_ring_area(h) for h in self.holes)

    def centroid(self) -> tuple[float, float]:
        """The centre of mass of the shape (holes subtracted); an ellipse's is its box centre."""
        x0, y0, x1, y1 = self.bbox()
        if self.kind == "ellipse":
            return (x0 + x1) / 2, (y0 + y1) / 2
        total, sx, sy = 0.0, 0.0, 0.0
        for k, ring in enumerate([self.points, *self.holes]):
            if len(ring) < 3:
                continue
            a = np.asarray(ring, dtype=np.float64)
            x, y = a[:, 0], a[:, 1]
            xn, yn = np.roll(x, -1), np.roll(y, -1)
            cr = x * yn - xn * y
            area = cr.sum() / 2
            if area == 0:
                continue
            sign = 1.0 if k == 0 else -1.0  # holes count negative, whatever their orientation
            total += sign * abs(area)
            sx += sign * abs(area) * float(((x + xn) * cr).sum() / (6 * area))
            sy += sign * abs(area) * float(((y + yn) * cr).sum() / (6 * area))
        if total <= 0:
            return (x0 + x1) / 2, (y0 + y1) / 2
        return sx / total, sy / total


def _ring_area(ring: list[tuple[float, float]]) -> float:
    if len(ring) < 3:
        return 0.0
    a = np.asarray(ring, dtype=np.float64)
    x, y = a[:, 0], a[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def class_color(name: str, classes: list[str]) -> tuple[int, int, int]:
    i = classes.index(name) if name in classes else len(classes)
    return PALETTE[i % len(PALETTE)]


#: holes of an outline smaller than this many mask (working) pixels are filled, not written
MIN_HOLE_PX = 16

#: how far (mask px) an outline cuts the corner where two pixels of one object touch diagonally
_CHAMFER = 0.25

# directions of outline edges, x right and y down: east, south, west, north
_STEP = np.array([(1, 0), (0, 1), (-1, 0), (0, -1)], dtype=np.int64)


def ring_is_valid(ring: list[tuple[float, float]]) -> bool:
    """At least 3 distinct vertices and a non-zero area (what any polygon reader needs of a ring)."""
    return len(set(ring)) >= 3 and _ring_area(ring) > 0


def _trace(comp: np.ndarray) -> list[np.ndarray]:
    """The outline rings of one 8-connected object mask, along the pixels' outer edges.

    Vertex (x, y) is the corner between pixels: pixel (row r, col c) spans x in [c, c+1], y in
    [r, r+1]. Rings are open (N, 2) float arrays, the object on their right when walking in image
    coordinates, so the exterior has a positive shoelace area and holes a negative one. Only corners
    are kept. Where two pixels of the object touch only at a corner, each ring passing there cuts the
    corner by ``_CHAMFER`` px, so no ring touches itself or another ring.
    """
    a = np.pad(comp.astype(bool), 1)
    h, w = a.shape
    up, down = a[:-1, :], a[1:, :]
    left, right = a[:, :-1], a[:, 1:]
    # (rows, cols) of the edges going east, south, west and north, and the vertex each starts at
    r_e, c_e = np.nonzero(down & ~up)  # east along y = r + 1, from x = c
    r_s, c_s = np.nonzero(left & ~right)  # south along x = c + 1, from y = r
    r_w, c_w = np.nonzero(up & ~down)  # west along y = r + 1, from x = c + 1
    r_n, c_n = np.nonzero(right & ~left)  # north along x = c + 1, from y = r + 1
    starts = [
        np.stack([c_e, r_e + 1], 1),
        np.stack([c_s + 1, r_s], 1),
        np.stack([c_w + 1, r_w + 1], 1),
        np.stack([c_n + 1, r_n + 1], 1),
    ]
    dirs = [np.full(len(q), k) for k, q in enumerate((r_e, r_s, r_w, r_n))]
    s = np.concatenate(starts).astype(np.int64)
    d = np.concatenate(dirs).astype(np.int64)
    if len(d) == 0:
        return []
    e = s + _STEP[d]
    vs = s[:, 1] * (w + 1) + s[:, 0]
    ve = e[:, 1] * (w + 1) + e[:, 0]
    keys = vs * 4 + d
    order = np.argsort(keys)
    sorted_keys = keys[order]
    nxt = np.full(len(d), -1, np.int64)
    # the next edge: a left turn first (two pixels touching at a corner are one object), else
    # straight on, else right; a vertex that is no such corner has exactly one way out
    for turn in (3, 0, 1):
        want = ve * 4 + (d + turn) % 4
        pos = np.minimum(np.searchsorted(sorted_keys, want), len(d) - 1)
        found = (sorted_keys[pos] == want) & (nxt < 0)
        nxt[found] = order[pos[found]]
    saddle = np.bincount(vs, minlength=int(vs.max()) + 1)[vs] == 2  # two ways out of the start
    nxt_l = nxt.tolist()
    seen = bytearray(len(d))
    rings = []
    for e0 in range(len(d)):
        if seen[e0]:
            continue
        idx = []
        k = e0
        while not seen[k]:
            seen[k] = 1
            idx.append(k)
            k = nxt_l[k]
        ii = np.asarray(idx)
        dd, prev = d[ii], np.roll(d[ii], 1)
        corner = dd != prev
        ii, dd, prev = ii[corner], dd[corner], prev[corner]
        v = s[ii].astype(np.float64)
        sad = saddle[ii]
        a_pt = v - _CHAMFER * _STEP[prev] * sad[:, None]
        b_pt = v + _CHAMFER * _STEP[dd]
        both = np.stack([a_pt, b_pt], 1)  # (m, 2, 2)
        keep = np.stack([np.ones_like(sad), sad], 1)
        rings.append(both[keep] - 1.0)  # back to the unpadded mask's coordinates
    return rings


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a[:, 0] - o[:, 0]) * (b[:, 1] - o[:, 1]) - (a[:, 1] - o[:, 1]) * (b[:, 0] - o[:, 0])


def _within(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """r inside the bounding box of segment p-q (with a zero cross product: r on the segment)."""
    return (
        (np.minimum(p[:, 0], q[:, 0]) <= r[:, 0])
        & (r[:, 0] <= np.maximum(p[:, 0], q[:, 0]))
        & (np.minimum(p[:, 1], q[:, 1]) <= r[:, 1])
        & (r[:, 1] <= np.maximum(p[:, 1], q[:, 1]))
    )


def _inside(pt: np.ndarray, ring: np.ndarray) -> bool:
    """Point strictly inside a ring (even-odd rule; call it only for points off the ring)."""
    x, y = pt
    x0, y0 = ring[:, 0], ring[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.count_nonzero(crosses & (xs > x)) % 2)


def polygon_is_simple(rings: list[np.ndarray]) -> bool:
    """Whether rings (exterior first, then holes; open, integer-valued float arrays) form a valid
    simple polygon: every ring with >= 3 distinct vertices and non-zero area, no two edges crossing or
    touching (except neighbours at their shared vertex, which must not fold back), every hole inside
    the exterior and outside the other holes. Exact for integer coordinates below 2^26.
    """
    if not rings:
        return False
    for ring in rings:
        if len(ring) < 3 or len(np.unique(ring, axis=0)) != len(ring) or _signed_area(ring) == 0:
            return False
    p = np.concatenate(rings)
    q = np.concatenate([np.roll(r, -1, axis=0) for r in rings])
    lens = np.array([len(r) for r in rings])
    first = np.repeat(np.cumsum(lens) - lens, lens)
    last = first + np.repeat(lens, lens) - 1
    ring_of = np.repeat(np.arange(len(rings)), lens)
    n = len(p)
    # neighbours (segment i and the next of its ring) must not fold back onto each other
    nx = np.where(np.arange(n) == last, first, np.arange(n) + 1)
    u, v = q - p, q[nx] - p[nx]
    if np.any((u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0] == 0) & ((u * v).sum(1) < 0)):
        return False
    lo, hi = np.minimum(p, q), np.maximum(p, q)
    block = max(1, 2_000_000 // max(n, 1))
    for s0 in range(0, n, block):
        i = np.arange(s0, min(n, s0 + block))[:, None]
        j = np.arange(n)[None, :]
        cand = (
            (j > i)
            & (lo[i, 0] <= hi[j, 0])
            & (lo[j, 0] <= hi[i, 0])
            & (lo[i, 1] <= hi[j, 1])
            & (lo[j, 1] <= hi[i, 1])
        )
        ii, jj = np.nonzero(cand)
        ii = ii + s0
        same = ring_of[ii] == ring_of[jj]
        adjacent = same & ((jj == ii + 1) | ((ii == first[ii]) & (jj == last[ii])))
        ii, jj = ii[~adjacent], jj[~adjacent]
        if len(ii) == 0:
            continue
        a, b, c, e = p[ii], q[ii], p[jj], q[jj]
        o1, o2, o3, o4 = _cross(a, b, c), _cross(a, b, e), _cross(c, e, a), _cross(c, e, b)
        proper = (np.sign(o1) * np.sign(o2) < 0) & (np.sign(o3) * np.sign(o4) < 0)
        touch = (
            ((o1 == 0) & _within(a, b, c))
            | ((o2 == 0) & _within(a, b, e))
            | ((o3 == 0) & _within(c, e, a))
            | ((o4 == 0) & _within(c, e, b))
        )
        if np.any(proper | touch):
            return False
    for k, hole in enumerate(rings[1:], 1):
        if not _inside(hole[0], rings[0]):
            return False
        if any(_inside(hole[0], other) for m, other in enumerate(rings[1:], 1) if m != k):
            return False
    return True


def _place(rings: list[np.ndarray], scale: float, shift: tuple[float, float]) -> list[np.ndarray]:
    """Mask coordinates to level 0, rounded to 0.01 px as the files store them."""
    return [np.round(r * scale + np.asarray(shift), 2) for r in rings]


def _as_written(rings: list[np.ndarray]) -> list[np.ndarray]:
    return [np.round(r * 100).astype(np.float64) for r in rings]  # exact integers for the checks


def _outline(
    comp: np.ndarray, scale: float, shift: tuple[float, float], tolerance: float
) -> list[np.ndarray]:
    """Valid level-0 rings (exterior first) of one object mask, simplified when that stays valid."""
    import cv2

    rings = _trace(comp)
    ext = max(range(len(rings)), key=lambda k: _signed_area(rings[k]))
    exact = [rings[ext]] + [r for k, r in enumerate(rings) if k != ext and _signed_area(r) < 0]
    tries = []
    for t in (tolerance, tolerance / 2) if tolerance > 0 else ():
        simp = []
        for r in exact:
            if len(r) > 4:
                r = cv2.approxPolyDP(r.astype(np.float32).reshape(-1, 1, 2), t, True)
                r = r.reshape(-1, 2).astype(np.float64)
            simp.append(r)
        tries.append(simp)
    tries += [exact, exact[:1]]
    for cand in tries:
        placed = _place(cand, scale, shift)
        if _signed_area(placed[0]) > 0 and all(_signed_area(r) < 0 for r in placed[1:]):
            if polygon_is_simple(_as_written(placed)):
                return placed
    rows, cols = np.nonzero(comp)  # a degenerate scale: the object's box
    x0, x1, y0, y1 = cols.min(), cols.max() + 1, rows.min(), rows.max() + 1
    return _place([np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], np.float64)], scale, shift)


def mask_to_regions(
    mask: np.ndarray,
    name: str,
    scale: float = 1.0,
    offset: tuple[float, float] = (0.0, 0.0),
    min_area: float = 0.0,
    tolerance: float = 1.0,
    min_hole: float = MIN_HOLE_PX,
) -> list[Region]:
    """Polygons (with holes) of the objects (8-connected non-zero pixels) of a 2-D mask, in level 0.

    Mask pixel (row r, col c) covers level-0 x in [c, c+1] * scale + offset[0] (y likewise), and the
    outlines follow the pixels' outer edges: a 10 x 10 px square at scale 4 becomes the box 40..80,
    area 1600. ``min_area`` (level-0 square pixels) drops small objects; holes of fewer than
    ``min_hole`` mask pixels (anything inside them counted) are filled; ``tolerance`` (mask px)
    simplifies outlines (Douglas-Peucker; 0 keeps every corner), but only as far as the polygon stays
    valid. Every ring written has >= 3 distinct vertices and a non-zero area, and every polygon is
    simple (no ring crosses or touches itself or another; holes inside the exterior), checked on the
    coordinates rounded to 0.01 px as the files store them. Each region's ``pixels`` holds the area,
    centroid and box of its pixels (small holes filled), which tables should use.
    """
    import cv2

    m = np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.uint8)
    if m.ndim != 2:
        raise ValueError("mask_to_regions needs a 2-D mask")
    contours, hierarchy = cv2.findContours(m, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hier = hierarchy[0]
    depth = [-1] * len(contours)
    for i in range(len(contours)):
        chain, k = [], i
        while k != -1 and depth[k] < 0:
            chain.append(k)
            k = int(hier[k][3])
        base = depth[k] if k != -1 else -1
        for j in reversed(chain):
            base += 1
            depth[j] = base
    outers = sorted((i for i in range(len(contours)) if depth[i] % 2 == 0), key=lambda i: depth[i])
    fills: dict[int, tuple[int, int, np.ndarray]] = {}  # object -> filled small holes (crop)
    merged: set[int] = set()  # objects inside a filled hole of another
    ox, oy = offset
    out: list[tuple[int, int, Region]] = []
    for i in outers:
        c = contours[i].reshape(-1, 2)
        px, py = int(c[0][0]), int(c[0][1])
        if depth[i] >= 2:
            host = int(hier[int(hier[i][3])][3])
            fx, fy, fmask = fills.get(host, (0, 0, np.zeros((0, 0), bool)))
            inside = 0 <= py - fy < fmask.shape[0] and 0 <= px - fx < fmask.shape[1]
            if host in merged or (inside and fmask[py - fy, px - fx]):
                merged.add(i)
                continue
        x, y, w, h = cv2.boundingRect(contours[i])
        crop = np.pad(m[y : y + h, x : x + w], 1)
        _, lab = cv2.connectedComponents(crop, connectivity=8)
        comp = lab == lab[py - y + 1, px - x + 1]
        if min_hole > 0:
            _, blab, bst, _ = cv2.connectedComponentsWithStats(
                (~comp).astype(np.uint8), connectivity=4
            )
            small = bst[:, cv2.CC_STAT_AREA] < min_hole
            small[0] = False  # the object's own pixels
            small[blab[0, 0]] = False  # the outside
            if small.any():
                fill = small[blab]
                comp |= fill
                fills[i] = (x - 1, y - 1, fill)
        npx = int(comp.sum())
        if npx * scale * scale < min_area or npx == 0:
            continue
        rows, cols = np.nonzero(comp)
        x0 = ox + (x - 1) * scale
        y0 = oy + (y - 1) * scale
        stats = PixelStats(
            area=float(npx * scale * scale),
            centroid=(
                float(x0 + (cols.mean() + 0.5) * scale),
                float(y0 + (rows.mean() + 0.5) * scale),
            ),
            box=(
                float(ox + x * scale),
                float(oy + y * scale),
                float(ox + (x + w) * scale),
                float(oy + (y + h) * scale),
            ),
        )
        rings = _outline(comp, scale, (x0, y0), tolerance)
        pts = [[(float(a), float(b)) for a, b in r] for r in rings]
        out.append((py, px, Region(name, "polygon", pts[0], pts[1:], pixels=stats)))
    return [r for _, _, r in sorted(out, key=lambda t: (t[0], t[1]))]  # top to bottom


def ellipse_points(
    box: tuple[float, float, float, float], n: int = 64
) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return [
        (cx + rx * math.cos(2 * math.pi * k / n), cy + ry * math.sin(2 * math.pi * k / n))
        for k in range(n)
    ]


def _rounded(ring: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(round(float(x), 2), round(float(y), 2)) for x, y in ring]


def _closed(ring: list[tuple[float, float]]) -> list[list[float]]:
    pts = [[x, y] for x, y in _rounded(ring)]
    return pts + [pts[0]] if pts and pts[0] != pts[-1] else pts


def _written_rings(
    r: Region,
) -> tuple[list[tuple[float, float]], list[list[tuple[float, float]]]] | None:
    """A polygon's rings as files store them (0.01 px), without the holes no reader could build;
    None when the exterior itself is degenerate (< 3 distinct vertices or no area): not written."""
    ext = _rounded(r.points)
    if len(ext) > 1 and ext[0] == ext[-1]:
        ext = ext[:-1]
    if not ring_is_valid(ext):
        return None
    holes = []
    for h in r.holes:
        hh = _rounded(h)
        if len(hh) > 1 and hh[0] == hh[-1]:
            hh = hh[:-1]
        if ring_is_valid(hh):
            holes.append(hh)
    return ext, holes


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def write_geojson(
    path: str | os.PathLike[str],
    regions: list[Region],
    classes: list[str] | None = None,
    object_type: str = "annotation",
) -> Path:
    """Write ``regions`` as a QuPath-readable GeoJSON FeatureCollection (atomically).

    QuPath's import reads only ``objectType``, ``name``, ``color``, ``classification``,
    ``isLocked``, ``measurements`` (name -> number) and ``metadata`` of a feature's properties, and
    ``isEllipse`` of its geometry. So every numeric property and the score are copied into
    ``measurements`` (the keys stay at the top level too, for other readers), a ``name`` property
    becomes the object's name, and ellipses carry ``"isEllipse": true`` in their geometry (QuPath
    makes an ellipse ROI of the polygon's box). Polygons with a degenerate exterior are not written,
    degenerate holes are dropped.
    """
    from glomssl.fsutil import atomic_write_text

    classes = classes or sorted({r.name for r in regions})
    features = []
    for r in regions:
        geometry: dict[str, Any] = {"type": "Polygon"}
        if r.kind == "ellipse":
            geometry["coordinates"] = [_closed(ellipse_points(r.bbox()))]
            geometry["isEllipse"] = True
        else:
            rings = _written_rings(r)
            if rings is None:
                continue
            geometry["coordinates"] = [_closed(rings[0])] + [_closed(h) for h in rings[1]]
        props: dict[str, Any] = {
            "objectType": object_type,
            "classification": {"name": r.name, "color": list(class_color(r.name, classes))},
            **r.properties,
        }
        given = r.properties.get("measurements")
        measurements = dict(given) if isinstance(given, dict) else {}
        measurements.update({k: v for k, v in r.properties.items() if _is_number(v)})
        if r.kind == "ellipse":
            props["shape"] = "ellipse"
            props["box"] = [round(v, 2) for v in r.bbox()]
        if r.score is not None:
            props["score"] = measurements["score"] = round(float(r.score), 6)
        measurements = {k: v for k, v in measurements.items() if _is_number(v)}
        if measurements:
            props["measurements"] = measurements
        elif "measurements" in props:
            del props["measurements"]
        features.append({"type": "Feature", "geometry": geometry, "properties": props})
    doc = {"type": "FeatureCollection", "features": features}
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n")
    return Path(path)


def read_geojson(path: str | os.PathLike[str]) -> list[Region]:
    """Regions of a GeoJSON file (Polygon/MultiPolygon features; ellipses from their box).

    Measurements that only repeat a top-level property or the score (as :func:`write_geojson`
    writes them) are dropped, others are kept in ``properties["measurements"]``; a geometry with
    ``isEllipse`` (QuPath's export) is read as the ellipse of its box.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise GlomsslError(f"{path} is not a readable GeoJSON file ({exc})") from exc
    feats = doc.get("features", []) if isinstance(doc, dict) else doc
    out = []
    for f in feats:
        props = dict(f.get("properties") or {})
        cls = props.pop("classification", {}) or {}
        name = str(cls.get("name", ""))
        score = props.pop("score", None)
        props.pop("objectType", None)
        meas = props.pop("measurements", None)
        if isinstance(meas, dict):
            if score is None and _is_number(meas.get("score")):
                score = meas["score"]
            rest = {
                k: v
                for k, v in meas.items()
                if not (k == "score" and v == score) and not (k in props and props[k] == v)
            }
            if rest:
                props["measurements"] = rest
        elif meas is not None:
            props["measurements"] = meas
        geom = f.get("geometry") or {}
        polys = (
            [geom["coordinates"]]
            if geom.get("type") == "Polygon"
            else geom.get("coordinates", [])
            if geom.get("type") == "MultiPolygon"
            else []
        )
        for rings in polys:
            if props.get("shape") == "ellipse" or geom.get("isEllipse") is True:
                if "box" in props:
                    x0, y0, x1, y1 = props["box"]
                else:
                    xs = [float(p[0]) for p in rings[0]]
                    ys = [float(p[1]) for p in rings[0]]
                    x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
                extra = {k: v for k, v in props.items() if k not in ("shape", "box")}
                out.append(Region(name, "ellipse", [(x0, y0), (x1, y1)], [], score, extra))
                continue
            ext = [(float(x), float(y)) for x, y in rings[0][:-1]]
            holes = [[(float(x), float(y)) for x, y in h[:-1]] for h in rings[1:]]
            out.append(Region(name, "polygon", ext, holes, score, props))
    return out


def bgr_int(rgb: tuple[int, int, int]) -> int:
    """ImageScope's LineColor: the decimal value of 0xBBGGRR."""
    r, g, b = rgb
    return int(r) + 256 * int(g) + 65536 * int(b)


def write_imagescope_xml(
    path: str | os.PathLike[str],
    regions: list[Region],
    classes: list[str],
    mpp: float | None = None,
) -> Path:
    """Write an Aperio ImageScope XML with one layer per class in ``classes`` (all of them).

    A polygon's holes follow it in the same layer as regions with ``NegativeROA="1"`` (Aperio's
    negative regions, cut out of the region they lie in). Every region's ``Area`` (and
    ``AreaMicrons``) is the area of the vertices it lists: a polygon's outer ring, a hole's ring, an
    ellipse's box. Polygons with a degenerate exterior (< 3 distinct vertices or no area) are not
    written, degenerate holes are dropped.
    """
    from glomssl.fsutil import atomic_write_bytes

    unknown = sorted({r.name for r in regions} - set(classes))
    if unknown:
        raise GlomsslError(f"regions of classes {unknown} have no layer; add them to the classes")
    root = ET.Element("Annotations", {"MicronsPerPixel": f"{mpp:g}" if mpp else "0"})
    rid = 0

    def add(regs: ET.Element, kind: str, pts: list[tuple[float, float]], text: str,
            negative: bool) -> None:  # fmt: skip
        nonlocal rid
        rid += 1
        if kind == "ellipse":
            (x0, y0), (x1, y1) = pts[0], pts[-1]
            area = math.pi * abs(x1 - x0) * abs(y1 - y0) / 4
        else:
            area = _ring_area(pts)
        el = ET.SubElement(
            regs,
            "Region",
            {
                "Id": str(rid),
                "Type": "2" if kind == "ellipse" else "0",
                "Zoom": "1",
                "Selected": "0",
                "ImageLocation": "",
                "ImageFocus": "-1",
                "Length": "0",
                "Area": f"{area:.1f}",
                "LengthMicrons": "0",
                "AreaMicrons": f"{area * mpp * mpp:.1f}" if mpp else "0",
                "Text": text,
                "NegativeROA": "1" if negative else "0",
                "InputRegionId": "0",
                "Analyze": "1",
                "DisplayId": str(rid),
            },
        )
        ET.SubElement(el, "Attributes")
        verts = ET.SubElement(el, "Vertices")
        for x, y in pts:
            ET.SubElement(verts, "Vertex", {"X": f"{x:.2f}", "Y": f"{y:.2f}", "Z": "0"})

    for i, name in enumerate(classes, start=1):
        ann = ET.SubElement(
            root,
            "Annotation",
            {
                "Id": str(i),
                "Name": name,
                "ReadOnly": "0",
                "LineColorReadOnly": "0",
                "Incremental": "0",
                "Type": "4",
                "LineColor": str(bgr_int(class_color(name, classes))),
                "Visible": "1",
                "Selected": "0",
                "MarkupImagePath": "",
                "MacroName": "",
            },
        )
        attrs = ET.SubElement(ann, "Attributes")
        ET.SubElement(attrs, "Attribute", {"Name": name, "Id": "0", "Value": ""})
        regs = ET.SubElement(ann, "Regions")
        ET.SubElement(regs, "RegionAttributeHeaders")
        for r in (r for r in regions if r.name == name):
            text = "" if r.score is None else f"{r.score:.4f}"
            if r.kind == "ellipse":
                add(regs, "ellipse", _rounded(r.points), text, False)
                continue
            rings = _written_rings(r)
            if rings is None:
                continue
            add(regs, "polygon", rings[0], text, False)
            for hole in rings[1]:
                add(regs, "polygon", hole, "", True)
        ET.SubElement(ann, "Plots")
    ET.indent(root)
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    atomic_write_bytes(path, data + b"\n")
    return Path(path)


def read_imagescope_xml(path: str | os.PathLike[str]) -> tuple[list[str], list[Region], float]:
    """(layer names in order, regions, MicronsPerPixel) of an ImageScope XML file.

    A negative region (``NegativeROA="1"``) becomes a hole of the polygon of its layer that holds
    its first vertex (the latest such, as :func:`write_imagescope_xml` writes holes right after
    their polygon); one that lies in no polygon is ignored.
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise GlomsslError(f"{path} is not a readable ImageScope XML file ({exc})") from exc
    classes, regions = [], []
    for ann in root.iter("Annotation"):
        name = ann.get("Name", "")
        classes.append(name)
        layer: list[Region] = []
        for reg in ann.iter("Region"):
            pts = [(float(v.get("X", 0)), float(v.get("Y", 0))) for v in reg.iter("Vertex")]
            kind = "ellipse" if reg.get("Type") == "2" else "polygon"
            if reg.get("NegativeROA") == "1":
                hosts = [
                    r
                    for r in layer
                    if r.kind == "polygon" and pts and len(r.points) >= 3
                    and _inside(np.asarray(pts[0]), np.asarray(r.points, dtype=np.float64))
                ]  # fmt: skip
                if hosts and kind == "polygon":
                    hosts[-1].holes.append(pts)
                continue
            text = reg.get("Text") or ""
            score = float(text) if text.replace(".", "", 1).isdigit() else None
            layer.append(Region(name, kind, pts, [], score))
        regions += layer
    return classes, regions, float(root.get("MicronsPerPixel", "0") or 0)
