"""The three commands through click's CliRunner and a real subprocess (incl. 2-process DDP on gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from _proc import check, run_cli
from click.testing import CliRunner

from glomssl.cli import cli
from glomssl.runs import load_weights, read_metrics

ROOT = Path(__file__).resolve().parents[2]


def test_pretrain_dry_run_prints_merged_config(tmp_path: Path, image_folder: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lr: 0.1\nbatch_size: 8\naugment:\n  gray_p: 0.2\n")
    r = CliRunner().invoke(
        cli,
        [
            "pretrain",
            "--data",
            str(image_folder),
            "--out",
            str(tmp_path / "run"),
            "--config",
            str(cfg_file),
            "--batch-size",
            "4",
            "--stain-jitter",
            "0.1",
            "--dry-run",
        ],
    )
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load(r.output)
    assert cfg["lr"] == 0.1 and cfg["batch_size"] == 4  # CLI beats file beats defaults
    assert cfg["augment"]["gray_p"] == 0.2 and cfg["augment"]["stain_jitter"] == 0.1
    assert not (tmp_path / "run").exists()


def test_bad_input_is_one_line_error(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        cli,
        [
            "pretrain",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "r"),
            "--max-steps",
            "1",
        ],
    )
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.strip().count("\n") == 0 and "neither a folder" in r.output
    r = CliRunner().invoke(
        cli, ["embed", "--checkpoint", str(tmp_path), "--input", "x", "--out", "e.npz"]
    )
    assert r.exit_code == 2 and "backbone.safetensors" in r.output


def test_pretrain_embed_probe_chain_via_clirunner(tmp_path: Path, make_imgs) -> None:
    imgs = make_imgs(tmp_path / "images", n=12)
    labels = ["image,label,slide"] + [
        f"images/{p.name},{'a' if i % 2 == 0 else 'b'},s{i % 4}" for i, p in enumerate(imgs)
    ]
    (tmp_path / "labels.csv").write_text("\n".join(labels) + "\n")
    run = tmp_path / "run"
    r = CliRunner().invoke(
        cli,
        [
            "pretrain",
            "--data",
            str(tmp_path / "images"),
            "--out",
            str(run),
            "--max-steps",
            "0",
            "--image-size",
            "32",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "0 steps" in r.output
    r = CliRunner().invoke(
        cli,
        [
            "embed",
            "--checkpoint",
            str(run),
            "--input",
            str(tmp_path / "images"),
            "--out",
            str(tmp_path / "e.npz"),
            "--workers",
            "0",
            "--layers",
            "3,4",
            "--faiss-index",
            str(tmp_path / "e.faiss"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "e.npz")["embeddings"].shape == (12, 768)
    assert (tmp_path / "e.faiss").stat().st_size > 0
    r = CliRunner().invoke(
        cli,
        [
            "probe",
            "--embeddings",
            str(tmp_path / "e.npz"),
            "--labels",
            str(tmp_path / "labels.csv"),
            "--label-fraction",
            "1.0",
            "--folds",
            "2",
            "--repeats",
            "1",
            "--out",
            str(tmp_path / "p.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "linear" in r.output and "knn" in r.output
    rep = json.loads((tmp_path / "p.json").read_text())
    assert rep["n_groups"] == 4 and rep["results"]["linear@1"]["balanced_accuracy"] > 0.9


def test_two_process_ddp_on_cpu_through_a_subprocess(tmp_path: Path, make_imgs) -> None:
    """Real DDP: Lightning launches a second `python -m glomssl` process; gloo; SyncBatchNorm."""
    make_imgs(tmp_path / "imgs", n=16)
    run = tmp_path / "run"
    args = [
        "pretrain",
        "--data",
        str(tmp_path / "imgs"),
        "--out",
        str(run),
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--max-steps",
        "2",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--workers",
        "0",
        "--quiet",
        "--config",
        str(_small_heads(tmp_path)),
    ]
    p = check(run_cli(args, timeout=600, cwd=tmp_path))
    assert not p.left_behind  # no rank outlives the command
    assert p.stdout.count("pretrained vicreg") == 1  # the default method; rank zero alone reports
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]  # one line per step: rank zero alone writes
    assert all(r["effective_batch"] == 8 for r in rows)  # 4 per device x 2 processes
    _, meta = load_weights(run / "backbone.safetensors")
    assert meta["step"] == 2 and meta["config"]["hardware"]["devices"] == 2
    assert (run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_ddp_rank_one_stops_when_rank_zero_cannot_rendezvous(tmp_path: Path, make_imgs) -> None:
    """Rank 0 fails at once (its MASTER_PORT is held by another process, which accepts connections
    and never answers): the rank Lightning started must stop with it, not sit in the rendezvous for
    the 30-minute process-group timeout holding the caller's output open (the CI hang)."""
    make_imgs(tmp_path / "imgs", n=16)
    args = ["pretrain", "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "run"),
            "--image-size", "32", "--batch-size", "4", "--max-steps", "2", "--accelerator", "cpu",
            "--devices", "2", "--strategy", "ddp", "--workers", "0", "--quiet",
            "--config", str(_small_heads(tmp_path))]  # fmt: skip
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen(8)
        port = busy.getsockname()[1]
        p = run_cli(args, timeout=300, env={"MASTER_PORT": str(port)}, cwd=tmp_path)
    assert p.returncode == 2, p.stderr[-3000:]
    assert f"Error: MASTER_PORT {port} is already in use" in p.stderr, p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]  # one line, not torch's stack
    assert not p.left_behind, "rank 1 outlived rank 0"


def _small_heads(tmp_path: Path) -> Path:
    f = tmp_path / "small.yaml"
    f.write_text("proj_dim: 32\nlog_every: 1\n")
    return f


@pytest.mark.parametrize("args", [["--help"], ["pretrain", "--help"], ["probe", "--help"]])
def test_console_script_help(args: list[str]) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "glomssl", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert p.returncode == 0 and "Usage" in p.stdout
