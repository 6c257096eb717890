"""Label factory end to end on the tiny "small" generator: generate, drop fraction, resume, shards, CLI."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from glomssl.cli.datagan import datagan
from glomssl.datagan.factory import GenerateConfig, run_datagan_generate
from glomssl.datagan.networks import create_discriminator, create_generator
from glomssl.datagan.snapshot import save_snapshot
from glomssl.manifest import read_manifest

RES = 32
C = 3


def _snapshot(folder: Path, res: int = RES, seed: int = 0, nimg: int = 0) -> Path:
    torch.manual_seed(seed)
    G = create_generator("small", res)
    D = create_discriminator("small", res)
    name = f"snapshot-{nimg // 1000:06d}.safetensors"
    save_snapshot(folder / name, G, D, copy.deepcopy(G), 0.0, nimg)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run folder, annotation folder (through the CLI) and a trained labeler."""
    root = tmp_path_factory.mktemp("fac")
    run = _snapshot(root / "run")
    ann = root / "ann"
    cli = CliRunner()
    r = cli.invoke(datagan, ["sample", "--network", str(run), "--n", "3", "--out", str(ann)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["images"] == 3
    for png in sorted(ann.glob("sample_*.png")):
        grey = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
        lo, hi = np.percentile(grey, [33, 66])
        mask = (grey > lo).astype(np.uint8) + (grey > hi).astype(np.uint8)
        Image.fromarray(mask).save(ann / f"{png.stem}_mask.png")
    lab = root / "lab"
    args = ["train-labeler", "--network", str(run), "--annotations", str(ann), "--num-classes"]
    args += [str(C), "--out", str(lab), "--k", "3", "--rounds", "1", "--epochs", "2"]
    args += ["--max-pixels-per-image", "300", "--quiet"]
    r = cli.invoke(datagan, args)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["images"] == 3
    return {"root": root, "run": run, "ann": ann, "lab": lab}


def _cfg(setup: dict[str, Path], out: Path, **kw: object) -> GenerateConfig:
    base = dict(network=str(setup["run"]), labeler=str(setup["lab"]), out=str(out), quiet=True)
    base.update(kw)
    return GenerateConfig(**base)  # type: ignore[arg-type]


def _same_manifest(a: Path, b: Path) -> None:
    """Same pairs (files, hashes, classes); uncertainties equal up to float rounding, which depends
    on how many images shared a forward pass."""
    ra, rb = read_manifest(a / "manifest.jsonl"), read_manifest(b / "manifest.jsonl")
    strip = [{k: v for k, v in r.items() if k != "uncertainty"} for r in ra]
    assert strip == [{k: v for k, v in r.items() if k != "uncertainty"} for r in rb]
    ua, ub = [r["uncertainty"] for r in ra], [r["uncertainty"] for r in rb]
    assert np.allclose(ua, ub, rtol=1e-5, atol=1e-7)


def _masks(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted((out / "masks").glob("*.png"))}


@pytest.fixture(scope="module")
def reference(setup: dict[str, Path]) -> Path:
    """One uninterrupted run: 4 kept of ceil(4 / 0.5) = 8 candidates."""
    out = setup["root"] / "ref"
    res = run_datagan_generate(_cfg(setup, out, n=4, drop_uncertain=0.5))
    assert res["kept"] == 4 and res["dropped"] == 4 and res["candidates"] == 8
    return out


def test_generate_outputs_and_drop_fraction(reference: Path) -> None:
    rows = read_manifest(reference / "manifest.jsonl")
    assert len(rows) == 4
    recs = [json.loads(p.read_text()) for p in (reference / "records").glob("*.json")]
    assert len(recs) == 8
    kept = {r["seed"] for r in rows}
    worst_kept = max(r["uncertainty"] for r in recs if r["seed"] in kept)
    best_dropped = min(r["uncertainty"] for r in recs if r["seed"] not in kept)
    assert worst_kept <= best_dropped  # the n most certain are written
    assert len(list((reference / "images").glob("*.png"))) == 4
    assert len(list((reference / "masks").glob("*.png"))) == 4
    for row in rows:
        img = Image.open(reference / row["path"])
        mask = np.asarray(Image.open(reference / row["mask"]))
        assert img.size == (RES, RES) and mask.shape == (RES, RES)
        assert mask.max() < C
        fr = row["class_fractions"]
        assert len(fr) == C and abs(sum(fr) - 1) < 1e-4
        assert np.allclose(fr, np.bincount(mask.ravel(), minlength=C) / mask.size, atol=1e-5)
        assert row["uncertainty"] >= 0
    preview = np.asarray(Image.open(reference / "preview.png"))
    assert preview.shape == (4 * 256, 2 * 256, 3)  # 4 rows of image | overlay, 256 px tiles
    step = 256 // RES  # enlarged by nearest neighbour: every source pixel is a uniform block
    blocks = np.repeat(np.repeat(preview[::step, ::step], step, 0), step, 1)
    assert np.array_equal(blocks, preview)


def test_budgeted_batches_give_the_images_of_one_by_one(
    setup: dict[str, Path], reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`datagan generate` and `datagan sample` draw several images per pass when the memory budget
    allows; an image and its mask must not depend on the batch it was drawn in."""
    import glomssl.datagan.factory as factory
    from glomssl.datagan.budget import image_bytes, images_per_batch
    from glomssl.datagan.factory import SampleConfig, run_datagan_sample
    from glomssl.datagan.snapshot import load_generator

    G, _ = load_generator(setup["run"])
    assert images_per_batch(G, 1024, features=True) > 4  # the reference run drew batches
    assert image_bytes(G, features=True) > image_bytes(G)
    big = create_generator("auto", 512, channel_max=512)
    assert images_per_batch(big, 1024) < images_per_batch(big, 4096) < 64
    monkeypatch.setattr(factory, "images_per_batch", lambda *a, **k: 1)
    out = setup["root"] / "one-by-one"
    run_datagan_generate(_cfg(setup, out, n=4, drop_uncertain=0.5))
    a, b = _masks(out), _masks(reference)
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    for name in a:
        x = np.asarray(Image.open(out / "images" / name), dtype=int)
        y = np.asarray(Image.open(reference / "images" / name), dtype=int)
        assert np.abs(x - y).max() <= 1  # float rounding may move a value across .5
    one = setup["root"] / "sample1"
    run_datagan_sample(SampleConfig(network=str(setup["run"]), out=str(one), n=3), None)
    monkeypatch.setattr(factory, "images_per_batch", lambda *a, **k: 3)
    three = setup["root"] / "sample3"
    run_datagan_sample(SampleConfig(network=str(setup["run"]), out=str(three), n=3), None)
    for png in sorted(one.glob("*.png")):
        x = np.asarray(Image.open(png), dtype=int)
        y = np.asarray(Image.open(three / png.name), dtype=int)
        assert np.abs(x - y).max() <= 1


def test_an_output_folder_never_mixes_networks_or_labelers(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    """plan.json records the snapshot and labeler files (path + sha256); a resume after `gan train`
    wrote a newer snapshot, or a shard with another labeler, is refused (issue 10, item 8)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(setup["run"], run)
    out = tmp_path / "syn"
    cfg = _cfg(setup, out, n=2, network=str(run))
    run_datagan_generate(cfg, stop_after=1)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["network"]["path"].endswith("snapshot-000000.safetensors")
    assert len(plan["network"]["sha256"]) == 64 and len(plan["labeler"]["sha256"]) == 64
    _snapshot(run, seed=5, nimg=4000)  # training went on: the run folder now resolves to it
    cli = CliRunner()
    args = ["generate", "--network", str(run), "--labeler", str(setup["lab"]), "--out", str(out)]
    r = cli.invoke(datagan, [*args, "--n", "2"])
    assert r.exit_code == 2 and "--network" in r.output and "snapshot-000000" in r.output
    assert len(r.output.strip().splitlines()) == 1
    other_lab = tmp_path / "lab2"
    shutil.copytree(setup["lab"], other_lab)
    from safetensors.torch import load_file, save_file

    w = load_file(str(other_lab / "labeler.safetensors"))
    first = sorted(w)[0]
    w[first] = w[first] + 1
    save_file(w, str(other_lab / "labeler.safetensors"))
    snap0 = str(run / "snapshot-000000.safetensors")
    r = cli.invoke(
        datagan, [*args[:2], snap0, "--labeler", str(other_lab), "--out", str(out), "--n", "2"]
    )
    assert r.exit_code == 2 and "--labeler" in r.output
    done = run_datagan_generate(_cfg(setup, out, n=2, network=snap0))  # the same files resume
    assert done["kept"] == 2


def test_band_size_does_not_change_labels(setup: dict[str, Path], reference: Path) -> None:
    """Banded labelling equals whole-image labelling; outputs are deterministic by seed."""
    from glomssl.datagan.factory import label_image, seed_latent
    from glomssl.datagan.features import full_features, synthesize
    from glomssl.datagan.labeler import load_labeler
    from glomssl.datagan.snapshot import load_generator

    G, _ = load_generator(setup["run"])
    lab, _ = load_labeler(setup["lab"])
    _img, feats = synthesize(G, seed_latent(G, 5, 0.7))
    m1, js1 = label_image(feats, lab, RES, band_bytes=1)  # one row per band
    m_all, js_all = label_image(feats, lab, RES, band_bytes=2**30)  # one band
    full = full_features(feats, (RES, RES)).permute(1, 2, 0).reshape(-1, lab.in_dim)  # naive
    with torch.no_grad():
        mean, js_naive = lab.predict(full)
    assert torch.equal(m1, m_all) and torch.equal(m_all.flatten(), mean.argmax(-1))
    torch.testing.assert_close(js1, js_all, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(js_all.flatten(), js_naive, atol=1e-6, rtol=1e-5)

    out = setup["root"] / "thin"  # --band-mb 1 -> 18-row bands at this width
    run_datagan_generate(_cfg(setup, out, n=4, drop_uncertain=0.5, band_mb=1))
    a, b = _masks(out), _masks(reference)
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    for name in a:
        x = np.asarray(Image.open(out / "images" / name))
        y = np.asarray(Image.open(reference / "images" / name))
        assert np.array_equal(x, y)


def test_resume_after_stop_and_shards(setup: dict[str, Path], reference: Path) -> None:
    out = setup["root"] / "resume"
    part = run_datagan_generate(_cfg(setup, out, n=4, drop_uncertain=0.5), stop_after=3)
    assert part["generated"] == 3 and "kept" not in part
    assert not (out / "manifest.jsonl").exists()
    rest = run_datagan_generate(_cfg(setup, out, n=4, drop_uncertain=0.5))
    assert rest["generated"] == 5 and rest["kept"] == 4
    _same_manifest(out, reference)

    sh = setup["root"] / "shards"
    a = run_datagan_generate(_cfg(setup, sh, n=4, drop_uncertain=0.5, shard="0/2"))
    assert a["generated"] == 4 and "kept" not in a  # the other shard's seeds are still missing
    b = run_datagan_generate(_cfg(setup, sh, n=4, drop_uncertain=0.5, shard="1/2"))
    assert b["generated"] == 4 and b["kept"] == 4
    _same_manifest(sh, reference)


@pytest.mark.parametrize(
    "damage", [b"", b"PK\x03\x04 cut short", b"\x9f\xff", b"[1, 2]\n", b"{}\n"]
)
def test_resume_with_damaged_records_and_plan(
    setup: dict[str, Path], reference: Path, tmp_path: Path, damage: bytes
) -> None:
    """A damaged records/<seed>.json (records are written without fsync) is made again; a damaged
    plan.json is a one-line error, not a traceback."""
    from glomssl.errors import GlomsslError

    out = tmp_path / "out"
    part = run_datagan_generate(_cfg(setup, out, n=4, drop_uncertain=0.5), stop_after=3)
    (out / "records" / "00000001.json").write_bytes(damage)
    rest = run_datagan_generate(_cfg(setup, out, n=4, drop_uncertain=0.5))
    assert part["generated"] == 3 and rest["generated"] == 6 and rest["kept"] == 4
    _same_manifest(out, reference)
    (out / "plan.json").write_bytes(damage)
    with pytest.raises(GlomsslError, match=r"plan\.json is damaged|other settings") as info:
        run_datagan_generate(_cfg(setup, out, n=4, drop_uncertain=0.5))
    assert "\n" not in str(info.value)


def test_resume_after_kill(setup: dict[str, Path], reference: Path) -> None:
    """kill -9 a real `datagan generate` process mid-run; the rerun completes the same set."""
    out = setup["root"] / "killed"
    code = (
        "import sys; from glomssl.cli.datagan import datagan; "
        "datagan.main(sys.argv[1:], standalone_mode=True)"
    )
    args = ["generate", "--network", str(setup["run"]), "--labeler", str(setup["lab"])]
    args += ["--out", str(out), "--n", "4", "--drop-uncertain", "0.5", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (
            len(list((out / "records").glob("*.json"))) >= 1
            if (out / "records").is_dir()
            else False
        ):
            break
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.jsonl").exists() or not killed
    r = CliRunner().invoke(datagan, args)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["kept"] == 4
    _same_manifest(out, reference)


def test_cli_errors_are_one_line(setup: dict[str, Path], tmp_path: Path) -> None:
    cli = CliRunner()
    base = ["generate", "--network", str(setup["run"]), "--labeler", str(setup["lab"])]
    r = cli.invoke(datagan, [*base, "--out", str(tmp_path / "x"), "--drop-uncertain", "1.5"])
    assert r.exit_code == 2 and "--drop-uncertain must be >= 0 and < 1" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = cli.invoke(datagan, [*base, "--out", str(tmp_path / "y"), "--shard", "3/2"])
    assert r.exit_code == 2 and "--shard" in r.output
    # a labeler trained on another generator (64 px) is refused before writing any pair
    other = _snapshot(tmp_path / "run64", 64)
    r = cli.invoke(
        datagan,
        [
            "generate",
            "--network",
            str(other),
            "--labeler",
            str(setup["lab"]),
            "--out",
            str(tmp_path / "z"),
        ],
    )
    assert r.exit_code == 2 and "different generator" in r.output
    assert not list((tmp_path / "z" / "images").glob("*.png"))
    # a changed --n on an existing output folder is refused instead of mixing runs
    ok = tmp_path / "w"
    run_datagan_generate(_cfg(setup, ok, n=1))
    r = cli.invoke(datagan, [*base, "--out", str(ok), "--n", "2"])
    assert r.exit_code == 2 and "other settings" in r.output
    r = cli.invoke(datagan, ["sample", "--network", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "does not exist" in r.output
    bad_ann = tmp_path / "ann_bad"
    bad_ann.mkdir()
    Image.fromarray(np.zeros((RES, RES), np.uint8)).save(bad_ann / "lost_mask.png")
    r = cli.invoke(
        datagan,
        ["train-labeler", "--network", str(setup["run"]), "--annotations", str(bad_ann)]
        + ["--num-classes", "2", "--out", str(tmp_path / "lab_bad")],
    )
    assert r.exit_code == 2 and "has no latent lost.npz" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = cli.invoke(datagan, [*base, "--out", str(tmp_path / "v"), "--dry-run"])
    assert r.exit_code == 0 and "drop_uncertain: 0.0" in r.output


def test_console_command_one_line_error(tmp_path: Path) -> None:
    """Through the real `glomssl` entry point in a subprocess: a bad --network is one line, exit 2."""
    r = subprocess.run(
        [sys.executable, "-m", "glomssl", "datagan", "sample", "--network", str(tmp_path / "no")]
        + ["--out", str(tmp_path / "ann")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2
    assert (
        r.stderr.strip().startswith("Error: --network") and len(r.stderr.strip().splitlines()) == 1
    )
