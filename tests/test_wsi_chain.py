"""``glomssl wsi``: the chain on pyramidal TIFFs made here, its files, bad input, shards, models.

Most tests swap the detector for a colour threshold (blue discs are the "glomeruli"), so the expected
output is known exactly; ``test_chain_with_the_shipped_detector`` runs the real detector end to end.
"""

from __future__ import annotations

import csv
import json
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from glomssl.annotations import read_geojson, read_imagescope_xml
from glomssl.cli import cli
from glomssl.errors import GlomsslError
from glomssl.slidechain.chain import WsiConfig, run_wsi
from glomssl.slidechain.pyramid import write_pyramid

MPP = 0.5
SIZE = 1600  # level-0 side; 400 px at the working 2 um/px
DISCS = [(500, 420, 110), (1100, 700, 140), (640, 1180, 120)]  # level-0 (cx, cy, r)


def make_slide(
    path: Path,
    discs: list[tuple[int, int, int]] = DISCS,
    tissue: bool = True,
    mpp: float | None = MPP,
    seed: int = 0,
) -> Path:
    rng = np.random.default_rng(seed)
    img = np.full((SIZE, SIZE, 3), (243, 241, 245), np.uint8)
    if tissue:
        core = rng.integers(-12, 12, (SIZE - 200, SIZE - 200, 3)) + np.array([205, 120, 170])
        img[100:-100, 100:-100] = np.clip(core, 0, 255).astype(np.uint8)
    for cx, cy, r in discs:
        cv2.circle(img, (cx, cy), r, (40, 50, 200), -1)
    return write_pyramid(path, lambda x, y, w, h: _window(img, x, y, w, h), SIZE, SIZE, mpp)


