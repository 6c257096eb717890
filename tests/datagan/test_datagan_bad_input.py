"""Bad input to `gan` and `datagan` commands: one-line errors (exit 2) that name the option, checked
before any work and before --out is created; outputs made with other settings are never overwritten
or mislabelled (a painted mask, a manifest row, a resumed projection, a labeler's generator)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from glomssl.cli.datagan import datagan
from glomssl.cli.gan import gan
from glomssl.datagan.generate import GenerateConfig, run_generate
from glomssl.datagan.networks import create_discriminator, create_generator
from glomssl.datagan.snapshot import save_snapshot
from glomssl.errors import GlomsslError

RES = 32


def _snapshot(run: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    G = create_generator("small", RES, channel_max=8)
    D = create_discriminator("small", RES, channel_max=8)
    save_snapshot(run / "snapshot-000000.safetensors", G, D, copy.deepcopy(G), 0.0, 0)
    return run


def _one_line_error(r: Result, *needles: str) -> str:
    """The command failed with exit 2 and one `Error:` line (no traceback) holding every needle."""
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _paint_masks(ann: Path) -> None:
    for png in sorted(ann.glob("sample_*.png")):
        grey = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
        Image.fromarray((grey > np.median(grey)).astype(np.uint8)).save(
            ann / f"{png.stem}_mask.png"
        )


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """run1 and fresh (two generators of the same shapes), an annotation folder sampled from run1
    with painted masks, and a labeler trained on it."""
    root = tmp_path_factory.mktemp("bad")
    run1, fresh = _snapshot(root / "run1", 0), _snapshot(root / "fresh", 3)
    ann = root / "ann"
    cli = CliRunner()
    r = cli.invoke(datagan, ["sample", "--network", str(run1), "--n", "2", "--trunc", "1"] + [
        "--out", str(ann)])  # fmt: skip
    assert r.exit_code == 0, r.output
    _paint_masks(ann)
    lab = root / "lab"
    args = ["train-labeler", "--network", str(run1), "--annotations", str(ann), "--num-classes"]
    args += ["2", "--out", str(lab), "--k", "2", "--rounds", "1", "--epochs", "1", "--quiet"]
    r = cli.invoke(datagan, [*args, "--max-pixels-per-image", "100"])
    assert r.exit_code == 0, r.output
    imgs = root / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (RES, RES, 3), dtype=np.uint8)).save(imgs / f"{i}.png")
    return {"root": root, "run1": run1, "fresh": fresh, "ann": ann, "lab": lab, "imgs": imgs}


# -- 1. gan train --accelerator / --strategy ---------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "allowed"),
    [("--accelerator", "tpu", "auto, cpu, gpu"), ("--strategy", "foo", "auto, ddp, ddp_spawn")],
)
def test_gan_train_unknown_accelerator_or_strategy(
    nets: dict[str, Path], tmp_path: Path, flag: str, value: str, allowed: str
) -> None:
    out = tmp_path / "r"
    args = ["train", "--data", str(nets["imgs"]), "--out", str(out), "--resolution", "32"]
    r = CliRunner().invoke(gan, [*args, "--cfg", "small", "--kimg", "0", flag, value])
    _one_line_error(r, f"{flag} '{value}'", allowed)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gan_train_gpu_without_gpu_is_one_line(nets: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "r"
    args = ["train", "--data", str(nets["imgs"]), "--out", str(out), "--resolution", "32"]
    r = CliRunner().invoke(gan, [*args, "--cfg", "small", "--kimg", "0", "--accelerator", "gpu"])
    _one_line_error(r, "--accelerator gpu", "--accelerator cpu")
    assert not out.exists()


# -- 2. gan metrics --out checked before the work ------------------------------------------------------


def test_gan_metrics_out_is_checked_before_the_work(
    nets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import glomssl.datagan.metrics as metrics

    def no_work(*_a: object, **_k: object) -> None:
        raise AssertionError("FID work started before --out was checked")

    monkeypatch.setattr(metrics, "MetricState", no_work)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    inc = tmp_path / "inc.pth"
    inc.write_bytes(b"x")
    args = ["metrics", "--network", str(nets["run1"]), "--data", str(nets["imgs"]), "--num", "8"]
    args += ["--metric-inception", str(inc), "--device", "cpu", "--out"]
    r = CliRunner().invoke(gan, [*args, str(notes / "x.json")])
    _one_line_error(r, "--out", "notes.txt is a file")
    assert notes.read_text() == "my notes\n"
    r = CliRunner().invoke(gan, [*args, str(tmp_path)])
    _one_line_error(r, "--out", "is a folder")


# -- 3. datagan sample never overwrites a sample ----------------------------------------------------


def test_sample_never_overwrites_samples_of_other_settings(
    nets: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    ann = tmp_path / "ann2"
    shutil.copytree(nets["ann"], ann)
    before = {p.name: p.read_bytes() for p in ann.iterdir()}
    cli = CliRunner()
    base = ["sample", "--n", "2", "--out", str(ann)]
    r = cli.invoke(datagan, [*base, "--network", str(nets["fresh"]), "--trunc", "1"])
    _one_line_error(r, "--out", "sample_000000", "sample_000000_mask.png")
    r = cli.invoke(datagan, [*base, "--network", str(nets["run1"]), "--trunc", "0.5"])
    _one_line_error(r, "--trunc 1", "sample_000000")
    # samples of another generator under other names would mix two generators in one folder
    r = cli.invoke(datagan, [*base, "--network", str(nets["fresh"]), "--seed", "10"])
    _one_line_error(r, "another generator")
    assert {p.name: p.read_bytes() for p in ann.iterdir()} == before
    # the same command again keeps what is there and adds the new seeds
    r = cli.invoke(datagan, [*base, "--network", str(nets["run1"]), "--trunc", "1", "--n", "3"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["generated"] == 1 and (ann / "sample_000002.npz").is_file()
    assert all((ann / k).read_bytes() == v for k, v in before.items())


# -- 4. gan generate keeps each row's provenance true --------------------------------------------


def test_gan_generate_refuses_an_out_made_with_other_settings(
    nets: dict[str, Path], tmp_path: Path
) -> None:
    from glomssl.manifest import read_manifest

    out = tmp_path / "fakes"

    def gen(network: Path, trunc: float, seeds: str = "0-2") -> dict[str, object]:
        cfg = GenerateConfig(network=str(network), seeds=seeds, trunc=trunc, out=str(out))
        cfg.quiet = True
        return run_generate(cfg)

    gen(nets["run1"], 1.0)
    manifest = (out / "manifest.jsonl").read_bytes()
    with pytest.raises(GlomsslError, match=r"--trunc 1\.0") as info:
        gen(nets["run1"], 0.5, "0-5")
    assert "\n" not in str(info.value)
    with pytest.raises(GlomsslError, match="generator .*run1"):
        gen(nets["fresh"], 1.0, "0-5")
    assert (out / "manifest.jsonl").read_bytes() == manifest and not (out / "seed0005.png").exists()
    assert gen(nets["run1"], 1.0, "0-5")["generated"] == 3  # same settings: resumes
    rows = read_manifest(out / "manifest.jsonl")
    assert {r["trunc"] for r in rows} == {1.0} and len(rows[0]["source"]["sha256"]) == 64
    # images whose settings are not recorded anywhere are not relabelled either
    (out / "generate.json").unlink()
    (out / "manifest.jsonl").unlink()
    with pytest.raises(GlomsslError, match="not recorded"):
        gen(nets["run1"], 1.0)


# -- 5. datagan project / generate / train-labeler: the generator is part of the identity --------


def _project_args(nets: dict[str, Path], network: Path, out: Path) -> list[str]:
    return ["project", "--network", str(network), "--images", str(nets["imgs"])] + [
        "--out", str(out), "--steps", "1", "--no-optimize-noise", "--quiet"]  # fmt: skip


def test_project_resume_checks_the_generator_and_prints_valid_json(
    nets: dict[str, Path], tmp_path: Path
) -> None:
    proj = tmp_path / "proj"
    cli = CliRunner()
    r = cli.invoke(datagan, _project_args(nets, nets["run1"], proj))
    assert r.exit_code == 0, r.output
    r = cli.invoke(datagan, _project_args(nets, nets["run1"], proj))  # all done: nothing projected
    assert r.exit_code == 0, r.output
    assert '"mean_mse": null' in r.output and json.loads(r.output)["skipped"] == 8
    r = cli.invoke(datagan, _project_args(nets, nets["fresh"], proj))
    _one_line_error(r, "--out", "another generator", "--network")


def test_labeler_and_annotations_of_another_generator_are_refused(
    nets: dict[str, Path], tmp_path: Path
) -> None:
    cli = CliRunner()
    syn = tmp_path / "syn"
    r = cli.invoke(datagan, ["generate", "--network", str(nets["fresh"]), "--labeler"] + [
        str(nets["lab"]), "--n", "1", "--out", str(syn)])  # fmt: skip
    _one_line_error(r, "--labeler", "another generator", "--network")
    assert not syn.exists()
    lab2 = tmp_path / "lab2"
    r = cli.invoke(datagan, ["train-labeler", "--network", str(nets["fresh"]), "--annotations"] + [
        str(nets["ann"]), "--num-classes", "2", "--out", str(lab2)])  # fmt: skip
    _one_line_error(r, "another generator", "--network")
    assert not lab2.exists()


# -- 6. huge values ----------------------------------------------------------------------------------


def test_huge_values_are_refused(nets: dict[str, Path], tmp_path: Path) -> None:
    cli = CliRunner()
    out = tmp_path / "r"
    train = ["train", "--data", str(nets["imgs"]), "--out", str(out), "--resolution", "32"]
    train += ["--cfg", "small", "--channel-max", "8", "--workers", "0", "--accelerator", "cpu"]
    # --dry-run: these are refused when the options are read (before they cost time or memory)
    r = cli.invoke(gan, [*train, "--batch-size", "1000000", "--dry-run"])
    _one_line_error(r, "--batch-size", "4096")
    _one_line_error(cli.invoke(gan, [*train, "--kimg", "1e300", "--dry-run"]), "--kimg")
    assert not out.exists()
    r = cli.invoke(datagan, ["sample", "--network", str(nets["run1"]), "--n", "100000000"] + [
        "--out", str(tmp_path / "s"), "--dry-run"])  # fmt: skip
    _one_line_error(r, "--n")
    assert not (tmp_path / "s").exists()
    inc = tmp_path / "inc.pth"
    inc.write_bytes(b"x")
    metrics = ["metrics", "--network", str(nets["run1"]), "--data", str(nets["imgs"])]
    metrics += ["--metric-inception", str(inc), "--device", "cpu", "--num"]
    _one_line_error(cli.invoke(gan, [*metrics, "1000000"]), "--num")


def test_metrics_score_no_more_images_than_there_are_and_say_so(
    nets: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--num above the real images (the default 1000 on a small set) is not an error, and real
    images are not repeated: as many as there are are scored, with a warning."""
    import glomssl.datagan.metrics as metrics

    seen: list[int] = []

    class Recorder:
        def __init__(self, encoder, dataset, num, device, inception=None):  # type: ignore[no-untyped-def]
            seen.append(num)

        def evaluate(self, g):  # type: ignore[no-untyped-def]
            return {"fid_enc": 1.0}

    monkeypatch.setattr(metrics, "MetricState", Recorder)
    inc = tmp_path / "inc.pth"
    inc.write_bytes(b"x")  # only its existence is checked before the (replaced) metric state
    r = metrics.run_gan_metrics(str(nets["run1"]), [str(nets["imgs"])], metric_inception=str(inc),
                                num=1000, device="cpu")  # fmt: skip
    assert seen == [8] and r["num"] == 8
    assert "8 readable real images" in r["warnings"][0]


