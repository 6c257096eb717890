"""``glomssl finetune seg`` end to end: run folder, export, resume, every model, bad input, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from _proc import check, run_proc
from click.testing import CliRunner
from PIL import Image

from glomssl.cli import cli
from glomssl.runs import read_metrics

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--image-size", "32", "--batch-size", "4", "--base", "8", "--workers", "0", "--quiet",
         "--accelerator", "cpu", "--optimizer", "adamw"]  # fmt: skip


def _train(table: Path, out: Path, *extra: str) -> Any:
    return CliRunner().invoke(
        cli, ["finetune", "seg", "--train", str(table), "--out", str(out), *SMALL, *extra]
    )


def test_run_folder_export_and_resume(seg_table: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = _train(seg_table, out, "--max-steps", "6", "--val-every", "3", "--ckpt-every", "3")
    assert r.exit_code == 0, r.output
    assert "trained dynamic (Tuft,GS) for 6 steps" in r.output
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["classes"] == ["Tuft", "GS"] and cfg["model"] == "dynamic"
    split = json.loads((out / "split.json").read_text())
    tr = {row["slide"] for row in split["train"]}
    va = {row["slide"] for row in split["val"]}
    assert split["how"] == "grouped holdout" and va and not tr & va
    meta = json.loads((out / "model.json").read_text())
    assert meta["format"] == "glomssl-segmenter" and meta["classes"] == ["Tuft", "GS"]
    assert meta["train_data"]["train"]["per_class"]["Tuft"] > 0 and meta["image_size"] == 32
    rep = json.loads((out / "val_dice.json").read_text())
    for c in ("Tuft", "GS"):
        assert {"dice", "bf1", "dice_all_foreground", "dice_centred_disk", "n"} <= set(
            rep["per_class"][c]
        )
    assert (out / "val_dice.png").is_file() and list((out / "overlays").rglob("*.png"))
    rows = read_metrics(out / "metrics.jsonl")
    assert rows[-1]["step"] == 6 and any("val_dice_Tuft" in row for row in rows)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    # resume: continue to 9 steps; no step is logged twice
    r2 = _train(seg_table, out, "--max-steps", "9", "--val-every", "3", "--resume")
    assert r2.exit_code == 0, r2.output
    assert "for 9 steps" in r2.output
    steps = [row["step"] for row in read_metrics(out / "metrics.jsonl") if "event" not in row]
    assert steps == sorted(set(steps)) and steps[-1] == 9


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("multihead", []),
        ("multiclass", []),
        ("unet", []),
        ("deeplabv3", ["--set", "deeplab_backbone=mobilenet_v3_large"]),
        ("dynamic", ["--encoder", "resnet18", "--batching", "mixed"]),
    ],
)
def test_every_model_trains_and_exports(
    model: str, extra: list[str], seg_table: Path, tmp_path: Path
) -> None:
    from glomssl.finetune.segmenter.infer import load_segmenter

    out = tmp_path / model
    r = _train(seg_table, out, "--model", model, "--max-steps", "2", *extra)
    assert r.exit_code == 0, r.output
    m, meta = load_segmenter(out)
    assert meta["model"] == model and m.num_classes == 2


def test_synthetic_mix_and_filters(seg_table: Path, tmp_path: Path, make_seg: Any) -> None:
    syn = make_seg(tmp_path / "syn", n=8, size=40, seed=5, painted=False)
    out = tmp_path / "mix"
    r = _train(seg_table, out, "--synthetic", str(syn), "--synthetic-ratio", "0.5",
               "--max-steps", "2", "--train-filter", "species=human", "--select", "final")  # fmt: skip
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "model.json").read_text())
    summ = meta["train_data"]["train"]
    assert summ["synthetic"] > 0
    assert meta["weights"] == "final" and meta["step"] == 2
    split = json.loads((out / "split.json").read_text())
    assert all(row["species"] == "human" for row in split["train"])


def _one_line_error(res: Any) -> str:
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), res.output
    return str(lines[0])


def test_bad_input_is_one_line(seg_table: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad"
    assert "not in --classes" in _one_line_error(_train(seg_table, out, "--classes", "Tuft"))
    assert "after --train-filter" in _one_line_error(
        _train(seg_table, out, "--train-filter", "species=dog")
    )
    assert "--encoder resnet18" in _one_line_error(_train(seg_table, out, "--init", str(tmp_path)))
    fresh = tmp_path / "fresh"
    res = _train(seg_table, fresh, "--encoder", "resnet18", "--init", str(tmp_path / "nope"))
    assert "nope does not exist" in _one_line_error(res)
    assert not fresh.exists() or not any(fresh.iterdir())  # no config.yaml, no split.json
    assert "not divisible by the dynamic network's stride 16" in _one_line_error(
        _train(seg_table, out, "--image-size", "40", "--max-steps", "1")
    )
    m = seg_table.parent / "masks" / "im000.png"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(m)
    assert "is 12x10 but its image im000.png is 48x48" in _one_line_error(
        _train(seg_table, out, "--max-steps", "1")
    )


@pytest.mark.slow
def test_dynamic_learns_the_toy_task(tmp_path: Path, make_seg: Any) -> None:
    """After 150 steps the Tuft head clearly beats the all-foreground and centred-disk priors."""
    table = make_seg(tmp_path / "d", n=32, size=48)
    out = tmp_path / "learn"
    r = _train(table, out, "--max-steps", "150", "--val-every", "50")
    assert r.exit_code == 0, r.output
    tuft = json.loads((out / "val_dice.json").read_text())["per_class"]["Tuft"]
    assert tuft["dice"] > 0.85
    assert tuft["dice"] > tuft["dice_all_foreground"] + 0.3
    assert tuft["dice"] > tuft["dice_centred_disk"] + 0.2


def _cmd(table: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "glomssl", "finetune", "seg", "--train", str(table), "--out",
            str(out), *SMALL, *extra]  # fmt: skip


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_two_process_ddp_on_cpu(seg_table: Path, tmp_path: Path) -> None:
    """Real DDP: Lightning relaunches a second process; gloo; per-task batches sharded by rank."""
    out = tmp_path / "ddp"
    cmd = _cmd(seg_table, out, "--max-steps", "3", "--devices", "2", "--strategy", "ddp",
               "--val-every", "2", "--set", "log_every=1")  # fmt: skip
    p = check(run_proc(cmd, timeout=900, cwd=tmp_path))
    assert not p.left_behind  # no rank outlives the command
    assert p.stdout.count("trained dynamic") == 1  # rank zero alone reports
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if "event" not in r] == [1, 2, 3]
    assert all(r.get("images_per_s", 1) > 0 for r in rows)
    assert yaml.safe_load((out / "config.yaml").read_text())["hardware"]["devices"] == 2
    val = [r for r in rows if r.get("event") == "validation"]
    assert val and "val_dice_Tuft" in val[-1]  # gathered from both ranks
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_kill_9_then_resume(seg_table: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    cmd = _cmd(seg_table, out, "--max-steps", "400", "--ckpt-every", "2", "--set", "log_every=1")
    p = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)  # fmt: skip
    last = out / "checkpoints" / "last.ckpt"
    t0 = time.time()
    while not last.is_file() and time.time() - t0 < 600:
        time.sleep(0.5)
    time.sleep(3)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert last.is_file() and not (out / "model.safetensors").exists()
    # the killed run got to some step; the resumed one (from the last checkpoint) goes 6 further
    reached = max(row["step"] for row in read_metrics(out / "metrics.jsonl") if "event" not in row)
    target = reached + 6
    resume = ["--max-steps", str(target), "--ckpt-every", "2", "--resume", "--set", "log_every=1"]
    check(run_proc(_cmd(seg_table, out, *resume), timeout=900, cwd=tmp_path))
    steps = [row["step"] for row in read_metrics(out / "metrics.jsonl") if "event" not in row]
    assert steps == sorted(set(steps)) and steps[-1] == target
    assert (out / "model.safetensors").is_file()
