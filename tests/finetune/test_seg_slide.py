"""``glomssl segment`` on whole slides: seamless stitching, level-0 polygons, GeoJSON/XML, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from glomssl.annotations import read_geojson, read_imagescope_xml
from glomssl.cli import cli
from glomssl.errors import GlomsslError
from glomssl.finetune.segmenter import infer
from glomssl.finetune.segmenter.predict import SegmentConfig, run_segment

DISKS = [(300, 260, 60), (700, 640, 90), (820, 250, 40)]  # level-0 (x, y, r)


@pytest.fixture()
def pyramid(tmp_path: Path) -> Path:
    """A 2-level pyramidal TIFF (1024 px, 0.5 um/px): pink tissue with three dark disks."""
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(0)
    img = np.full((1024, 1024, 3), 245, np.uint8)
    img[100:950, 150:950] = (225, 150, 200) + rng.integers(-10, 10, (850, 800, 3))
    yy, xx = np.mgrid[:1024, :1024]
    for x, y, r in DISKS:
        img[(yy - y) ** 2 + (xx - x) ** 2 < r * r] = (90, 40, 120)
    p = tmp_path / "slide.tif"
    with tifffile.TiffWriter(p) as tw:
        opts = {"tile": (256, 256), "photometric": "rgb", "resolutionunit": "CENTIMETER"}
        tw.write(img, subifds=1, resolution=(1e4 / 0.5, 1e4 / 0.5), **opts)
        tw.write(img[::2, ::2], subfiletype=1, resolution=(1e4 / 1.0, 1e4 / 1.0), **opts)
    return p


class DarkPixels(torch.nn.Module):
    """A per-pixel 'segmenter': class 0 = dark pixels, class 1 = pinkish pixels (stride 16)."""

    stride = 16

    def probabilities(self, x: torch.Tensor, idx: Any = None) -> torch.Tensor:
        dark = (x[:, 0] < 0.5).float()
        pink = ((x[:, 0] > 0.8) & (x[:, 1] < 0.7)).float()
        p = torch.stack([dark, pink], dim=1)
        return p if idx is None else p[:, list(idx)]


@pytest.fixture()
def pointwise(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    meta = {"classes": ["Tuft", "Tissue"], "image_size": 128, "stride": 16}

    def fake_load(path: Any, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
        return DarkPixels(), meta

    real_run = infer.run_tiles

    def counting_run(model: Any, tiles: list[np.ndarray], idx: Any, device: str) -> np.ndarray:
        calls.append(len(tiles))
        return real_run(model, tiles, idx, device)

    monkeypatch.setattr(infer, "load_segmenter", fake_load)
    monkeypatch.setattr(infer, "run_tiles", counting_run)
    return calls


def _cfg(slide: Path, out: Path, **kw: Any) -> SegmentConfig:
    base = {"model": "x", "input": [str(slide)], "out": str(out), "tile": 128, "overlap": 32,
            "level": 1, "device": "cpu", "quiet": True}  # fmt: skip
    return SegmentConfig(**{**base, **kw})


def test_slide_polygons_in_level0_and_files(pyramid: Path, tmp_path: Path, pointwise: Any) -> None:
    res = run_segment(_cfg(pyramid, tmp_path / "o", classes=["Tuft"]))
    d = tmp_path / "o" / "slide"
    assert res["slides"] == 1 and res["results"][0]["objects"] == {"Tuft": 3}
    regions = read_geojson(d / "slide.geojson")
    assert len(regions) == 3 and {r.name for r in regions} == {"Tuft"}
    for x, y, r in DISKS:  # level-0 coordinates although we worked at level 1 (2x smaller)
        hit = [g for g in regions if abs(np.mean([p[0] for p in g.points]) - x) < 4
               and abs(np.mean([p[1] for p in g.points]) - y) < 4]  # fmt: skip
        assert len(hit) == 1
        assert hit[0].area() == pytest.approx(np.pi * r * r, rel=0.08)
    names, xml_regions, mpp = read_imagescope_xml(d / "slide.xml")
    assert names == ["Tuft"] and mpp == pytest.approx(0.5)
    geo = sorted(tuple(map(tuple, r.points)) for r in regions)
    assert sorted(tuple(map(tuple, r.points)) for r in xml_regions) == geo  # same polygons
    rows = list(csv.DictReader(open(d / "objects.csv", encoding="utf-8")))
    assert len(rows) == 3
    for row in rows:
        assert float(row["area_um2"]) == pytest.approx(float(row["area_px"]) * 0.25, rel=1e-3)
    assert (d / "overview.png").is_file()
    summary = json.loads((d / "summary.json").read_text())
    assert summary["mpp"] == pytest.approx(0.5) and summary["level"] == 1


def test_slide_stitching_equals_whole_slide_inference(
    pyramid: Path, tmp_path: Path, pointwise: Any
) -> None:
    from glomssl.tiling import Tile, read_tile, working_level
    from glomssl.wsi import open_any

    run_segment(_cfg(pyramid, tmp_path / "o"))
    canvas = np.fromfile(tmp_path / "o" / "slide" / "probabilities.u8", np.uint8)
    canvas = canvas.reshape(2, 512, 512)
    s = open_any(pyramid)
    w = working_level(s, level=1)
    whole = read_tile(s, w, Tile(0, 0, 0, 512, (0, 0, 512, 512)))
    p = DarkPixels().probabilities(
        torch.from_numpy(whole.copy()).permute(2, 0, 1)[None].float() / 255
    )
    want = (p[0].numpy() * 255).astype(np.uint8)
    tissue = canvas.sum(0) > 0  # glass-only tiles are skipped; compare where tiles ran
    assert tissue.mean() > 0.5
    assert np.array_equal(canvas[:, tissue], want[:, tissue])


def test_slide_resumes_after_a_crash(
    pyramid: Path, tmp_path: Path, pointwise: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = tmp_path / "ref"
    run_segment(_cfg(pyramid, ref, batch_size=1))
    total = len(pointwise)
    pointwise.clear()
    real = infer.run_tiles
    calls: list[int] = []

    def dies_after_three(model: Any, tiles: Any, idx: Any, device: str) -> Any:
        if len(calls) >= 3:
            raise KeyboardInterrupt  # the process dies here
        calls.append(len(tiles))
        return real(model, tiles, idx, device)

    monkeypatch.setattr(infer, "run_tiles", dies_after_three)
    out = tmp_path / "crash"
    with pytest.raises(KeyboardInterrupt):
        run_segment(_cfg(pyramid, out, batch_size=1))
    assert not (out / "slide" / "slide.geojson").exists()
    done = (out / "slide" / "tiles_done.txt").read_text().split()
    assert len(done) == 3
    monkeypatch.setattr(infer, "run_tiles", real)
    res = run_segment(_cfg(pyramid, out, batch_size=1))
    assert res["results"][0]["tiles_recomputed"] == total - 3
    a = np.fromfile(out / "slide" / "probabilities.u8", np.uint8)
    b = np.fromfile(ref / "slide" / "probabilities.u8", np.uint8)
    assert np.array_equal(a, b)
    assert (out / "slide" / "slide.geojson").read_text() == (
        ref / "slide" / "slide.geojson"
    ).read_text()
    with pytest.raises(Exception, match="another model, slide or setting"):
        run_segment(_cfg(pyramid, out, tile=64, overlap=16))
    (out / "slide" / "segment_state.json").write_bytes(b"\x9f\xff binary")
    with pytest.raises(GlomsslError, match=r"segment_state\.json is damaged"):
        run_segment(_cfg(pyramid, out, batch_size=1))


def test_slide_cli_with_a_real_model_and_bad_slides(pyramid: Path, tmp_path: Path) -> None:
    from glomssl.finetune.segmenter.infer import export_segmenter
    from glomssl.models import create_model

    torch.manual_seed(0)
    m = create_model("dynamic", classes=["Tuft", "GS"], base=8).eval()
    export_segmenter(m, tmp_path / "model", {"image_size": 64, "input_scale": 1.0})
    r = CliRunner().invoke(cli, ["segment", "--model", str(tmp_path / "model"), "--input",
                                 str(pyramid), "--out", str(tmp_path / "cli"), "--mpp", "2",
                                 "--tile", "64", "--overlap", "16", "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "segmented 1 slide(s) (Tuft,GS)" in r.output
    names, _, _ = read_imagescope_xml(tmp_path / "cli" / "slide" / "slide.xml")
    assert names == ["Tuft", "GS"]  # one layer per class, empty or not
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"II*\x00garbage")
    r2 = CliRunner().invoke(cli, ["segment", "--model", str(tmp_path / "model"), "--input",
                                  str(bad), "--out", str(tmp_path / "bad")])  # fmt: skip
    assert r2.exit_code == 2 and len(r2.output.strip().splitlines()) == 1
    assert "not a readable whole-slide image" in r2.output


@pytest.mark.slow
def test_slide_kill_9_then_rerun(pyramid: Path, tmp_path: Path) -> None:
    """A real `glomssl segment` process killed with SIGKILL mid-slide; the rerun keeps its tiles."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from _proc import check, run_proc

    from glomssl.finetune.segmenter.infer import export_segmenter
    from glomssl.models import create_model

    torch.manual_seed(0)
    m = create_model("dynamic", classes=["Tuft"], base=16).eval()
    export_segmenter(m, tmp_path / "model", {"image_size": 64, "input_scale": 1.0})
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "glomssl", "segment", "--model", str(tmp_path / "model"),
                "--input", str(pyramid), "--out", str(out), "--level", "0", "--tile", "64",
                "--overlap", "16", "--batch-size", "1", "--quiet"]  # fmt: skip

    out = tmp_path / "killed"
    p = subprocess.Popen(cmd(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = out / "slide" / "tiles_done.txt"
    t0 = time.time()
    while time.time() - t0 < 600 and (not done.is_file() or len(done.read_text().split()) < 5):
        time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    finished = len(done.read_text().split())
    assert finished >= 5 and not (out / "slide" / "slide.geojson").exists()
    check(run_proc(cmd(out), timeout=900))
    summary = json.loads((out / "slide" / "summary.json").read_text())
    assert summary["tiles_recomputed"] <= summary["tiles"] - finished + 1  # at most one redone
    fresh = tmp_path / "fresh"
    check(run_proc(cmd(fresh), timeout=900))
    a = np.fromfile(out / "slide" / "probabilities.u8", np.uint8)
    b = np.fromfile(fresh / "slide" / "probabilities.u8", np.uint8)
    assert np.array_equal(a, b)  # nothing half-written counted
