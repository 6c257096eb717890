"""What QuPath keeps of our GeoJSON properties.

QuPath's GeoJSON import (``QuPathTypeAdapters.parseObject``) reads only ``objectType``, ``name``,
``color``, ``classification``, ``isLocked``, ``isMissing``, ``measurements`` (name -> number, every
value a number) and ``metadata`` from a feature's properties, and ``isEllipse`` from its geometry
(``ROITypeAdapters``). Anything else (``score``, ``id``, ``box``, ``shape``) is dropped on import, so
the numbers must also be measurements.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from glomssl.annotations import Region, read_geojson, write_geojson
from glomssl.slidechain.outputs import Glomerulus, write_annotations

QUPATH_PROPERTIES = {
    "objectType",
    "name",
    "color",
    "classification",
    "isLocked",
    "isMissing",
    "measurements",
    "metadata",
}


def qupath_view(feature: dict[str, Any]) -> dict[str, Any]:
    """The part of a feature QuPath imports, with its type checks (a measurement that is not a
    finite number fails the whole import)."""
    props = feature["properties"]
    kept = {k: v for k, v in props.items() if k in QUPATH_PROPERTIES}
    for k, v in kept.get("measurements", {}).items():
        assert isinstance(k, str)
        assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), (k, v)
    cls = kept.get("classification")
    assert isinstance(cls, dict) and isinstance(cls["name"], str)
    assert len(cls["color"]) == 3 and all(isinstance(c, int) for c in cls["color"])
    kept["isEllipse"] = feature["geometry"].get("isEllipse", False) is True
    return kept


def test_numbers_reach_qupath_as_measurements_and_round_trip(tmp_path: Path) -> None:
    regs = [
        Region("GS", "ellipse", [(100, 100), (140, 120)], [], 0.75, {"id": 3, "name": "glomerulus 3"}),
        Region("Tuft", "polygon", [(0, 0), (10, 0), (10, 10), (0, 10)], [[(2, 2), (4, 2), (4, 4)]],
               None, {"id": 4, "note": "text", "flag": True, "bad": float("nan")}),
        Region("Tuft", "polygon", [(0, 0), (10, 0), (0, 10)], [], 0.5,
               {"measurements": {"Area um^2": 12.5}}),
    ]  # fmt: skip
    p = write_geojson(tmp_path / "a.geojson", regs, classes=["GS", "Tuft"], object_type="detection")
    feats = json.loads(p.read_text())["features"]
    views = [qupath_view(f) for f in feats]
    assert views[0]["name"] == "glomerulus 3"
    assert views[0]["measurements"] == {"id": 3, "score": 0.75}
    assert views[0]["isEllipse"] and views[0]["objectType"] == "detection"
    assert views[0]["classification"]["name"] == "GS"
    assert views[1]["measurements"] == {"id": 4}  # text, booleans and NaN are no measurements
    assert not views[1]["isEllipse"]
    assert views[2]["measurements"] == {"Area um^2": 12.5, "score": 0.5}
    # the plain keys stay for other readers
    assert feats[0]["properties"]["score"] == 0.75 and feats[0]["properties"]["id"] == 3
    assert feats[0]["properties"]["shape"] == "ellipse"
    back = read_geojson(p)
    assert back[0] == Region("GS", "ellipse", [(100, 100), (140, 120)], [], 0.75,
                             {"id": 3, "name": "glomerulus 3"})  # fmt: skip
    assert back[1].properties["id"] == 4 and back[1].properties["note"] == "text"
    assert "measurements" not in back[1].properties and back[1].holes == regs[1].holes
    assert back[2].score == 0.5 and back[2].properties == {"measurements": {"Area um^2": 12.5}}


def test_a_qupath_export_is_read_back(tmp_path: Path) -> None:
    """QuPath writes measurements only, and an ellipse as a polygon flagged in its geometry."""
    ring = [[10.0, 20.0], [30.0, 20.0], [30.0, 26.0], [10.0, 26.0], [10.0, 20.0]]
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring], "isEllipse": True},
         "properties": {"objectType": "annotation", "name": "g1",
                        "classification": {"name": "GS", "color": [1, 2, 3]},
                        "measurements": {"score": 0.9, "Area um^2": 4.5}}},
    ]}  # fmt: skip
    p = tmp_path / "q.geojson"
    p.write_text(json.dumps(doc))
    (r,) = read_geojson(p)
    assert r.kind == "ellipse" and r.bbox() == (10, 20, 30, 26) and r.score == 0.9
    assert r.properties == {"name": "g1", "measurements": {"Area um^2": 4.5}}


def test_wsi_annotations_carry_name_id_and_score_into_qupath(tmp_path: Path) -> None:
    outline = Region("x", "polygon", [(90, 90), (130, 90), (130, 130), (90, 130)])
    gloms = [
        Glomerulus(12, (80, 80, 140, 140), 0.8125, "GS", contour=[outline]),
        Glomerulus(13, (300, 300, 340, 350), 0.5, "nonGS"),
    ]
    _, gj = write_annotations(tmp_path, "slide", gloms, ["GS", "nonGS"], 0.5)
    feats = json.loads(gj.read_text())["features"]
    views = [qupath_view(f) for f in feats]
    det = [v for v in views if v["objectType"] == "detection"]
    ann = [v for v in views if v["objectType"] == "annotation"]
    assert [v["name"] for v in det] == ["glomerulus 12", "glomerulus 13"]
    assert [v["measurements"] for v in det] == [
        {"id": 12, "score": 0.8125},
        {"id": 13, "score": 0.5},
    ]
    assert all(v["isEllipse"] for v in det) and [v["classification"]["name"] for v in det] == [
        "GS",
        "nonGS",
    ]
    assert [(v["name"], v["measurements"]) for v in ann] == [("glomerulus 12 outline", {"id": 12})]
    assert [v["classification"]["name"] for v in ann] == ["segmentation"]
    back = read_geojson(gj)  # glomssl still reads its own file whole
    assert [r.properties["id"] for r in back] == [12, 13, 12]
    assert [r.score for r in back] == [0.8125, 0.5, None]
    assert back[0].kind == "ellipse" and back[0].bbox() == pytest.approx((80, 80, 140, 140))
