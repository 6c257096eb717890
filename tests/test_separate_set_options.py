"""``--set KEY=VALUE`` on ``separate``, ``separator synth`` and ``separator train``, as on every other
command: option names of ``--help`` (dashes or underscores) or config keys; typed options win."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from glomssl.cli import cli


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.output


def _dry(*args: str) -> dict:
    code, out = _run(*args, "--dry-run")
    assert code == 0, out
    cfg = yaml.safe_load(out)
    assert isinstance(cfg, dict), out
    return cfg


def test_separate_takes_set(tmp_path: Path) -> None:
    base = ["separate", "--input", str(tmp_path), "--out", str(tmp_path / "p")]
    cfg = _dry(*base, "--set", "method=classic", "--set", "min-side=30", "--set", "iou=0.4")
    assert (cfg["method"], cfg["min_side"], cfg["iou"]) == ("classic", 30, 0.4)
    assert _dry(*base, "--method", "yolo", "--set", "method=classic")["method"] == "yolo"
    assert not (tmp_path / "p").exists()


def test_separate_set_errors_are_one_line(tmp_path: Path) -> None:
    base = ["separate", "--input", str(tmp_path), "--out", str(tmp_path / "p"), "--dry-run"]
    for item, words in (
        ("bogus=1", ("unknown key 'bogus'", "min-side")),
        ("input=/elsewhere", ("--input is required", "command line")),
        ("min-side=abc", ("--min-side",)),
    ):
        code, out = _run(*base, "--set", item)
        assert code == 2 and len(out.strip().splitlines()) == 1 and "Traceback" not in out, out
        for w in words:
            assert w in out, out


def test_separator_synth_and_train_take_set(tmp_path: Path) -> None:
    cfg = _dry("separator", "synth", "--out", str(tmp_path / "s"), "--set", "n=5",
               "--set", "val-fraction=0.2")  # fmt: skip
    assert (cfg["n"], cfg["val_fraction"]) == (5, 0.2)
    data = tmp_path / "data.yaml"
    data.write_text("train: images/train\nval: images/val\n")
    cfg = _dry("separator", "train", "--data", str(data), "--set", "epochs=2", "--set", "lr0=1e-4")
    assert (cfg["epochs"], cfg["lr0"]) == (2, 1e-4)