# -- 7. no stray --out folders; one line for an unreadable --images folder ------------------------


def test_refused_runs_leave_no_out_folder(nets: dict[str, Path], tmp_path: Path) -> None:
    cli = CliRunner()
    out = tmp_path / "out"
    junk = tmp_path / "x.pt"
    junk.write_bytes(b"not a snapshot")
    empty = tmp_path / "empty"
    empty.mkdir()
    lab = ["train-labeler", "--network", str(nets["run1"]), "--out", str(out)]
    cases = [
        ["sample", "--network", str(junk), "--out", str(out)],
        ["train-labeler", "--network", "nope", "--annotations", str(nets["ann"])]
        + ["--num-classes", "2", "--out", str(out)],
        [*lab, "--annotations", str(tmp_path / "missing"), "--num-classes", "2"],
        [*lab, "--annotations", str(empty), "--num-classes", "2"],
        [*lab, "--annotations", str(nets["ann"]), "--num-classes", "1"],
        ["generate", "--network", str(nets["run1"]), "--labeler", "nope", "--out", str(out)],
        ["project", "--network", str(nets["run1"]), "--images", str(nets["imgs"])]
        + ["--encoder", str(nets["run1"]), "--out", str(out)],
    ]
    for args in cases:
        _one_line_error(cli.invoke(datagan, args))
        assert not out.exists(), args
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    r = cli.invoke(datagan, ["project", "--network", str(nets["run1"]), "--images"] + [
        str(corrupt), "--out", str(out)])  # fmt: skip
    _one_line_error(r, "--images", "a.png")
    assert not out.exists()


# -- 8. errors name the option the user typed -------------------------------------------------------


def test_errors_name_the_option(nets: dict[str, Path], tmp_path: Path) -> None:
    cli = CliRunner()
    args = ["metrics", "--network", str(nets["run1"]), "--data", str(nets["imgs"]), "--num", "8"]
    r = cli.invoke(gan, [*args, "--metric-encoder", "nope", "--device", "cpu"])
    _one_line_error(r, "--metric-encoder nope does not exist")
    r = cli.invoke(datagan, ["train-labeler", "--network", str(nets["run1"]), "--annotations"] + [
        str(nets["ann"]), "--num-classes", "2", "--out", str(tmp_path / "l"), "--hidden", "abc"])  # fmt: skip
    _one_line_error(r, "--hidden")
    assert not (tmp_path / "l").exists()
    for cmd in (["train", "--data", str(nets["imgs"])], ["generate", "--network", "x"]):
        r = cli.invoke(gan, [*cmd, "--out", str(tmp_path / "o"), "--config", str(tmp_path)])
        _one_line_error(r, "--config", "is a directory")
