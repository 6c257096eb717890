"""`glomssl mine` / `glomssl replay` through click and through a real, killed subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from glomssl.cli import cli
from glomssl.manifest import read_manifest, resolve
from glomssl.mining.pipeline import MineConfig, run_mine
from glomssl.mining.replay import Faults, ReplayServer, make_synthetic_replay

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def replay_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_replay(tmp_path_factory.mktemp("rp"), 40, per_article=4, size=48)


def _invoke(*args: str) -> tuple[int, str]:
    argv = list(args)
    if argv[:1] == ["mine"] and "--stop-after" not in argv:
        argv += ["--stop-after", "download"]  # search + download only; the chain is tested apart
    res = CliRunner().invoke(cli, argv)
    return res.exit_code, res.output


def test_mine_cli_summary_and_quiet(replay_dir: Path, tmp_path: Path) -> None:
    with ReplayServer(replay_dir) as server:
        code, out = _invoke(
            "mine",
            "--query",
            "glomerulus",
            "--out",
            str(tmp_path / "a"),
            "--endpoint",
            server.url,
            "--rate",
            "0",
            "--limit",
            "6",
        )
        assert code == 0, out
        assert out.startswith("Mined ") and "6 downloaded and checked" in out
        assert len(out.strip().splitlines()) == 1  # one paragraph
        code, out = _invoke(
            "mine",
            "--query",
            "glomerulus",
            "--out",
            str(tmp_path / "b"),
            "--endpoint",
            server.url,
            "--rate",
            "0",
            "--limit",
            "3",
            "--quiet",
        )
        assert code == 0 and out == ""
    assert len(read_manifest(tmp_path / "b" / "manifest.jsonl")) == 3


def test_mine_cli_dry_run_prints_config(tmp_path: Path) -> None:
    code, out = _invoke(
        "mine",
        "--query",
        "glomerulus",
        "--out",
        str(tmp_path / "o"),
        "--image-type",
        "mc",
        "--license",
        "by,bync",
        "--dry-run",
    )
    assert code == 0
    assert "image_type: mc" in out and "- bync" in out and "rate: 1.0" in out
    assert "glomssl/" in out  # descriptive default User-Agent
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "-2"], "--rate -2.0 is negative"),
        (["--image-type", "mri"], "--image-type 'mri' is not an Open-i type"),
        (["--license", "cc0"], "--license cc0 unknown"),
        (["--workers", "0"], "--workers 0"),
    ],
)
def test_mine_cli_bad_options_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    code, out = _invoke("mine", "--query", "g", "--out", str(tmp_path / "o"), *args)
    assert code == 2
    assert out.strip().splitlines() == [out.strip()] and message in out
    assert "Traceback" not in out


def test_mine_cli_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    code, out = _invoke(
        "mine", "--query", "g", "--out", str(blocker / "corpus"), "--endpoint", "http://127.0.0.1:9"
    )
    assert code == 2 and "is not a writable folder" in out and len(out.strip().splitlines()) == 1


def test_replay_cli_bad_options(tmp_path: Path) -> None:
    code, out = _invoke("replay", "--data", str(tmp_path), "--p500", "2")
    assert code == 2 and "--p500" in out and "<= 1" in out
    code, out = _invoke("replay", "--data", str(tmp_path), "--port", "0")
    assert code == 2 and "records.json" in out


def _strip_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "retrieved_at"} for r in rows]


def _done_count(out: Path) -> int:
    figs = out / "figures"
    return len(list(figs.glob("*.png"))) if figs.is_dir() else 0


def test_kill_9_during_download_then_resume(replay_dir: Path, tmp_path: Path) -> None:
    """A real `python -m glomssl mine` killed with SIGKILL mid-download, then rerun, yields the same
    manifest as an uninterrupted run (time fields aside): nothing lost, duplicated or half-written."""
    with ReplayServer(replay_dir, faults=Faults(latency_s=0.02)) as server:
        ref = tmp_path / "ref"
        run_mine(
            MineConfig(
                query="glomerulus",
                out=str(ref),
                endpoint=server.url,
                rate=0,
                workers=4,
                page_size=10,
                quiet=True,
                stop_after="download",
            )
        )
        out = tmp_path / "killed"
        cmd = [
            sys.executable,
            "-m",
            "glomssl",
            "mine",
            "--query",
            "glomerulus",
            "--out",
            str(out),
            "--endpoint",
            server.url,
            "--rate",
            "15",
            "--workers",
            "3",
            "--page-size",
            "10",
            "--quiet",
            "--stop-after",
            "download",
        ]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        deadline = time.monotonic() + 60
        while _done_count(out) < 8 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the miner finished before it could be killed; slow it down"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = _done_count(out)
        assert 8 <= killed_at < 40
        assert not (out / "manifest.jsonl").exists()
        done = subprocess.run(cmd, cwd=ROOT, env=env, timeout=120, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    rows = read_manifest(out / "manifest.jsonl")
    want = read_manifest(ref / "manifest.jsonl")
    assert _strip_time(rows) == _strip_time(want)
    assert len(rows) == 40 and len({(r["uid"], r["image_id"]) for r in rows}) == 40
    for r in rows:  # every counted file is complete and matches its hash
        from glomssl.fsutil import sha256_file

        assert sha256_file(resolve(out / "manifest.jsonl", r)) == r["sha256"]
    assert list((out / "figures").glob(".*.tmp")) == []
    assert (out / "figures" / "failures.jsonl").read_text() == ""


def test_replay_cli_serves_openi_in_a_subprocess(replay_dir: Path) -> None:
    import requests

    cmd = [
        sys.executable,
        "-m",
        "glomssl",
        "replay",
        "--data",
        str(replay_dir),
        "--port",
        "0",
        "--max-page",
        "3",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT))
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" at ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:"), line
        page = requests.get(
            url + "/api/search", params={"query": "glomerulus", "m": 1, "n": 10}, timeout=10
        ).json()
        assert (page["count"], page["total"]) == (3, 40)
        img = requests.get(url + page["list"][0]["imgLarge"], timeout=10)
        assert img.status_code == 200 and img.content[:4] == b"\x89PNG"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_mine_cli_yaml_config_and_cli_override(tmp_path: Path) -> None:
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("rate: 0.5\nworkers: 2\nlicense: [by, bync]\nimage_type: mc\n")
    code, out = _invoke(
        "mine",
        "--query",
        "g",
        "--out",
        str(tmp_path / "o"),
        "--config",
        str(cfg),
        "--workers",
        "3",
        "--dry-run",
    )
    assert code == 0, out
    assert "rate: 0.5" in out and "workers: 3" in out and "- bync" in out
    cfg.write_text("rate: -1\n")
    code, out = _invoke("mine", "--query", "g", "--out", str(tmp_path / "o"), "--config", str(cfg))
    assert code == 2 and "--rate -1.0 is negative" in out
    cfg.write_text("speed: 3\n")
    code, out = _invoke("mine", "--query", "g", "--out", str(tmp_path / "o"), "--config", str(cfg))
    assert code == 2 and "unknown option(s) speed" in out


def test_mine_refuses_another_commands_folder_and_keeps_its_manifest(tmp_path: Path) -> None:
    other = tmp_path / "panels"  # e.g. what `glomssl separate` wrote
    other.mkdir()
    (other / "manifest.jsonl").write_text('{"path": "a.png"}\n')
    code, out = _invoke(
        "mine", "--query", "g", "--out", str(other), "--endpoint", "http://127.0.0.1:9"
    )
    assert code == 2 and len(out.strip().splitlines()) == 1, out
    assert "did not" in out and str(other) in out
    assert (other / "manifest.jsonl").read_text() == '{"path": "a.png"}\n'
    assert not (other / "state.sqlite").exists()


def test_set_help_names_no_key_that_mine_lacks() -> None:
    res = CliRunner().invoke(cli, ["mine", "--help"])
    assert res.exit_code == 0 and "augment" not in res.output
