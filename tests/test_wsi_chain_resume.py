"""``kill -9`` in the middle of a multi-slide ``glomssl wsi`` run, then the same command again.

Three pyramidal slides of real kidney tissue (the shipped aidpath tiles) run with the shipped detector
in a subprocess; it is killed with SIGKILL once the first slide is finished and a few tiles of the
second are committed. The rerun must skip the finished slide (its files untouched), take the second
slide's committed tiles from the queue instead of recomputing them, and end with the same results as
a run that was never interrupted. The same slides with ``--devices 2`` (two worker processes claiming
slides from one queue) give the same results too.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _proc import check, run_proc

from glomssl.slidechain.demo import ASSETS
from glomssl.slidechain.pyramid import load_tiles, tiled_source, write_pyramid

ROOT = Path(__file__).resolve().parents[1]


def _slides(folder: Path) -> list[str]:
    tiles = load_tiles(ASSETS / "images")
    out = []
    for i in range(3):
        pick = tiles[4 * i : 4 * i + 4]
        region = tiled_source(pick, 2 * 1024 + 256, 2 * 1024 + 256, 128, seed=i)
        out.append(str(write_pyramid(folder / f"slide{i}.tif", region, 2304, 2304, 0.5)))
    return out


def _cmd(slides: list[str], out: Path) -> list[str]:
    # small tiles: many commits per slide, so the kill lands inside a slide
    return [
        sys.executable,
        "-m",
        "glomssl",
        "wsi",
        *slides,
        "--out",
        str(out),
        "--tile",
        "64",
        "--overlap",
        "16",
        "--no-crops",
        "--device",
        "cpu",
        "--quiet",
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _state(db: Path) -> tuple[int, int]:
    """(slides done, tiles committed for slides not done) -- 0, 0 while the queue does not exist."""
    if not db.is_file():
        return 0, 0
    try:
        con = sqlite3.connect(db, timeout=5)
        done = con.execute("SELECT COUNT(*) FROM slides WHERE status='done'").fetchone()[0]
        tiles = con.execute(
            "SELECT COUNT(*) FROM tiles JOIN slides ON tiles.slide = slides.id "
            "WHERE slides.status != 'done'"
        ).fetchone()[0]
        con.close()
        return int(done), int(tiles)
    except sqlite3.Error:
        return 0, 0


@pytest.mark.slow
def test_kill_9_then_rerun_resumes(tmp_path: Path) -> None:
    slides = _slides(tmp_path)
    ref = tmp_path / "reference"
    check(run_proc(_cmd(slides, ref), timeout=900))
    out = tmp_path / "out"
    db = out / ".glomssl-wsi" / "queue.sqlite"
    proc = subprocess.Popen(_cmd(slides, out), env=_env())
    deadline = time.time() + 900
    state = (0, 0)
    while time.time() < deadline and proc.poll() is None:
        state = _state(db)
        if state[0] >= 1 and state[1] >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done, committed = _state(db)
    assert done >= 1 and committed >= 3
    first = [p for p in out.iterdir() if (p / "summary.json").is_file()]
    stamps = {p.name: (p / "summary.json").stat().st_mtime_ns for p in first}
    check(run_proc(_cmd(slides, out), timeout=900))
    run = json.loads((out / "run_summary.json").read_text())
    assert run["done"] == 3 and run["skipped"] == [] and run["pending"] == 0
    for name, stamp in stamps.items():  # finished before the kill: not redone
        assert (out / name / "summary.json").stat().st_mtime_ns == stamp
    resumed = [json.loads((out / f"slide{i}" / "summary.json").read_text()) for i in range(3)]
    assert sum(s["tiles_resumed"] for s in resumed) >= committed
    assert any(0 < s["tiles_resumed"] < s["tiles"] for s in resumed)  # the slide cut mid-way
    for i in range(3):  # same detections as the run that was never interrupted
        a = (out / f"slide{i}" / "glomeruli.csv").read_text()
        b = (ref / f"slide{i}" / "glomeruli.csv").read_text()
        assert a == b
    # two worker processes sharing one queue: every slide once, the same results
    two = tmp_path / "two"
    p = check(run_proc([*_cmd(slides, two), "--devices", "2"], timeout=900))
    assert not p.left_behind  # no worker outlives the command
    con = sqlite3.connect(two / ".glomssl-wsi" / "queue.sqlite")
    owners = [r[0] for r in con.execute("SELECT owner FROM slides WHERE status='done'")]
    con.close()
    assert len(owners) == 3 and all(owners)  # every slide done once, by a recorded worker
    for i in range(3):
        assert (two / f"slide{i}" / "glomeruli.csv").read_text() == (
            ref / f"slide{i}" / "glomeruli.csv"
        ).read_text()
