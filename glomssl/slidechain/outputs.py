"""What ``glomssl wsi`` writes for each slide, all in level-0 pixels, each file atomically.

- ``SLIDE.xml``: Aperio ImageScope annotations, one layer per class (every class, none dropped); each
  glomerulus an ellipse region (its circle) with the detection score as text; segmentation contours,
  when a segmenter ran, in one more layer of polygons; ``MicronsPerPixel`` from the slide.
- ``SLIDE.geojson``: QuPath features: each glomerulus a detection (its circle as a polygon marked
  ``isEllipse``, class, ``name`` "glomerulus ID", ``id`` and ``score`` as QuPath measurements and as
  plain properties), each contour an annotation polygon with the same id (named "glomerulus ID
  outline").
- ``glomeruli.csv``: one row per glomerulus (id, centre, radius, box, diameter and area in microns
  when the resolution is known, class, probabilities, score, crop path).
- ``summary.json``: counts per class (every class), areas, the options and timings.
- ``overview.png``: a thumbnail with each glomerulus drawn as a circle in its class colour.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glomssl.annotations import PALETTE, Region, write_geojson, write_imagescope_xml

DETECTION_CLASS = "glomerulus"
CONTOUR_LAYER = "segmentation"


@dataclass
class Glomerulus:
    """One glomerulus of a slide, level-0 pixels."""

    id: int
    box: tuple[float, float, float, float]
    score: float
    cls: str = DETECTION_CLASS
    probs: list[float] = field(default_factory=list)
    crop: str = ""
    contour: list[Region] = field(default_factory=list)  # segmentation polygons (level 0)
    mask_area_px: float | None = None  # segmented area, level-0 square pixels

    @property
    def circle(self) -> tuple[float, float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2


def regions(gloms: list[Glomerulus]) -> list[Region]:
    """Ellipse regions (the circles) per glomerulus, then contour polygons.

    Each carries the glomerulus's ``id`` and a ``name`` ("glomerulus 12", "glomerulus 12 outline"):
    QuPath shows the name, and takes the id and the score as measurements.
    """
    out = []
    for g in gloms:
        cx, cy, r = g.circle
        props = {"id": g.id, "name": f"glomerulus {g.id}"}
        out.append(
            Region(g.cls, "ellipse", [(cx - r, cy - r), (cx + r, cy + r)], [], g.score, props)
        )
    for g in gloms:
        for c in g.contour:
            props = {"id": g.id, "name": f"glomerulus {g.id} outline"}
            out.append(Region(CONTOUR_LAYER, "polygon", c.points, c.holes, None, props))
    return out


def write_annotations(
    folder: Path, name: str, gloms: list[Glomerulus], classes: list[str], mpp: float | None
) -> tuple[Path, Path]:
    """``SLIDE.xml`` (every class layer) and ``SLIDE.geojson``."""
    layers = list(classes) + ([CONTOUR_LAYER] if any(g.contour for g in gloms) else [])
    regs = regions(gloms)
    xml = write_imagescope_xml(folder / f"{name}.xml", regs, layers, mpp)
    det = [r for r in regs if r.name != CONTOUR_LAYER]
    con = [r for r in regs if r.name == CONTOUR_LAYER]
    gj = folder / f"{name}.geojson"
    write_geojson(gj, det, layers, object_type="detection")
    if con:  # contours are annotations: append them to the same collection
        doc = json.loads(gj.read_text(encoding="utf-8"))
        tmp = folder / f".{name}.contours.geojson"
        write_geojson(tmp, con, layers, object_type="annotation")
        doc["features"] += json.loads(tmp.read_text(encoding="utf-8"))["features"]
        tmp.unlink()
        from glomssl.fsutil import atomic_write_text

        atomic_write_text(gj, json.dumps(doc, separators=(",", ":")) + "\n")
    return xml, gj


def table_rows(
    gloms: list[Glomerulus], classes: list[str], mpp: float | None
) -> list[dict[str, Any]]:
    rows = []
    for g in gloms:
        cx, cy, r = g.circle
        row: dict[str, Any] = {
            "id": g.id,
            "x": round(cx, 1),
            "y": round(cy, 1),
            "radius": round(r, 1),
            "x0": round(g.box[0], 1),
            "y0": round(g.box[1], 1),
            "x1": round(g.box[2], 1),
            "y1": round(g.box[3], 1),
            "diameter_um": round(2 * r * mpp, 1) if mpp else "",
            "area_um2": "",
            "area_source": "",
            "class": g.cls,
            "score": round(g.score, 4),
        }
        if mpp:
            if g.mask_area_px is not None:
                row["area_um2"], row["area_source"] = round(g.mask_area_px * mpp * mpp, 1), "mask"
            else:
                row["area_um2"], row["area_source"] = (
                    round(math.pi * r * r * mpp * mpp, 1),
                    "circle",
                )
        for c, p in zip(classes, g.probs):
            row[f"p_{c}"] = round(float(p), 4)
        row["crop"] = g.crop
        rows.append(row)
    return rows


def write_table(path: Path, gloms: list[Glomerulus], classes: list[str], mpp: float | None) -> Path:
    from glomssl.fsutil import atomic_write_text

    rows = table_rows(gloms, classes, mpp)
    head = ["id", "x", "y", "radius", "x0", "y0", "x1", "y1", "diameter_um", "area_um2"]
    head += ["area_source", "class", "score"]
    head += [f"p_{c}" for c in classes if any(g.probs for g in gloms)] + ["crop"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=head, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return path


def class_summary(gloms: list[Glomerulus], classes: list[str], mpp: float | None) -> dict[str, Any]:
    counts = {c: 0 for c in classes}
    areas: dict[str, list[float]] = {c: [] for c in classes}
    for row, g in zip(table_rows(gloms, classes, mpp), gloms):
        counts[g.cls] = counts.get(g.cls, 0) + 1
        if row["area_um2"] != "":
            areas.setdefault(g.cls, []).append(float(row["area_um2"]))
    return {
        "glomeruli": len(gloms),
        "counts": counts,
        "mean_area_um2": {c: round(float(np.mean(a)), 1) if a else None for c, a in areas.items()},
    }


def write_overview(
    path: Path, slide: Any, gloms: list[Glomerulus], classes: list[str], max_side: int = 2048
) -> Path:
    """A thumbnail of the slide with each glomerulus's circle in its class colour."""
    from PIL import ImageDraw

    from glomssl.annotations import class_color
    from glomssl.data.images import save_png

    w0, h0 = slide.dimensions
    f = min(1.0, max_side / max(w0, h0))
    thumb = slide.get_thumbnail((max(1, int(w0 * f)), max(1, int(h0 * f)))).convert("RGB")
    fx, fy = thumb.width / w0, thumb.height / h0
    draw = ImageDraw.Draw(thumb)
    width = max(2, int(round(max(thumb.size) / 500)))
    for g in gloms:
        cx, cy, r = g.circle
        color = class_color(g.cls, classes) if g.cls in classes else PALETTE[0]
        draw.ellipse(
            [(cx - r) * fx, (cy - r) * fy, (cx + r) * fx, (cy + r) * fy], outline=color, width=width
        )
    save_png(path, thumb)
    return path
