"""glomssl curate: every statistics reason on images drawn here, provenance, idempotence, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFilter

from glomssl.cli import cli
from glomssl.data.images import load_rgb
from glomssl.errors import GlomsslError
from glomssl.manifest import image_row, read_manifest, write_manifest
from glomssl.mining.curate import CurateConfig, run_curate
from glomssl.mining.panel_stats import classify_stats, image_stats


def tissue(rng: np.random.Generator, size: int = 256) -> Image.Image:
    """A PAS/H&E-like micrograph: pink stroma with smooth variation, purple nuclei, sensor noise."""
    base = np.array([225, 170, 200], np.float64)
    field = rng.normal(0, 1, (size // 16, size // 16, 3))
    smooth = np.asarray(
        Image.fromarray(((field + 3) * 40).clip(0, 255).astype(np.uint8)).resize(
            (size, size), Image.Resampling.BICUBIC
        ),
        np.float64,
    )
    img = base + (smooth - 120) * 0.3
    im = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(60):
        x, y = rng.integers(0, size, 2)
        r = int(rng.integers(3, 8))
        d.ellipse([x - r, y - r, x + r, y + r], fill=(110, 60, 150))
    im = im.filter(ImageFilter.GaussianBlur(1.2))
    a = np.asarray(im, np.float64) + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def chart(rng: np.random.Generator, size: int = 256) -> Image.Image:
    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    d.line([(20, size - 20), (size - 10, size - 20)], fill="black", width=2)
    d.line([(20, 10), (20, size - 20)], fill="black", width=2)
    for k in range(6):
        h = int(rng.integers(20, size - 60))
        x = 30 + k * 36
        d.rectangle(
            [x, size - 20 - h, x + 24, size - 21], fill=(40, 90, 200) if k % 2 else (230, 120, 30)
        )
    return im


def text(size: int = 256) -> Image.Image:
    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    for k in range(12):
        d.text((8, 8 + 20 * k), "Figure 2. Glomeruli in PAS", fill="black")
    return im


def diagram(size: int = 256) -> Image.Image:
    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    for k, fill in enumerate([(250, 200, 120), (150, 220, 160), (160, 190, 250)]):
        x = 10 + 85 * k
        d.rounded_rectangle([x, 100, x + 60, 150], radius=8, fill=fill, outline=(60, 60, 60))
        if k < 2:
            d.line([(x + 60, 125), (x + 85, 125)], fill=(60, 60, 60), width=2)
    d.ellipse([90, 20, 160, 80], fill=(240, 160, 170), outline=(60, 60, 60))
    return im


def fluorescence(rng: np.random.Generator, size: int = 256) -> Image.Image:
    a = np.zeros((size, size, 3), np.float64)
    im = Image.fromarray(a.astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(25):
        x, y = rng.integers(0, size, 2)
        r = int(rng.integers(4, 12))
        d.ellipse(
            [x - r, y - r, x + r, y + r], fill=(0, 200, 30) if rng.random() < 0.5 else (30, 20, 220)
        )
    im = im.filter(ImageFilter.GaussianBlur(2))
    a = np.asarray(im, np.float64) + rng.normal(0, 3, (size, size, 3)).clip(0, None)
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def electron(rng: np.random.Generator, size: int = 256) -> Image.Image:
    g = np.asarray(tissue(rng, size).convert("L"), np.float64) * 0.7 + 20
    return Image.fromarray(np.repeat(g[..., None], 3, axis=2).clip(0, 255).astype(np.uint8))


def blank(rng: np.random.Generator, size: int = 256) -> Image.Image:
    a = np.full((size, size, 3), 205.0) + rng.normal(0, 1.0, (size, size, 3))
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


EXPECTED = {
    "tissue_a.png": None,
    "tissue_b.jpg": None,
    "tiny.png": "tiny",
    "blank.png": "blank",
    "chart.png": "chart",
    "text.png": "text",
    "diagram.png": "diagram",
    "fluorescence.png": "fluorescence",
    "electron.png": "greyscale",
}


def make_panels(folder: Path, seed: int = 0) -> Path:
    """Draw one image per curate outcome (plus a corrupt file) into ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tissue(rng).save(folder / "tissue_a.png")
    tissue(rng, 300).save(folder / "tissue_b.jpg", quality=85)
    tissue(rng, 40).save(folder / "tiny.png")
    blank(rng).save(folder / "blank.png")
    chart(rng).save(folder / "chart.png")
    text().save(folder / "text.png")
    diagram().save(folder / "diagram.png")
    fluorescence(rng).save(folder / "fluorescence.png")
    electron(rng).save(folder / "electron.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


@pytest.fixture(scope="module")
def panels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_panels(tmp_path_factory.mktemp("panels"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_reason_from_statistics(panels: Path, name: str) -> None:
    folder = panels
    im = load_rgb(folder / name, 256)
    full = load_rgb(folder / name)
    reason, detail = classify_stats(
        image_stats(np.asarray(im)), full.width, full.height, CurateConfig()
    )
    assert reason == EXPECTED[name], (name, detail)
    assert detail


def test_run_curate_manifest_keeps_provenance_and_is_idempotent(tmp_path: Path) -> None:
    folder = make_panels(tmp_path / "panels")
    rows = []
    for k, name in enumerate(sorted(EXPECTED)):
        rows.append(
            image_row(
                folder / name,
                folder,
                uid=f"PMC{k}",
                license="by",
                parent=f"figures/fig{k}.jpg",
                bbox=[0, 0, 10 + k, 10 + k],
                score=0.9,
            )
        )
    rows.append({"path": "corrupt.png", "sha256": "0" * 64, "width": 5, "height": 5})
    write_manifest(folder / "manifest.jsonl", rows)
    out = tmp_path / "curated"
    s = run_curate(CurateConfig(input=str(folder / "manifest.jsonl"), out=str(out), quiet=True))
    assert s["input"] == len(EXPECTED) + 1
    assert s["skipped"] == 1 and s["kept"] == 2
    assert s["reasons"] == {r: 1 for r in EXPECTED.values() if r}

    kept = read_manifest(out / "manifest.jsonl")
    assert sorted(Path(r["path"]).name for r in kept) == ["tissue_a.png", "tissue_b.jpg"]
    for r in kept:
        assert (
            r["license"] == "by"
            and r["uid"].startswith("PMC")
            and r["parent"].startswith("figures/")
        )
        assert r["score"] == 0.9 and len(r["bbox"]) == 4  # separate's score is not overwritten
        assert (out / r["path"]).is_file()  # linked inside OUT, the manifest stays self-contained
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert {Path(r["path"]).name: r["reason"] for r in rejected} == {
        k: v for k, v in EXPECTED.items() if v
    }
    assert all(r["uid"].startswith("PMC") and r["detail"] for r in rejected)
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [Path(f["path"]).name for f in skipped] == ["corrupt.png"]
    assert "not a readable image" in skipped[0]["reason"]

    before = _outputs(out)
    s2 = run_curate(CurateConfig(input=str(folder / "manifest.jsonl"), out=str(out), quiet=True))
    assert s2 == s and _outputs(out) == before


def _outputs(out: Path) -> dict[str, bytes]:
    """The output files (the hidden measurement cache aside)."""
    return {
        p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith(".")
    }


def test_rerun_resumes_from_the_cache(
    tmp_path: Path, panels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second run (e.g. after a crash) does not open images measured before, and agrees with the first."""
    import glomssl.mining.curate as curate_mod

    out = tmp_path / "o"
    s = run_curate(CurateConfig(input=str(panels), out=str(out), quiet=True))
    before = _outputs(out)
    opened: list[str] = []

    def spy(path: object, max_side: int | None = None) -> Image.Image:
        opened.append(Path(str(path)).name)
        return load_rgb(path, max_side)  # type: ignore[arg-type]

    monkeypatch.setattr(curate_mod, "load_rgb", spy)
    assert run_curate(CurateConfig(input=str(panels), out=str(out), quiet=True)) == s
    assert opened == ["corrupt.png"]  # only the unreadable file is tried again
    assert _outputs(out) == before


def test_folder_input_and_out_holding_the_images(tmp_path: Path) -> None:
    folder = make_panels(tmp_path / "corpus" / "panels")
    out = tmp_path / "corpus"
    s = run_curate(CurateConfig(input=str(folder), out=str(out), quiet=True))
    assert s["kept"] == 2
    kept = read_manifest(out / "manifest.jsonl")
    # images already inside OUT are referenced in place, not linked again
    assert sorted(r["path"] for r in kept) == ["panels/tissue_a.png", "panels/tissue_b.jpg"]
    assert not (out / "images").exists()


def test_bad_inputs_raise_one_line_errors(tmp_path: Path, panels: Path) -> None:
    with pytest.raises(GlomsslError, match="neither a folder"):
        run_curate(CurateConfig(input=str(tmp_path / "nope"), out=str(tmp_path / "o")))
    with pytest.raises(GlomsslError, match="threshold"):
        run_curate(CurateConfig(input=str(tmp_path), out=str(tmp_path / "o"), threshold=1.5))
    with pytest.raises(GlomsslError, match="does not exist"):
        run_curate(CurateConfig(input=str(panels), out=str(tmp_path / "o"), scorer="missing.json"))
    manifest = tmp_path / "m" / "manifest.jsonl"
    manifest.parent.mkdir()
    manifest.write_text("")
    with pytest.raises(GlomsslError, match="overwrite the input manifest"):
        run_curate(CurateConfig(input=str(manifest), out=str(manifest.parent)))


def test_cli_curate(tmp_path: Path, panels: Path) -> None:
    folder = panels
    runner = CliRunner()
    res = runner.invoke(cli, ["curate", "--input", str(folder), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "kept 2" in res.output and "chart 1" in res.output
    res = runner.invoke(
        cli, ["curate", "--input", str(folder), "--out", str(tmp_path / "o2"), "--threshold", "2"]
    )
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "Error:" in res.output
    res = runner.invoke(cli, ["curate", "--out", str(tmp_path / "o3")])
    assert res.exit_code == 2 and "--input" in res.output
    res = runner.invoke(cli, ["curate", "--input", str(folder), "--out", "x", "--dry-run"])
    assert res.exit_code == 0 and "threshold: 0.7" in res.output
    res = runner.invoke(cli, ["curate", "--input", str(folder), "--out", str(tmp_path / "j")])
    plain = res.output
    res = runner.invoke(
        cli, ["curate", "--input", str(folder), "--out", str(tmp_path / "j"), "--json"]
    )
    assert len(plain.splitlines()) == 1 and len(res.output.splitlines()) == 1
    s = json.loads(res.output)  # the same run, for machines
    assert (s["kept"], s["reasons"]["chart"], s["skipped"]) == (2, 1, 1)


def _rule(im: Image.Image) -> str | None:
    """The statistics verdict on a full-size image, measured on its 256 px thumbnail as curate does."""
    thumb = im.copy()
    thumb.thumbnail((256, 256), Image.Resampling.BOX)
    return classify_stats(image_stats(np.asarray(thumb)), im.width, im.height, CurateConfig())[0]


@pytest.mark.realdata
def test_statistics_keep_every_real_tissue_image(shared_data: Path) -> None:
    """All 676 PAS glomerulus crops, the 12 PAS whole-slide tiles and the H&E/IHC images pass;
    real fluorescence and phase contrast do not."""
    crops = sorted((shared_data / "glomeruli" / "images").glob("*.png"))
    tiles = sorted((shared_data / "aidpath" / "images").glob("*.png"))
    assert len(crops) == 676 and len(tiles) == 12
    dropped = {f.name: r for f in crops + tiles if (r := _rule(load_rgb(f))) is not None}
    assert dropped == {}
    hist = shared_data / "histology"
    expect = {
        "he_stardist.jpg": None,
        "he_tiatoolbox_target.png": None,
        "ihc_colon.png": None,
        "fluorescence_nuclei.tif": "fluorescence",
        "phase_cell.png": "greyscale",
    }
    assert {name: _rule(load_rgb(hist / name)) for name in expect} == expect


@pytest.mark.realdata
def test_statistics_reject_real_journal_panels(shared_data: Path) -> None:
    """Panels of real compound figures (materials science: plots, schematics, SEM/TEM micrographs,
    false-colour maps, micrographs with colour insets) are not light-microscopy tissue: the
    statistics drop them, for the right reason (before the false-colour, grey-with-colour-marks and
    smooth-shading rules, 3 of the 78 boxed panels were kept)."""
    root = shared_data / "compound_figures" / "exsclaim"
    figures = json.loads((root / "boxes.json").read_text())
    got: dict[str, list[str | None]] = {}
    for fig in figures:
        im = load_rgb(root / "images" / fig["file"])
        for b in fig["boxes"]:
            crop = im.crop((b["x0"], b["y0"], b["x1"], b["y1"]))
            got.setdefault(b["classification"], []).append(_rule(crop))
    every = [r for rs in got.values() for r in rs]
    assert len(every) == 78 and every.count(None) == 0
    drawings = got["graph"] + got["illustration"]
    assert np.mean([r in ("chart", "diagram", "text", "false_colour") for r in drawings]) >= 0.9
    assert np.mean([r == "chart" for r in got["graph"]]) >= 0.6
    assert np.mean([r == "greyscale" for r in got["microscopy"]]) >= 0.9  # electron micrographs


def test_place_file_never_writes_outside_out(tmp_path: Path, panels: Path) -> None:
    from glomssl.mining.folder_stage import place_file

    out = (tmp_path / "out").resolve()
    out.mkdir()
    for rel in ("../../evil.png", "/abs/evil.png", "sub/ok.png"):
        got = place_file(panels / "chart.png", rel, out)
        assert ".." not in Path(got).parts and (out / got).resolve().is_relative_to(out)
        assert (out / got).read_bytes() == (panels / "chart.png").read_bytes()
    assert place_file(panels / "chart.png", "sub/ok.png", out) == "images/sub/ok.png"  # rerun: same
