"""Bad input to pretrain, embed and probe: one line naming the option typed and the fix, exit code 2,
no traceback, and nothing left in --out (an audit's findings)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from glomssl.cli import cli
from glomssl.errors import GlomsslError
from glomssl.ssl.probe import ProbeConfig, load_labels, run_probe
from glomssl.ssl.train import PretrainConfig, run_pretrain

# the smallest real pretraining run: 32 px, 4 images a batch, a 32-d head, one process
TINY = ["--image-size", "32", "--batch-size", "4", "--workers", "0", "--accelerator", "cpu",
        "--warmup-steps", "0", "--quiet", "--set", "proj_dim=32"]  # fmt: skip


def refused(args: list[str], *needles: str) -> str:
    """Run the CLI; it must fail with exit code 2 and ONE line holding every needle."""
    r = CliRunner().invoke(cli, args)
    out = r.output.strip()
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and out.count("\n") == 0, r.output
    assert out.startswith("Error: "), r.output
    for n in needles:
        assert n in out, out
    return out


@pytest.fixture()
def run(tmp_path: Path, image_folder: Path) -> Path:
    """A finished (random-init) run folder, as `pretrain --max-steps 0` writes it."""
    out = tmp_path / "run"
    run_pretrain(PretrainConfig(data=[str(image_folder)], out=str(out), max_steps=0, image_size=32))
    return tmp_path / "run"


@pytest.fixture()
def labelled(tmp_path: Path) -> tuple[Path, Path]:
    """An embeddings .npz of 24 images and a labels CSV naming them (12 slides, two classes)."""
    rng = np.random.default_rng(0)
    paths = [f"c{i}.png" for i in range(24)]
    y = ["ab"[i % 2] for i in range(24)]
    x = rng.normal(size=(24, 8)).astype(np.float32)
    x[:, 0] += 3 * np.array([c == "a" for c in y])
    np.savez(tmp_path / "e.npz", paths=np.asarray(paths), embeddings=x)
    rows = ["image,label,slide"] + [f"{p},{c},s{i // 2}" for i, (p, c) in enumerate(zip(paths, y))]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "e.npz", tmp_path / "labels.csv"


# -- 1: --image-size has an upper bound -------------------------------------------------------------


def test_a_huge_image_size_is_refused_before_anything_is_written(
    tmp_path: Path, image_folder: Path, run: Path
) -> None:
    out = tmp_path / "p"
    refused(
        ["pretrain", "--data", str(image_folder), "--out", str(out), "--max-steps", "1",
         *TINY, "--image-size", "100000"],
        "--image-size", "<= 2048", "100000",
    )  # fmt: skip
    assert not out.exists()
    npz = tmp_path / "sub" / "e.npz"
    refused(
        ["embed", "--checkpoint", str(run), "--input", str(image_folder), "--out", str(npz),
         "--image-size", "100000"],
        "--image-size", "<= 2048",
    )  # fmt: skip
    assert not npz.parent.exists()


# -- 2: an earlier run is never overwritten without --resume ----------------------------------------


def test_an_earlier_run_is_refused_without_resume(
    tmp_path: Path, image_folder: Path, run: Path
) -> None:
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    args = ["pretrain", "--data", str(image_folder), "--out", str(run), "--max-steps", "1", *TINY]
    refused(args, f"--out {run} holds an earlier run", "--resume", "new --out")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()
    # --max-steps 0 (the random-init export) would overwrite it too
    refused([*args[:6], "0", *TINY], "holds an earlier run")
    # the library refuses as well, not only the command
    cfg = PretrainConfig(data=[str(image_folder)], out=str(run), max_steps=0)
    with pytest.raises(GlomsslError, match="holds an earlier run"):
        run_pretrain(cfg)


def test_new_or_empty_out_and_resume_still_work(
    tmp_path: Path, image_folder: Path, run: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a run\n")  # a file a run never writes is no earlier run
    base = ["pretrain", "--data", str(image_folder), "--max-steps", "1", *TINY]
    r = CliRunner().invoke(cli, [*base, "--out", str(empty)])
    assert r.exit_code == 0, r.output
    assert (empty / "backbone.safetensors").is_file()
    r = CliRunner().invoke(cli, [*base, "--out", str(run), "--resume"])
    assert r.exit_code == 0, r.output
    assert (run / "checkpoints" / "last.ckpt").is_file()


# -- 3: inputs are checked before OUT is created ----------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "empty", "one_image", "probe_data"])
def test_bad_inputs_leave_no_out_folder(tmp_path: Path, image_folder: Path, kind: str) -> None:
    (tmp_path / "empty").mkdir()
    data = {
        "missing": tmp_path / "nope",
        "empty": tmp_path / "empty",
        "one_image": image_folder / "img_000.png",
        "probe_data": image_folder,
    }[kind]
    out = tmp_path / "run"
    args = ["pretrain", "--data", str(data), "--out", str(out), "--max-steps", "1", *TINY]
    if kind == "probe_data":
        args += ["--probe-data", str(tmp_path / "missing.csv")]
        msg = refused(args, "--probe-data", "missing.csv")
        assert "warm" not in msg
    else:
        refused(args)
    assert not out.exists()


# -- 4: numpy's advice to unpickle is not repeated --------------------------------------------------


def test_a_text_file_as_embeddings_gets_no_pickle_advice(
    tmp_path: Path, labelled: tuple[Path, Path]
) -> None:
    text = tmp_path / "text.txt"
    text.write_text("hello, not an npz\n")
    pick = tmp_path / "pick.npz"
    torch.save({"paths": ["a"]}, pick)
    for f in (text, pick):
        out = refused(
            ["probe", "--embeddings", str(f), "--labels", str(labelled[1])],
            f"--embeddings {f} is not an .npz of embeddings written by `glomssl embed`",
        )
        assert "pickle" not in out and "allow_pickle" not in out


# -- 5: a Lightning checkpoint or a pickled .pt given to embed --------------------------------------


def test_embed_names_the_run_folder_for_a_checkpoint(
    tmp_path: Path, image_folder: Path, run: Path
) -> None:
    (run / "checkpoints").mkdir()
    torch.save({"state_dict": {}, "global_step": 1}, run / "checkpoints" / "last.ckpt")
    refused(
        ["embed", "--checkpoint", str(run / "checkpoints" / "last.ckpt"), "--input",
         str(image_folder), "--out", str(tmp_path / "e.npz")],
        "Lightning checkpoint", f"pass the run folder {run} or its backbone.safetensors",
    )  # fmt: skip
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pt, _use_new_zipfile_serialization=False)  # a raw pickle
    out = refused(
        ["embed", "--checkpoint", str(pt), "--input", str(image_folder), "--out",
         str(tmp_path / "e.npz")],
        "run folder or its backbone.safetensors",
    )  # fmt: skip
    assert "header too large" not in out
    assert not (tmp_path / "e.npz").exists()


# -- 6: one picture, or a CSV, is not a manifest ----------------------------------------------------


def test_one_image_or_a_csv_as_embed_input(
    tmp_path: Path, image_folder: Path, run: Path, labelled: tuple[Path, Path]
) -> None:
    base = ["embed", "--checkpoint", str(run), "--out", str(tmp_path / "o" / "e.npz")]
    out = refused([*base, "--input", str(image_folder / "img_000.png")], "is one image", "folder")
    assert "utf-8" not in out
    out = refused([*base, "--input", str(labelled[1])], "is a CSV", "folder", "manifest")
    assert "not valid JSON" not in out
    assert not (tmp_path / "o").exists()


def test_one_image_as_probe_labels(
    tmp_path: Path, image_folder: Path, labelled: tuple[Path, Path]
) -> None:
    out = refused(
        ["probe", "--embeddings", str(labelled[0]), "--labels", str(image_folder / "img_000.png")],
        "--labels", "is one image", "CSV",
    )  # fmt: skip
    assert "utf-8" not in out


# -- 7: a folder is a folder, not a missing file ----------------------------------------------------


def test_a_folder_is_said_to_be_a_folder(tmp_path: Path, labelled: tuple[Path, Path]) -> None:
    npz, labels = labelled
    out = refused(
        ["probe", "--embeddings", str(tmp_path), "--labels", str(labels)],
        "--embeddings", "is a folder", ".npz",
    )  # fmt: skip
    assert "does not exist" not in out
    out = refused(
        ["probe", "--embeddings", str(npz), "--labels", str(tmp_path)],
        "--labels", "is a folder", "CSV",
    )  # fmt: skip
    assert "does not exist" not in out


# -- 8: errors name the option typed ----------------------------------------------------------------


def test_errors_name_the_option_typed(
    tmp_path: Path, image_folder: Path, run: Path, labelled: tuple[Path, Path]
) -> None:
    npz, labels = labelled
    out = refused(
        ["probe", "--embeddings", str(npz), "--labels", str(labels), "--label-fraction", "nan"],
        "--label-fraction nan",
    )  # fmt: skip
    assert "--label-fractions" not in out
    refused(
        ["probe", "--embeddings", str(npz), "--labels", str(labels), "--label-fraction", "0.5",
         "--label-fraction", "2"],
        "--label-fraction 2",
    )  # fmt: skip
    out = refused(
        ["pretrain", "--data", str(image_folder), "--out", str(tmp_path / "p"), "--max-steps",
         "1", *TINY, "--stain-jitter", "nan"],
        "--stain-jitter nan",
    )  # fmt: skip
    assert "augment.stain_jitter" not in out and not (tmp_path / "p").exists()
    out = refused(
        ["embed", "--checkpoint", str(run), "--input", str(image_folder), "--out",
         str(tmp_path / "e.npz"), "--layers", "a,b"],
        "--layers 'a,b'", "1,2,3,4",
    )  # fmt: skip
    assert "config layers" not in out


# -- 9: --repeats is bounded, --knn-k beyond the training part is said ------------------------------


def test_repeats_are_bounded_and_a_huge_knn_k_gets_a_note(labelled: tuple[Path, Path]) -> None:
    npz, labels = labelled
    base = ["probe", "--embeddings", str(npz), "--labels", str(labels), "--label-fraction", "1",
            "--folds", "2", "--repeats", "1"]  # fmt: skip
    refused([*base, "--repeats", "100000000"], "--repeats", "<= 1000")
    r = CliRunner().invoke(cli, [*base, "--knn-k", "100000"])
    assert r.exit_code == 0, r.output
    assert "note: --knn-k 100000 is more than the 12 labelled embeddings" in r.output
    r = CliRunner().invoke(cli, [*base, "--knn-k", "3"])
    assert r.exit_code == 0 and "note:" not in r.output, r.output
    rep = run_probe(
        ProbeConfig(embeddings=str(npz), labels=str(labels), folds=2, repeats=1, knn_k=10**5)
    )
    assert rep["notes"] and all(
        math.isfinite(v["balanced_accuracy"]) for v in rep["results"].values()
    )


# -- 10: an empty labels file is said to be empty ---------------------------------------------------


def test_an_empty_labels_file_is_named(tmp_path: Path, labelled: tuple[Path, Path]) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    out = refused(
        ["probe", "--embeddings", str(labelled[0]), "--labels", str(empty)],
        f"--labels {empty} is empty",
    )  # fmt: skip
    assert "only 0 embedded images" not in out
    (tmp_path / "header.csv").write_text("image,label,slide\n")
    with pytest.raises(GlomsslError, match="holds no rows"):
        load_labels(tmp_path / "header.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(GlomsslError, match="--probe-data .*empty.jsonl holds no rows"):
        load_labels(tmp_path / "empty.jsonl", "--probe-data")


# -- 11: "no checkpoint ... starting from scratch" is said once -------------------------------------


def test_resume_without_a_checkpoint_says_so_once(
    tmp_path: Path, image_folder: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new"
    r = CliRunner().invoke(
        cli,
        ["pretrain", "--data", str(image_folder), "--out", str(out), "--max-steps", "1", *TINY,
         "--resume"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    cap = capfd.readouterr()
    said = r.output + cap.out + cap.err
    assert said.count("starting from scratch") == 1, said


def test_a_safetensors_file_is_never_taken_for_a_pickle(tmp_path: Path) -> None:
    """A safetensors header of 384 bytes starts with 0x80, a pickle's first byte: still accepted."""
    from glomssl.ssl.embed import _check_checkpoint

    header = b'{"__metadata__":{"k":"v"}}'.ljust(0x180)
    f = tmp_path / "w.pt"  # even under a checkpoint's suffix
    f.write_bytes((0x180).to_bytes(8, "little") + header)
    assert f.read_bytes()[:1] == b"\x80"
    _check_checkpoint(str(f))  # no error: load_backbone reads it
