"""``glomssl segment`` on images: outputs, scoring, stitching, resumability and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image

from glomssl.cli import cli
from glomssl.finetune.segmenter.infer import (
    export_segmenter,
    load_segmenter,
    predict_probs,
    tile_weights,
)
from glomssl.models import create_model


def _export(tmp_path: Path, name: str = "dynamic", **kw: Any) -> Path:
    torch.manual_seed(0)
    kw.setdefault("base", 8)
    m = create_model(name, classes=["Tuft", "GS"], **kw).eval()
    run = tmp_path / f"model_{name}"
    export_segmenter(m, run, {"image_size": 32, "input_scale": 1.0, "mask_threshold": 127})
    return run


class PointwiseSegmenter(torch.nn.Module):
    """A per-pixel 'network' (stride 16): stitching must reproduce its whole-image output exactly."""

    stride = 16

    def probabilities(self, x: torch.Tensor, idx: Any = None) -> torch.Tensor:
        p = torch.stack([x[:, 0] * 0.7 + x[:, 2] * 0.2, x[:, 1].square()], dim=1)
        return p if idx is None else p[:, list(idx)]


def test_stitching_equals_whole_image_inference() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (100, 90, 3), dtype=np.uint8)
    pw = PointwiseSegmenter()
    whole = predict_probs(pw, img, [0, 1], tile=112, overlap=0)  # one pass (fits in one tile)
    for mode in ("blend", "centre"):
        tiled = predict_probs(pw, img, [0, 1], tile=32, overlap=8, mode=mode)
        np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-6)
    w = tile_weights(32, 8)
    assert w[16, 16] == 1.0 and w[0, 16] < w[4, 16] < w[16, 16]


def test_segment_folder_outputs_and_resume(tmp_path: Path, make_seg: Any) -> None:
    make_seg(tmp_path / "d", n=4, size=40)
    (tmp_path / "d" / "images" / "broken.png").write_bytes(b"\x89PNG broken")
    run = _export(tmp_path)
    out = tmp_path / "seg"
    args = ["segment", "--model", str(run), "--input", str(tmp_path / "d" / "images"),
            "--out", str(out), "--probabilities", "--quiet"]  # fmt: skip
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "segmented 4 image(s) (Tuft,GS)" in r.output and "1 unreadable" in r.output
    assert (out / "masks" / "Tuft" / "im000.png").is_file()
    assert (out / "masks" / "GS" / "im003.png").is_file()
    m = np.asarray(Image.open(out / "masks" / "Tuft" / "im000.png"))
    assert m.shape == (40, 40) and set(np.unique(m).tolist()) <= {0, 255}
    npz = np.load(out / "probabilities" / "im000.npz")
    assert npz["probabilities"].shape == (2, 40, 40) and list(npz["classes"]) == ["Tuft", "GS"]
    # the masks are the probabilities cut at 0.5
    assert np.array_equal(m > 0, npz["probabilities"][0].astype(np.float32) >= 0.5)
    rows = [json.loads(x) for x in (out / "outputs.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["masks"]["GS"] == "masks/GS/im000.png"
    skipped = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()]
    assert skipped[0]["path"].endswith("broken.png")
    # a rerun skips finished images (their records exist): outputs are not rewritten
    before = (out / "masks" / "Tuft" / "im000.png").stat().st_mtime_ns
    (out / "records" / "im001.json").unlink()  # as if the run had died before im001 finished
    r2 = CliRunner().invoke(cli, args)
    assert r2.exit_code == 0, r2.output
    assert (out / "masks" / "Tuft" / "im000.png").stat().st_mtime_ns == before
    assert (out / "records" / "im001.json").is_file()
    # a damaged record (records are written without fsync) is segmented anew, not a traceback
    for damage in (b"", b"\x9f\xff binary", b"[1, 2]\n"):
        (out / "records" / "im001.json").write_bytes(damage)
        r2 = CliRunner().invoke(cli, args)
        assert r2.exit_code == 0, r2.output
        assert json.loads((out / "records" / "im001.json").read_text())["image"].endswith(
            "im001.png"
        )
    # one class, label map
    r3 = CliRunner().invoke(cli, ["segment", "--model", str(run), "--input",
                                  str(tmp_path / "d" / "images"), "--out", str(tmp_path / "lab"),
                                  "--classes", "GS", "--label-map", "--quiet"])  # fmt: skip
    assert r3.exit_code == 0, r3.output
    assert (tmp_path / "lab" / "labels" / "im002.png").is_file()
    assert not (tmp_path / "lab" / "masks").exists()


def test_segment_scores_a_table_with_masks(tmp_path: Path, make_seg: Any) -> None:
    table = make_seg(tmp_path / "d", n=4, size=40)
    run = _export(tmp_path, "multihead")
    r = CliRunner().invoke(cli, ["segment", "--model", str(run), "--input", str(table),
                                 "--out", str(tmp_path / "o"), "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "mean Dice vs the table's masks" in r.output
    s = json.loads((tmp_path / "o" / "scores.json").read_text())
    assert set(s["per_class"]) == {"Tuft", "GS"} and s["per_class"]["Tuft"]["n"] == 2
    assert 0 <= s["mean_dice"] <= 1 and "dice_all_foreground" in s["per_class"]["Tuft"]


def test_segment_bad_input(tmp_path: Path, make_seg: Any) -> None:
    from glomssl.runs import save_weights

    make_seg(tmp_path / "d", n=2, size=40)
    imgs = str(tmp_path / "d" / "images")
    run = _export(tmp_path)
    runner = CliRunner()

    def err(*extra: str) -> str:
        res = runner.invoke(cli, ["segment", "--input", imgs, "--out", str(tmp_path / "o"),
                                  *extra])  # fmt: skip
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:"), res.output
        return lines[0]

    save_weights(tmp_path / "bb" / "backbone.safetensors", {"w": torch.zeros(2)}, {"arch": "x"})
    assert "not a glomssl segmenter" in err(
        "--model", str(tmp_path / "bb" / "backbone.safetensors")
    )
    assert "no model.safetensors" in err("--model", str(tmp_path))
    assert "not divisible by the network's stride 16" in err(
        "--model", str(run), "--tile", "40", "--scale", "2"
    )
    assert "'Cap' is not a class" in err("--model", str(run), "--classes", "Cap")
    assert "--overlap" in err("--model", str(run), "--tile", "32", "--overlap", "20")


def test_exported_model_roundtrip(tmp_path: Path) -> None:
    run = _export(tmp_path, "unet")
    m, meta = load_segmenter(run)
    assert meta["model"] == "unet" and meta["classes"] == ["Tuft", "GS"] and m.stride == 16
    ref = create_model("unet", classes=["Tuft", "GS"], base=8)
    torch.manual_seed(0)
    ref = create_model("unet", classes=["Tuft", "GS"], base=8).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m.probabilities(x), ref.probabilities(x))


def test_segment_in_a_real_subprocess(tmp_path: Path, make_seg: Any) -> None:
    import os
    import subprocess
    import sys

    from _proc import check, run_proc

    make_seg(tmp_path / "d", n=2, size=40)
    run = _export(tmp_path)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "glomssl", "segment", "--model", str(run), "--input",
           str(tmp_path / "d" / "images"), "--out", str(tmp_path / "o")]  # fmt: skip
    p = check(run_proc(cmd, timeout=600))
    assert "segmented 2 image(s)" in p.stdout and "segmented 2/2" in p.stdout  # progress lines
    bad = subprocess.run([*cmd[:-4], "--input", str(tmp_path / "nowhere"), "--out",
                          str(tmp_path / "o2")], env=env, capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and bad.stderr.startswith("Error:")


def test_a_model_json_that_does_not_fit_is_one_line(tmp_path: Path) -> None:
    """`wsi --segmenter RUN` / `segment --model RUN`: a model.json without `model`, with settings that
    are a list (tracebacks), or naming other classes than the network's (accepted; `--segment-class`
    then failed per slide with an IndexError) is a one-line error naming the file."""
    import pytest

    from glomssl.errors import GlomsslError

    run = _export(tmp_path, "unet")
    good = json.loads((run / "model.json").read_text())
    cases = [
        ({"model": None}, "lacks the network's name"),
        ({"model_kwargs": [1]}, "lacks the network's name"),
        ({"classes": ["a", "b", "c"]}, "names the classes a,b,c but the network segments Tuft,GS"),
        ({"classes": "ab"}, "lists no classes"),
    ]
    for change, message in cases:
        side = {**good, **change}
        side = {k: v for k, v in side.items() if v is not None}
        (run / "model.json").write_text(json.dumps(side))
        with pytest.raises(GlomsslError, match=message) as err:
            load_segmenter(run)
        assert "\n" not in str(err.value) and str(run) in str(err.value)


def test_segment_inputs_without_masks_slides_in_a_folder_and_one_image(
    tmp_path: Path, make_seg: Any
) -> None:
    """A table of images only is segmented (nothing to score); a .svs inside an input folder is
    listed as skipped with the way to segment it; a single picture is a one-line error."""
    table = make_seg(tmp_path / "d", n=2, size=40)
    run = _export(tmp_path)
    only = tmp_path / "d" / "only.csv"
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    with open(only, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "slide"])
        w.writeheader()
        w.writerows({"path": r["path"], "slide": r["slide"]} for r in rows)
    runner = CliRunner()
    r = runner.invoke(cli, ["segment", "--model", str(run), "--input", str(only),
                            "--out", str(tmp_path / "o1"), "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "o1" / "scores.json").exists()
    (tmp_path / "d" / "images" / "whole.svs").write_bytes(b"a slide, not read from a folder")
    r = runner.invoke(cli, ["segment", "--model", str(run), "--input", str(tmp_path / "d" / "images"),
                            "--out", str(tmp_path / "o2"), "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    skipped = [json.loads(x) for x in (tmp_path / "o2" / "skipped.jsonl").read_text().splitlines()]
    assert [Path(s["path"]).name for s in skipped] == ["whole.svs"]
    assert "on its own" in skipped[0]["reason"]
    one = tmp_path / "d" / "images" / "im000.png"
    r = runner.invoke(cli, ["segment", "--model", str(run), "--input", str(one),
                            "--out", str(tmp_path / "o3")])  # fmt: skip
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "is one image; pass the folder that holds it" in r.output