def _window(img: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    out = np.full((h, w, 3), 243, np.uint8)
    sub = img[y : y + h, x : x + w]
    out[: sub.shape[0], : sub.shape[1]] = sub
    return out


def test_outputs_of_one_slide(tmp_path: Path, blue: str) -> None:
    slide = make_slide(tmp_path / "kidney.tif")
    s = run_wsi(
        WsiConfig(slides=[str(slide)], out=str(tmp_path / "out"), detector=blue, quiet=True)
    )
    assert (s["done"], s["glomeruli"], s["skipped"]) == (1, 3, [])
    d = tmp_path / "out" / "kidney"
    rows = list(csv.DictReader((d / "glomeruli.csv").open()))
    assert len(rows) == 3
    for cx, cy, r in DISCS:  # level-0 centres and radii, diameter and area in microns
        row = min(rows, key=lambda q: abs(float(q["x"]) - cx) + abs(float(q["y"]) - cy))
        assert abs(float(row["x"]) - cx) <= 6 and abs(float(row["y"]) - cy) <= 6
        assert abs(float(row["radius"]) - r) <= 6
        assert float(row["diameter_um"]) == pytest.approx(2 * float(row["radius"]) * MPP, abs=0.1)
        assert float(row["area_um2"]) == pytest.approx(
            np.pi * (float(row["radius"]) * MPP) ** 2, rel=1e-3
        )
        assert row["class"] == "glomerulus" and (d / row["crop"]).is_file()
    crop = cv2.imread(str(d / rows[0]["crop"]))
    assert crop.shape == (320, 320, 3)  # 320 um at 1 um/px
    # ImageScope XML: parses, MicronsPerPixel from the slide, one layer, ellipses with 2 vertices
    classes, regions, mpp = read_imagescope_xml(d / "kidney.xml")
    assert classes == ["glomerulus"] and mpp == MPP and len(regions) == 3
    assert all(r.kind == "ellipse" and len(r.points) == 2 for r in regions)
    # GeoJSON: valid geometry (closed rings of finite numbers inside the slide), round trip
    doc = json.loads((d / "kidney.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 3
    for f in doc["features"]:
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Polygon"
        ring = np.array(f["geometry"]["coordinates"][0], float)
        assert ring.shape[1] == 2 and (ring[0] == ring[-1]).all() and np.isfinite(ring).all()
        assert (ring >= -1).all() and (ring <= SIZE + 1).all()
        assert f["properties"]["objectType"] == "detection"
        assert f["properties"]["classification"]["name"] == "glomerulus"
    back = read_geojson(d / "kidney.geojson")
    assert sorted(r.properties["id"] for r in back) == [1, 2, 3]
    summary = json.loads((d / "summary.json").read_text())
    assert summary["counts"] == {"glomerulus": 3} and summary["working_mpp"] == pytest.approx(2.0)
    ov = cv2.imread(str(d / "overview.png"))
    assert ov is not None and ov.shape[:2] == (SIZE, SIZE)  # under 2048 px: full size
    assert json.loads((tmp_path / "out" / "run_summary.json").read_text())["done"] == 1


def test_rerun_resumes_and_refuses_other_runs(tmp_path: Path, blue: str) -> None:
    slide = make_slide(tmp_path / "a.tif")
    cfg = WsiConfig(slides=[str(slide)], out=str(tmp_path / "out"), detector=blue, quiet=True)
    run_wsi(cfg)
    stamp = (tmp_path / "out" / "a" / "summary.json").stat().st_mtime_ns
    again = run_wsi(cfg)  # finished slides are not redone
    assert (
        again["done"] == 1 and (tmp_path / "out" / "a" / "summary.json").stat().st_mtime_ns == stamp
    )
    with pytest.raises(GlomsslError, match="another run's results.*conf"):
        run_wsi(WsiConfig(**{**cfg.__dict__, "conf": 0.7}))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(GlomsslError, match="not empty"):
        run_wsi(WsiConfig(**{**cfg.__dict__, "out": str(tmp_path / "busy")}))


def test_bad_slides_are_skipped_with_a_reason(tmp_path: Path, blue: str) -> None:
    good = make_slide(tmp_path / "good.tif")
    blank = make_slide(tmp_path / "blank.tif", discs=[], tissue=False)
    broken = make_slide(tmp_path / "broken.tif")
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 3])  # a truncated download
    text = tmp_path / "notes.svs"
    text.write_text("not a slide")
    s = run_wsi(
        WsiConfig(
            slides=[str(good), str(blank), str(broken), str(text)],
            out=str(tmp_path / "out"),
            detector=blue,
            quiet=True,
        )
    )
    assert s["done"] == 1 and s["glomeruli"] == 3
    reasons = {Path(x["slide"]).name: x["reason"] for x in s["skipped"]}
    assert set(reasons) == {"blank.tif", "broken.tif", "notes.svs"}
    assert "no tissue" in reasons["blank.tif"]
    assert "cut short" in reasons["broken.tif"] and "copy the slide again" in reasons["broken.tif"]
    assert all("\n" not in r for r in reasons.values())
    assert not (tmp_path / "out" / "blank").exists()  # nothing written for a skipped slide


def test_cli_errors_are_one_line(tmp_path: Path, blue: str) -> None:
    runner = CliRunner()
    png = tmp_path / "field.png"
    img = np.full((600, 600, 3), (205, 120, 170), np.uint8)
    cv2.circle(img, (300, 300), 120, (200, 50, 40), -1)  # BGR for cv2: blue disc
    cv2.imwrite(str(png), img)
    res = runner.invoke(cli, ["wsi", str(png), "--out", str(tmp_path / "o1"), "--quiet"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "--slide-mpp" in lines[0]
    assert str(png) in lines[0]  # which slide lacks its resolution
    res = runner.invoke(
        cli, ["wsi", str(png), "--out", str(tmp_path / "o6"), "--segmenter", "nope.safetensors"]
    )
    assert res.exit_code == 2 and "Error: --segmenter nope.safetensors" in res.output, res.output
    res = runner.invoke(
        cli, ["wsi", str(png), "--slide-mpp", "0.5", "--out", str(tmp_path / "o2"), "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["glomeruli"] == 1
    res = runner.invoke(cli, ["wsi", str(tmp_path / "missing.svs"), "--out", str(tmp_path / "o3")])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "does not exist" in res.output
    res = runner.invoke(
        cli, ["detect", "--slide", str(png), "--slide-mpp", "0.5", "--out", str(tmp_path / "o4")]
    )
    assert res.exit_code == 0 and "1 glomeruli" in res.output
    assert not (tmp_path / "o4" / "field" / "crops").exists()  # detect: no crops


def _fake_models(
    monkeypatch: pytest.MonkeyPatch, classes: list[str], width: int | None = None
) -> None:
    """Classifier and segmenter modules with the real API, deterministic behaviour."""
    cls_mod = types.ModuleType("glomssl.finetune.classifier.infer")

    def load_classifier(path: str, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
        return object(), {"classes": classes, "image_size": 64}

    def classify_images(
        model: Any, meta: dict, images: list, batch_size: int = 64, device: str = "cpu"
    ) -> np.ndarray:
        out = np.zeros((len(images), width or len(classes)), np.float32)
        out[:, 0] = 1.0  # every glomerulus is the first class
        return out

    cls_mod.load_classifier = load_classifier  # type: ignore[attr-defined]
    cls_mod.classify_images = classify_images  # type: ignore[attr-defined]
    seg_mod = types.ModuleType("glomssl.finetune.segmenter.infer")

    def load_segmenter(
        path: str, device: str = "cpu", flag: str = "--model"
    ) -> tuple[Any, dict[str, Any]]:
        return object(), {"classes": ["tuft", "capsule"]}

    def predict_image(
        model: Any,
        img: np.ndarray,
        idx: list,
        scale: float,
        tile: int,
        overlap: int,
        batch_size: int = 4,
        device: str = "cpu",
    ) -> np.ndarray:
        h, w = img.shape[:2]
        yy, xx = np.mgrid[:h, :w]
        disc = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2 <= (0.4 * w) ** 2).astype(np.float32)
        return disc[None]

    seg_mod.load_segmenter = load_segmenter  # type: ignore[attr-defined]
    seg_mod.predict_image = predict_image  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "glomssl.finetune.classifier.infer", cls_mod)
    monkeypatch.setitem(sys.modules, "glomssl.finetune.segmenter.infer", seg_mod)


def test_classifier_and_segmenter_fill_every_class_layer(
    tmp_path: Path, blue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    classes = ["normal", "solidified", "obsolescent"]
    _fake_models(monkeypatch, classes)
    slide = make_slide(tmp_path / "k.tif")
    s = run_wsi(
        WsiConfig(
            slides=[str(slide)],
            out=str(tmp_path / "out"),
            detector=blue,
            classifier=str(tmp_path),
            segmenter=str(tmp_path),
            quiet=True,
        )
    )
    assert s["per_slide"][0]["counts"] == {"normal": 3, "solidified": 0, "obsolescent": 0}
    d = tmp_path / "out" / "k"
    root = ET.parse(d / "k.xml").getroot()
    layers = [a.get("Name") for a in root.iter("Annotation")]
    assert layers == ["normal", "solidified", "obsolescent", "segmentation"]  # empty ones kept
    names, regions, _ = read_imagescope_xml(d / "k.xml")
    assert sum(r.kind == "polygon" for r in regions) == 3
    rows = list(csv.DictReader((d / "glomeruli.csv").open()))
    assert {r["class"] for r in rows} == {"normal"} and {r["area_source"] for r in rows} == {"mask"}
    assert float(rows[0]["p_normal"]) == 1.0 and float(rows[0]["p_solidified"]) == 0.0
    # segmented disc of 0.4 x the view (= diameter): area ~ pi (0.4 * 2r)^2 of the circle's
    for r in rows:
        rad_um = float(r["radius"]) * MPP
        assert float(r["area_um2"]) == pytest.approx(np.pi * (0.8 * rad_um) ** 2, rel=0.1)
    feats = json.loads((d / "k.geojson").read_text())["features"]
    kinds = sorted(f["properties"]["objectType"] for f in feats)
    assert kinds == ["annotation"] * 3 + ["detection"] * 3


def test_classifier_whose_classes_do_not_match(
    tmp_path: Path, blue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_models(monkeypatch, ["normal", "sclerosed", "other"], width=2)
    slide = make_slide(tmp_path / "k.tif")
    with pytest.raises(GlomsslError, match="do not match"):
        run_wsi(
            WsiConfig(
                slides=[str(slide)],
                out=str(tmp_path / "out"),
                detector=blue,
                classifier=str(tmp_path),
                quiet=True,
            )
        )


def test_missing_model_module_is_one_line(
    tmp_path: Path, blue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "glomssl.finetune.segmenter.infer", None)  # import fails
    slide = make_slide(tmp_path / "k.tif")
    with pytest.raises(GlomsslError, match="segmenter module"):
        run_wsi(
            WsiConfig(
                slides=[str(slide)],
                out=str(tmp_path / "out"),
                detector=blue,
                segmenter=str(tmp_path),
                quiet=True,
            )
        )


def test_shards_split_the_slides_without_sharing_state(tmp_path: Path, blue: str) -> None:
    slides = [str(make_slide(tmp_path / f"s{i}.tif", seed=i)) for i in range(4)]
    out = tmp_path / "out"
    got = []
    for i in range(2):
        s = run_wsi(
            WsiConfig(slides=slides, out=str(out), detector=blue, shard=f"{i}/2", quiet=True)
        )
        got += [p["name"] for p in s["per_slide"] if p["status"] == "done"]
    assert sorted(got) == ["s0", "s1", "s2", "s3"]  # each slide once, by one shard
    assert sorted(p.name for p in (out / ".glomssl-wsi").glob("*.sqlite")) == [
        "queue-0of2.sqlite",
        "queue-1of2.sqlite",
    ]
    assert (out / "run_summary-0of2.json").is_file() and (out / "run_summary-1of2.json").is_file()
    with pytest.raises(GlomsslError, match="--shard"):
        WsiConfig(slides=slides, out=str(out), shard="2/2").validate()


def test_chain_with_the_shipped_detector(tmp_path: Path) -> None:
    """Real tissue (4 shipped aidpath fields on glass) through the real detector, end to end.

    The shipped detector finds few of these real glomeruli (see docs/experiments/detector.md), so
    this checks the chain, not the detector: valid files that agree with each other, and detections
    only where the tissue is (a coordinate or scale error would put them on the glass margin).
    """
    from glomssl.slidechain.demo import ASSETS
    from glomssl.slidechain.pyramid import load_tiles, tiled_source

    tiles = load_tiles(ASSETS / "images")[6:10]
    margin, side = 256, 2 * 1024 + 2 * 256
    slide = write_pyramid(
        tmp_path / "real.tif", tiled_source(tiles, side, side, margin), side, side, MPP
    )
    s = run_wsi(WsiConfig(slides=[str(slide)], out=str(tmp_path / "out"), device="cpu", quiet=True))
    assert s["done"] == 1 and s["glomeruli"] >= 1
    d = tmp_path / "out" / "real"
    rows = list(csv.DictReader((d / "glomeruli.csv").open()))
    assert len(rows) == s["glomeruli"] and all((d / r["crop"]).is_file() for r in rows)
    for r in rows:
        assert margin - 8 <= float(r["x"]) <= side - margin + 8
        assert margin - 8 <= float(r["y"]) <= side - margin + 8
        assert float(r["score"]) >= json.loads((d / "summary.json").read_text())["conf"]
    classes, regions, mpp = read_imagescope_xml(d / "real.xml")
    assert classes == ["glomerulus"] and len(regions) == len(rows) and mpp == MPP
    assert len(read_geojson(d / "real.geojson")) == len(rows)


@pytest.mark.realdata
def test_real_svs_file(tmp_path: Path, shared_data: Path) -> None:
    """An Aperio .svs from a scanner (CC0 skin sample): read, tiled and written like any slide."""
    svs = shared_data / "wsi" / "cmu_small_region.svs"
    s = run_wsi(WsiConfig(slides=[str(svs)], out=str(tmp_path / "out"), device="cpu", quiet=True))
    assert s["done"] == 1 and s["skipped"] == []
    summary = json.loads((tmp_path / "out" / svs.stem / "summary.json").read_text())
    assert summary["mpp"] == pytest.approx(0.499, abs=0.01) and summary["tiles"] >= 1
    assert (tmp_path / "out" / svs.stem / f"{svs.stem}.xml").is_file()


@pytest.mark.slow
def test_demo_step_builds_a_slide_and_runs_the_chain(tmp_path: Path) -> None:
    from glomssl.slidechain.demo import run_demo_step

    r = run_demo_step(tmp_path / "demo")
    for key in ("slide", "xml", "geojson", "table", "overview", "summary"):
        assert Path(r[key]).is_file(), key
    import tiffslide

    s = tiffslide.TiffSlide(r["slide"])
    assert s.level_count >= 3 and float(s.properties["tiffslide.mpp-x"]) == pytest.approx(0.5)
    rows = list(csv.DictReader(Path(r["table"]).open()))
    assert len(rows) == r["glomeruli"]
    again = run_demo_step(tmp_path / "demo")  # a rerun resumes the finished run
    assert again["glomeruli"] == r["glomeruli"]


def test_a_truncated_slide_is_one_line_on_its_own(tmp_path: Path) -> None:
    """`detect` on a slide cut short: one line naming it, and no noise from the TIFF reader."""
    import subprocess
    import sys

    broken = make_slide(tmp_path / "broken.tif")
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    proc = subprocess.run(
        [sys.executable, "-m", "glomssl", "detect", "--slide", str(broken), "--out",
         str(tmp_path / "d"), "--quiet"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and "broken.tif is cut short" in lines[0], lines


def test_a_tiff_that_is_not_a_slide_is_skipped_naming_it(tmp_path: Path, blue: str) -> None:
    """A 16-bit stack of three grey pages opens but cannot be read as a slide: the reason given
    names the file (it used to be tifffile's bare NotImplementedError)."""
    import tifffile

    good = make_slide(tmp_path / "good.tif")
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((3, 64, 64), np.uint16))
    s = run_wsi(
        WsiConfig(
            slides=[str(good), str(stack)], out=str(tmp_path / "out"), detector=blue, quiet=True
        )  # fmt: skip
    )
    reasons = {Path(x["slide"]).name: x["reason"] for x in s["skipped"]}
    assert s["done"] == 1 and set(reasons) == {"stack.tif"}
    assert str(stack) in reasons["stack.tif"] and "\n" not in reasons["stack.tif"]


def test_a_coarse_mpp_on_a_small_slide_runs(tmp_path: Path, blue: str) -> None:
    """--mpp 64 on a small slide: each tile spans far more than the slide (it used to be read
    whole, a MemoryError reported as an unreadable slide)."""
    good = make_slide(tmp_path / "good.tif")
    s = run_wsi(WsiConfig(slides=[str(good)], out=str(tmp_path / "out"), detector=blue, mpp=64.0,
                          quiet=True))  # fmt: skip
    assert s["done"] == 1 and not s["skipped"], s


def test_a_missing_detector_is_named_as_the_detector_option(tmp_path: Path) -> None:
    slide = make_slide(tmp_path / "good.tif")
    args = ["wsi", str(slide), "--out", str(tmp_path / "o"), "--detector", "nope.safetensors"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "check --detector" in res.output, res.output


def test_detect_names_its_own_weights_option_and_says_a_single_failure_once(
    tmp_path: Path,
) -> None:
    slide = make_slide(tmp_path / "good.tif")
    runner = CliRunner()
    res = runner.invoke(cli, ["detect", "--slide", str(slide), "--out", str(tmp_path / "o"),
                              "--weights", "nope.safetensors"])  # fmt: skip
    assert res.exit_code == 2 and "check --weights" in res.output and "--detector" not in res.output
    res = runner.invoke(cli, ["detect", "--slide", str(slide), "--out", str(tmp_path / "o"),
                              "--weights", str(tmp_path)])  # fmt: skip
    assert res.exit_code == 2 and "--weights" in res.output and "is a folder" in res.output
    bad = tmp_path / "bad.png"
    bad.write_text("not a picture")
    res = runner.invoke(cli, ["detect", "--slide", str(bad), "--slide-mpp", "0.5", "--out",
                              str(tmp_path / "o2")])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output  # not the reason, then the error
