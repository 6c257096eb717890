"""An ``--out`` folder inside the input folder: a rerun never reads the command's own outputs.

The shared folder readers (:func:`glomssl.manifest.load_image_list`, :func:`list_images` and
:func:`glomssl.data.sources.resolve_sources`) leave out images under the folders given as ``exclude``
(compared on resolved paths) and say so once on stderr; each command passes its own ``--out``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageDraw

from glomssl.cli import cli
from glomssl.data.sources import resolve_sources
from glomssl.errors import GlomsslError
from glomssl.manifest import image_row, list_images, load_image_list, read_manifest


def _png(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _figure(seed: int) -> Image.Image:
    """A white figure with 2 x 2 textured panels and wide gutters: classic cuts it into 4."""
    rng = np.random.default_rng(seed)
    pw, ph, gap, m = 120, 100, 20, 10
    fig = Image.new("RGB", (2 * m + 2 * pw + gap, 2 * m + 2 * ph + gap), (255, 255, 255))
    for r in range(2):
        for c in range(2):
            tone = int(rng.integers(40, 200))
            arr = np.clip(rng.normal(tone, 30, (ph, pw, 3)), 0, 255).astype(np.uint8)
            fig.paste(Image.fromarray(arr), (m + c * (pw + gap), m + r * (ph + gap)))
    return fig


def _tissue(seed: int, size: int = 96) -> Image.Image:
    """A pink micrograph with purple nuclei, which ``curate`` keeps."""
    rng = np.random.default_rng(seed)
    base = np.array([225, 170, 200], np.float64) + rng.normal(0, 6, (size, size, 3))
    im = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(25):
        x, y = rng.integers(0, size, 2)
        r = int(rng.integers(3, 7))
        d.ellipse([x - r, y - r, x + r, y + r], fill=(110, 60, 150))
    return im


def _under(path: str | Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


# ----------------------------------------------------------------------------- the shared readers


def test_reader_leaves_out_images_under_exclude(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "figs"
    _png(src / "a.png", 0)
    _png(src / "sub" / "b.png", 1)
    _png(src / "out" / "c.png", 2)
    _png(src / "out" / "deep" / "d.png", 3)
    _png(src / "outside.png", 4)  # a name that starts like the folder: not under it
    # no exclude: everything, silently (unchanged behaviour)
    assert [r["path"] for _, r in load_image_list(src)] == [
        "a.png", "out/c.png", "out/deep/d.png", "outside.png", "sub/b.png"
    ]  # fmt: skip
    assert capsys.readouterr().err == ""
    got = load_image_list(src, exclude=[src / "out"], command="separate")
    assert [r["path"] for _, r in got] == ["a.png", "outside.png", "sub/b.png"]
    line = f"separate: left out 2 images under --out {src / 'out'}, the output of this command\n"
    assert capsys.readouterr().err == line  # said once, on stderr
    # compared on resolved paths: a relative --out, and one reached through a symlink
    monkeypatch.chdir(tmp_path)
    assert len(load_image_list("figs", exclude=["figs/sub/../out"])) == 3
    (tmp_path / "link").symlink_to(src / "out")
    assert len(load_image_list(src, exclude=[tmp_path / "link"])) == 3
    # list_images takes the same exclude; an --out outside the folder leaves nothing out
    assert [p.name for p in list_images(src, exclude=[tmp_path / "elsewhere"])] == [
        "a.png", "c.png", "d.png", "outside.png", "b.png"
    ]  # fmt: skip
    capsys.readouterr()
    # --out the input folder itself (or a folder above it): its own images stay inputs
    assert len(load_image_list(src, exclude=[src])) == 5
    assert len(load_image_list(src / "out", exclude=[src])) == 2
    assert capsys.readouterr().err == ""
    # one image file (a confusion matrix written beside --out) can be left out too
    got = load_image_list(src, exclude=[src / "a.png"], command="classify")
    assert len(got) == 4 and "left out 1 image written as" in capsys.readouterr().err
    # resolve_sources passes it on
    s = resolve_sources([src], exclude=[src / "out"], command="segment")
    assert sorted(p.name for p in s.paths) == ["a.png", "b.png", "outside.png"]
    assert "segment: left out 2 images" in capsys.readouterr().err


def test_reader_keeps_manifest_rows_and_says_when_only_outputs_are_left(tmp_path: Path) -> None:
    src = tmp_path / "figs"
    _png(src / "out" / "c.png", 2)
    # everything in the folder lies under --out: one clear line, no traceback
    with pytest.raises(GlomsslError) as exc:
        load_image_list(src, exclude=[src / "out"], command="separate")
    msg = str(exc.value)
    assert "\n" not in msg and f"holds no images besides the 1 under --out {src / 'out'}" in msg
    # a manifest naming a file under --out is the user's explicit choice: kept as written
    man = tmp_path / "m.jsonl"
    man.write_text(json.dumps(image_row(src / "out" / "c.png", tmp_path)) + "\n")
    assert [r["path"] for _, r in load_image_list(man, exclude=[src / "out"])] == ["figs/out/c.png"]
    assert len(resolve_sources([man], exclude=[src / "out"])) == 1


# ----------------------------------------------------------------------------- the commands


def test_separate_rerun_does_not_separate_its_own_panels(tmp_path: Path) -> None:
    figs = tmp_path / "figs"
    figs.mkdir()
    for s in range(2):
        _figure(s).save(figs / f"f{s}.png")
    out = figs / "panels"
    args = ["separate", "--input", str(figs), "--out", str(out), "--method", "classic", "--quiet"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    s1 = json.loads(first.stdout)
    assert s1["figures"] == 2 and s1["panels"] == 8
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    s2 = json.loads(second.stdout)
    assert (s2["figures"], s2["panels"], s2["processed"]) == (2, 8, 0), s2
    assert f"separate: left out 8 images under --out {out}" in second.stderr
    rows = read_manifest(out / "manifest.jsonl")
    assert len(rows) == 8 and not any(_under(out / r["parent"], out) for r in rows)
    # only outputs left in the folder: one line, exit 2
    only = tmp_path / "only"
    (only / "o").mkdir(parents=True)
    _figure(0).save(only / "o" / "f.png")
    r = CliRunner().invoke(cli, ["separate", "--input", str(only), "--out", str(only / "o")])
    assert r.exit_code == 2 and "holds no images besides the 1 under --out" in r.output
    assert "Traceback" not in r.output


def _segmenter(tmp_path: Path) -> Path:
    from glomssl.finetune.segmenter.infer import export_segmenter
    from glomssl.models import create_model

    torch.manual_seed(0)
    m = create_model("dynamic", classes=["Tuft", "GS"], base=8).eval()
    run = tmp_path / "model"
    export_segmenter(m, run, {"image_size": 32, "input_scale": 1.0, "mask_threshold": 127})
    return run


def test_segment_rerun_does_not_segment_its_own_masks_and_overlays(tmp_path: Path) -> None:
    imgs = tmp_path / "imgs"
    for i in range(3):
        _png(imgs / f"im{i}.png", i, (40, 40))
    out = imgs / "seg"
    args = ["segment", "--model", str(_segmenter(tmp_path)), "--input", str(imgs)]
    args += ["--out", str(out), "--quiet"]
    for _ in range(2):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, r.output
        recs = [json.loads(x) for x in (out / "outputs.jsonl").read_text().splitlines()]
        assert len(recs) == 3 and not any(_under(rec["image"], out) for rec in recs)
    # the second run saw 9 outputs (2 masks + 1 overlay per image) and left them out
    assert f"segment: left out 9 images under --out {out}" in r.stderr
    assert sorted(p.name for p in (out / "records").iterdir()) == [
        "im0.json", "im1.json", "im2.json"
    ]  # fmt: skip


@pytest.mark.parametrize(("cmd", "extra"), [("curate", []), ("dedup", ["--methods", "sha256"])])
def test_curate_and_dedup_reruns_do_not_read_their_own_images(
    tmp_path: Path, cmd: str, extra: list[str]
) -> None:
    src = tmp_path / "panels"
    src.mkdir()
    for i in range(3):
        _tissue(i).save(src / f"t{i}.png")
    out = src / "out"
    args = [cmd, "--input", str(src), "--out", str(out), "--json", *extra]
    for _ in range(2):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, r.output
        s = json.loads(r.stdout)
        assert (s["input"], s["kept"]) == (3, 3), s
    assert any((out / "images").rglob("*.png"))  # it did write images inside the input
    rows = read_manifest(out / "manifest.jsonl")
    assert len(rows) == 3 and all(r["path"].startswith("images/") for r in rows)
    assert f"{cmd}: left out 3 images under --out {out}" in r.stderr


def test_classify_rerun_does_not_classify_its_own_confusion_matrix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--out`` in the input folder: ``--evaluate`` writes OUT.confusion.png there; a rerun leaves it
    out. The model is a stand-in (the files, the reader and the outputs are real)."""
    from glomssl.finetune.classifier import infer

    def probs(_m: object, _meta: object, paths: list[Path], *_a: object) -> np.ndarray:
        return np.tile(np.array([[0.7, 0.3]], np.float32), (len(paths), 1))

    monkeypatch.setattr(infer, "load_classifier", lambda *_a: (None, {"classes": ["a", "b"]}))
    monkeypatch.setattr(infer, "classify_images", probs)
    src = tmp_path / "imgs"
    for i in range(2):
        _png(src / f"im{i}.png", i)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nimgs/im0.png,a\nimgs/im1.png,b\n")
    out = src / "preds.jsonl"
    cfg = infer.ClassifyConfig(
        model="m", input=str(src), out=str(out), evaluate=str(labels), device="cpu", quiet=True
    )
    for _ in range(2):
        assert infer.run_classify(cfg)["n"] == 2
        assert (src / "preds.confusion.png").is_file()
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == ["im0.png", "im1.png"]


def test_gan_train_leaves_out_its_run_folder(tmp_path: Path) -> None:
    from glomssl.datagan.dataset import ImageDataset, make_dataset
    from glomssl.datagan.train_config import GanTrainConfig

    src = tmp_path / "patches"
    for i in range(2):
        _png(src / f"p{i}.png", i, (32, 32))
    _png(src / "run" / "reals.png", 5, (64, 64))  # the run's own grids
    _png(src / "run" / "fakes-000000.png", 6, (64, 64))
    ds = make_dataset(GanTrainConfig(data=[str(src)], out=str(src / "run"), resolution=32))
    assert isinstance(ds, ImageDataset) and sorted(p.name for p in ds.paths) == ["p0.png", "p1.png"]


def test_datagan_project_leaves_out_its_annotation_folder(tmp_path: Path) -> None:
    from glomssl.datagan.project import ProjectConfig, run_datagan_project

    # an --images folder whose only images lie under --out is refused at once, before the network
    real = tmp_path / "real"
    _png(real / "ann" / "x.png", 1)
    with pytest.raises(GlomsslError, match="holds no images besides the 1 under --out"):
        run_datagan_project(ProjectConfig(network="none", images=str(real), out=str(real / "ann")))
