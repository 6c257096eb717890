"""Annotation files pathologists open: QuPath GeoJSON and Aperio ImageScope XML, plus mask polygons.

Everything here is in level-0 slide pixels. A :class:`Region` is one object: a polygon (exterior ring,
optional holes) or an ellipse (its bounding box), with a class name, an optional score and free
properties. Writers and readers round-trip: ``read_geojson(write_geojson(regions))`` gives the same
regions (up to float formatting), and the same for the XML.

- GeoJSON: a ``FeatureCollection``; each feature's ``properties`` carry QuPath's ``objectType``
  (``annotation`` or ``detection``) and ``classification`` (``name``, ``color`` as [r, g, b]); ellipses are
  written as 64-point polygons with ``"shape": "ellipse"`` (GeoJSON has no ellipse).
- ImageScope XML: ``<Annotations MicronsPerPixel=..>`` with ONE ``<Annotation>`` layer per class, in
  the order given, every class written even when it has no region (Glo-In-One's own XML silently lost a
  class); ``LineColor`` is the decimal BGR integer ImageScope expects; polygons are ``Type="0"``
  regions, ellipses ``Type="2"`` with their two bounding-box corners; the score goes in ``Text``.
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


@dataclass
class Region:
    """One annotated object in level-0 pixels."""

    name: str  # class name
    kind: str  # "polygon" or "ellipse"
    points: list[tuple[float, float]]  # polygon: exterior ring (open); ellipse: two box corners
    holes: list[list[tuple[float, float]]] = field(default_factory=list)
    score: float | None = None
    properties: dict[str, Any] = field(default_factory=dict)

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


def _ring_area(ring: list[tuple[float, float]]) -> float:
    if len(ring) < 3:
        return 0.0
    a = np.asarray(ring, dtype=np.float64)
    x, y = a[:, 0], a[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def class_color(name: str, classes: list[str]) -> tuple[int, int, int]:
    i = classes.index(name) if name in classes else len(classes)
    return PALETTE[i % len(PALETTE)]


def mask_to_regions(
    mask: np.ndarray,
    name: str,
    scale: float = 1.0,
    offset: tuple[float, float] = (0.0, 0.0),
    min_area: float = 0.0,
    tolerance: float = 1.0,
) -> list[Region]:
    """Polygons (with holes) of the True pixels of a 2-D mask, mapped to level 0.

    ``scale`` multiplies coordinates (level-0 px per mask px), ``offset`` is added after; regions
    smaller than ``min_area`` level-0 square pixels are dropped; ``tolerance`` (mask px) simplifies
    outlines (Douglas-Peucker; 0 keeps every vertex).
    """
    import cv2

    m = np.ascontiguousarray(mask.astype(np.uint8))
    if m.ndim != 2:
        raise ValueError("mask_to_regions needs a 2-D mask")
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hier = hierarchy[0]

    def ring(c: np.ndarray) -> list[tuple[float, float]]:
        if tolerance > 0 and len(c) > 4:
            c = cv2.approxPolyDP(c, tolerance, True)
        pts = c.reshape(-1, 2).astype(np.float64) * scale + np.asarray(offset)
        return [(float(x), float(y)) for x, y in pts]

    out: list[Region] = []
    for i, c in enumerate(contours):
        if hier[i][3] != -1:  # a hole: handled with its parent
            continue
        holes = []
        child = hier[i][2]
        while child != -1:
            if len(contours[child]) >= 3:
                holes.append(ring(contours[child]))
            child = hier[child][0]
        if len(c) < 3:  # a single pixel or a line: keep it as a tiny square
            x, y, w, h = cv2.boundingRect(c)
            c = np.array([[[x, y]], [[x + w, y]], [[x + w, y + h]], [[x, y + h]]], np.int32)
        r = Region(name, "polygon", ring(c), holes)
        if r.area() >= min_area:
            out.append(r)
    return out


def ellipse_points(
    box: tuple[float, float, float, float], n: int = 64
) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return [
        (cx + rx * math.cos(2 * math.pi * k / n), cy + ry * math.sin(2 * math.pi * k / n))
        for k in range(n)
    ]


def _closed(ring: list[tuple[float, float]]) -> list[list[float]]:
    pts = [[round(x, 2), round(y, 2)] for x, y in ring]
    return pts + [pts[0]] if pts and pts[0] != pts[-1] else pts


def write_geojson(
    path: str | os.PathLike[str],
    regions: list[Region],
    classes: list[str] | None = None,
    object_type: str = "annotation",
) -> Path:
    """Write ``regions`` as a QuPath-readable GeoJSON FeatureCollection (atomically)."""
    from glomssl.fsutil import atomic_write_text

    classes = classes or sorted({r.name for r in regions})
    features = []
    for r in regions:
        if r.kind == "ellipse":
            rings = [_closed(ellipse_points(r.bbox()))]
        else:
            rings = [_closed(r.points)] + [_closed(h) for h in r.holes]
        props: dict[str, Any] = {
            "objectType": object_type,
            "classification": {"name": r.name, "color": list(class_color(r.name, classes))},
            **r.properties,
        }
        if r.kind == "ellipse":
            props["shape"] = "ellipse"
            props["box"] = [round(v, 2) for v in r.bbox()]
        if r.score is not None:
            props["score"] = round(float(r.score), 6)
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": rings},
                "properties": props,
            }
        )
    doc = {"type": "FeatureCollection", "features": features}
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n")
    return Path(path)


def read_geojson(path: str | os.PathLike[str]) -> list[Region]:
    """Regions of a GeoJSON file (Polygon/MultiPolygon features; ellipses from their box)."""
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
        geom = f.get("geometry") or {}
        polys = (
            [geom["coordinates"]]
            if geom.get("type") == "Polygon"
            else geom.get("coordinates", [])
            if geom.get("type") == "MultiPolygon"
            else []
        )
        for rings in polys:
            if props.get("shape") == "ellipse":
                x0, y0, x1, y1 = props["box"]
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
    """Write an Aperio ImageScope XML with one layer per class in ``classes`` (all of them)."""
    from glomssl.fsutil import atomic_write_bytes

    unknown = sorted({r.name for r in regions} - set(classes))
    if unknown:
        raise GlomsslError(f"regions of classes {unknown} have no layer; add them to the classes")
    root = ET.Element("Annotations", {"MicronsPerPixel": f"{mpp:g}" if mpp else "0"})
    rid = 0
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
            rid += 1
            region_type = "2" if r.kind == "ellipse" else "0"
            text = "" if r.score is None else f"{r.score:.4f}"
            el = ET.SubElement(
                regs,
                "Region",
                {
                    "Id": str(rid),
                    "Type": region_type,
                    "Zoom": "1",
                    "Selected": "0",
                    "ImageLocation": "",
                    "ImageFocus": "-1",
                    "Length": "0",
                    "Area": f"{r.area():.1f}",
                    "LengthMicrons": "0",
                    "AreaMicrons": f"{r.area() * mpp * mpp:.1f}" if mpp else "0",
                    "Text": text,
                    "NegativeROA": "0",
                    "InputRegionId": "0",
                    "Analyze": "1",
                    "DisplayId": str(rid),
                },
            )
            ET.SubElement(el, "Attributes")
            verts = ET.SubElement(el, "Vertices")
            pts = list(r.points) if r.kind == "ellipse" else list(r.points)
            for x, y in pts:
                ET.SubElement(verts, "Vertex", {"X": f"{x:.2f}", "Y": f"{y:.2f}", "Z": "0"})
        ET.SubElement(ann, "Plots")
    ET.indent(root)
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    atomic_write_bytes(path, data + b"\n")
    return Path(path)


def read_imagescope_xml(path: str | os.PathLike[str]) -> tuple[list[str], list[Region], float]:
    """(layer names in order, regions, MicronsPerPixel) of an ImageScope XML file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise GlomsslError(f"{path} is not a readable ImageScope XML file ({exc})") from exc
    classes, regions = [], []
    for ann in root.iter("Annotation"):
        name = ann.get("Name", "")
        classes.append(name)
        for reg in ann.iter("Region"):
            pts = [(float(v.get("X", 0)), float(v.get("Y", 0))) for v in reg.iter("Vertex")]
            kind = "ellipse" if reg.get("Type") == "2" else "polygon"
            text = reg.get("Text") or ""
            score = float(text) if text.replace(".", "", 1).isdigit() else None
            regions.append(Region(name, kind, pts, [], score))
    return classes, regions, float(root.get("MicronsPerPixel", "0") or 0)
