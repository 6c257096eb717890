"""``glomssl replay --set KEY=VALUE`` takes the option names of ``glomssl replay --help`` (``data``,
``json``, ``max-page`` / ``max_page`` ...) as well as the config keys ``--dry-run`` prints
(``folder``, ``as_json``); values are checked as the option's would be."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from glomssl.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "glomssl" / "assets" / "demo"


def _replay(folder: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["replay", "--data", str(folder), *args])
    return res.exit_code, res.output


def _dry_run(folder: Path, *sets: str) -> dict:
    argv = [a for s in sets for a in ("--set", s)]
    code, out = _replay(folder, *argv, "--dry-run")
    assert code == 0, out
    cfg = yaml.safe_load(out)
    assert isinstance(cfg, dict), out
    return cfg


def test_option_names_are_accepted(tmp_path: Path) -> None:
    cfg = _dry_run(tmp_path, "json=true", "max-page=3", "retry-after=2", "p429=0.25")
    assert cfg["as_json"] is True
    assert (cfg["max_page"], cfg["retry_after"], cfg["p429"]) == (3, 2, 0.25)
    cfg = _dry_run(tmp_path, "json=no", "max_page=4", "retry_after=5")  # underscores too
    assert (cfg["as_json"], cfg["max_page"], cfg["retry_after"]) == (False, 4, 5)


def test_set_of_a_required_option_is_refused(tmp_path: Path) -> None:
    """--data must be typed, and typed options win over --set, so ``--set data=...`` could never
    take effect: a one-line error rather than a silently ignored setting."""
    other = tmp_path / "other"
    other.mkdir()
    for item in (f"data={other}", f"folder={other}"):
        code, out = _replay(tmp_path, "--set", item, "--dry-run")
        assert code == 2, out
        assert len(out.strip().splitlines()) == 1 and "Traceback" not in out, out
        assert "--data" in out and "command line" in out, out


@pytest.mark.parametrize(
    ("option", "key", "value"),
    [
        ("json", "as_json", "true"),
        ("max-page", "max_page", "7"),
        ("retry-after", "retry_after", "9"),
    ],
)
def test_option_name_and_old_config_key_give_one_config(
    tmp_path: Path, option: str, key: str, value: str
) -> None:
    by_option = _dry_run(tmp_path, f"{option}={value}")
    by_key = _dry_run(tmp_path, f"{key}={value}")  # what scripts wrote before: still accepted
    assert by_option == by_key
    assert str(by_key[key]).lower() == value


def test_unknown_key_is_one_line_listing_the_names(tmp_path: Path) -> None:
    code, out = _replay(tmp_path, "--set", "bogus=1", "--dry-run")
    assert code == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    line = lines[0]
    assert "bogus" in line and "Traceback" not in out
    names = set(re.findall(r"[\w-]+", line))
    assert {"data", "json", "max-page", "retry-after", "port", "p429"} <= names, line
    assert {"folder", "as_json"} <= names, line  # the config keys are named as accepted too


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("json=maybe", ("--json", "true/false")),
        ("max-page=0", ("--max-page", ">= 1")),
        ("retry-after=-1", ("--retry-after", ">= 0")),
        ("max-page=1.5", ("--max-page", "integer")),
    ],
)
def test_values_are_checked_as_the_option_would_be(
    tmp_path: Path, item: str, words: tuple[str, ...]
) -> None:
    code, out = _replay(tmp_path, "--set", item, "--dry-run")
    assert code == 2, out
    assert len(out.strip().splitlines()) == 1, out
    for w in words:
        assert w in out, out


def test_bad_set_value_is_refused_even_when_the_option_is_given(tmp_path: Path) -> None:
    code, out = _replay(tmp_path, "--port", "5", "--set", "port=abc", "--dry-run")
    assert code == 2 and "--port" in out and "abc" in out, out


def test_set_json_reaches_the_server(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "glomssl", "replay", "--data", str(DEMO), "--port", "0"]
    cmd += ["--set", "json=true", "--set", "max-page=2"]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=30)
            pytest.fail(
                f"replay exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            )
        info = json.loads(line)
        assert info["url"].startswith("http://127.0.0.1:") and info["records"] > 2
        query = urllib.parse.urlencode({"query": "microscopy OR histology", "m": 1, "n": 10})
        with urllib.request.urlopen(f"{info['url']}/api/search?{query}", timeout=10) as resp:
            page = json.loads(resp.read())
        assert page["count"] == 2 and page["total"] > 2, page  # max-page=2 took effect
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
