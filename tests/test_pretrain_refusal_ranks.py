"""``glomssl pretrain`` refuses an ``--out`` that holds an earlier run on every rank, not only on rank
zero.

When a launcher starts every rank itself (torchrun, SLURM, or Lightning's own contract: each process
started with ``LOCAL_RANK``, ``NODE_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``), a
refusal seen by rank zero alone left the other ranks waiting at the rendezvous for the process-group
timeout (30 minutes). Every rank now runs the same check before any rank writes a file of the run, so
a refusal ends every rank at once (exit 2, one line), and a rank that starts late is not fooled by
what rank zero of the same run has written.

The launches here are real: two ``python -m glomssl pretrain`` processes on CPU with gloo.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from _proc import child_env, kill_group
from PIL import Image

from glomssl.errors import GlomsslError
from glomssl.runs import read_metrics
from glomssl.ssl.train import PretrainConfig, run_pretrain

# far below the 30-minute process-group timeout a stranded rank would wait for
TIMEOUT_S = 120.0

# the smallest real pretraining run: 32 px crops, 4 images a batch, a 32-d head, no loader workers
TINY = ["--image-size", "32", "--batch-size", "4", "--workers", "0",
        "--accelerator", "cpu", "--warmup-steps", "0", "--quiet", "--set", "proj_dim=32"]  # fmt: skip


def _images(folder: Path, n: int = 16) -> Path:
    """``n`` tiny RGB PNGs of noise, and one unreadable file (so a run writes skipped.jsonl)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return folder


def _tiny_cfg(data: Path, out: Path, **kw: object) -> PretrainConfig:
    base: dict[str, object] = dict(
        data=[str(data)], out=str(out), image_size=32, batch_size=4, max_steps=1, workers=0,
        warmup_steps=0, proj_dim=32, quiet=True,
    )  # fmt: skip
    base.update(kw)
    cfg = PretrainConfig(**base)  # type: ignore[arg-type]
    cfg.hardware.accelerator = "cpu"
    return cfg


def _snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and folder under ``folder``: size, mtime and the sha256 of its bytes."""
    snap: dict[str, tuple[int, int, str]] = {}
    for p in sorted(folder.rglob("*")):
        st = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        snap[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns, digest)
    return snap


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(images, run): a real finished one-step run, as ``glomssl pretrain`` leaves it."""
    root = tmp_path_factory.mktemp("earlier")
    data = _images(root / "imgs")
    run_pretrain(_tiny_cfg(data, root / "run"))
    found = {p.name for p in (root / "run").iterdir()}
    assert {"config.yaml", "metrics.jsonl", "checkpoints", "skipped.jsonl"} <= found, found
    return data, root / "run"


def _launch(
    args: list[str], cwd: Path, *, ranks: int = 2, late_after: Path | None = None
) -> list[tuple[int, str, str]]:
    """Start ``python -m glomssl ARGS`` once per rank, as a launcher that creates the processes itself
    does (each with LOCAL_RANK / NODE_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT; Lightning then
    starts none). With ``late_after``, the ranks after zero start only once that path exists, plus
    3 s. Returns (exit code, stdout, stderr) per rank; fails the test, every rank stopped, when they
    have not all finished within TIMEOUT_S."""
    port = str(_free_port())
    procs: list[subprocess.Popen[bytes]] = []
    files = []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for rank in range(ranks):
            if rank == 1 and late_after is not None:
                while not late_after.exists() and time.monotonic() < deadline:
                    if procs[0].poll() is not None:
                        break
                    time.sleep(0.05)
                time.sleep(3.0)  # rank zero goes on to its rendezvous meanwhile
            env = child_env(
                {
                    "LOCAL_RANK": str(rank),
                    "NODE_RANK": "0",
                    "WORLD_SIZE": str(ranks),
                    "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": port,
                }
            )
            env.pop("GLOMSSL_LAUNCHER_PID", None)  # a rank this test started, not glomssl
            out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
            files += [out, err]
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "glomssl", *args],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,  # its own group, with all it starts
                )
            )
        hung = []
        for rank, proc in enumerate(procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                hung.append(rank)
        results = []
        for rank, proc in enumerate(procs):
            texts = []
            for f in files[2 * rank : 2 * rank + 2]:
                f.seek(0)
                texts.append(f.read().decode("utf-8", errors="replace"))
            results.append((proc.returncode, texts[0], texts[1]))
        if hung:
            tails = "\n".join(
                f"--- rank {r}: exit {rc}, stderr tail ---\n{text[-1500:]}"
                for r, (rc, _, text) in enumerate(results)
            )
            pytest.fail(
                f"rank(s) {hung} still running after {TIMEOUT_S:g} s\n{tails}", pytrace=False
            )
        return results
    finally:
        for proc in procs:
            kill_group(proc.pid)  # a hung rank, and whatever it started
            proc.wait()
        for f in files:
            f.close()


# -- the check itself -------------------------------------------------------------------------------


def test_the_check_names_the_earlier_run_files_it_found(tmp_path: Path) -> None:
    from glomssl.ssl.train import BASELINE_FILES, RUN_FILES, _refuse_earlier_run

    out = tmp_path / "run"
    _refuse_earlier_run(out, resume=False)  # no folder yet
    out.mkdir()
    (out / "notes.txt").write_text("not a run\n")
    _refuse_earlier_run(out, resume=False)  # a file no run writes
    (out / "checkpoints").mkdir()
    with pytest.raises(GlomsslError, match=rf"--out {out} holds an earlier run \(checkpoints\)"):
        _refuse_earlier_run(out, resume=False)
    _refuse_earlier_run(out, resume=True)
    # files left out of the check do not count; the others still do
    (out / "checkpoints").rmdir()
    (out / "config.yaml").write_text("method: vicreg\n")
    _refuse_earlier_run(out, resume=False, ignore=("config.yaml",))
    (out / "metrics.jsonl").write_text("")
    with pytest.raises(GlomsslError, match=r"\(metrics.jsonl\)"):
        _refuse_earlier_run(out, resume=False, ignore=("config.yaml",))
    assert set(BASELINE_FILES) < set(RUN_FILES)


def test_a_later_rank_of_a_random_init_export_is_not_fooled_by_rank_zero(
    tmp_path: Path, earlier: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--max-steps 0`` has no collective: rank zero may have exported before another rank looks.
    That rank does not take rank zero's fresh files for an earlier run, but still refuses a trained
    earlier run."""
    data, old = earlier
    out = tmp_path / "baseline"
    run_pretrain(_tiny_cfg(data, out, max_steps=0))  # rank zero, already done
    before = _snapshot(out)
    monkeypatch.setenv("RANK", "1")
    assert run_pretrain(_tiny_cfg(data, out, max_steps=0))["steps"] == 0
    assert _snapshot(out) == before  # rank one writes nothing
    with pytest.raises(GlomsslError, match="holds an earlier run"):
        run_pretrain(_tiny_cfg(data, old, max_steps=0))


# -- real two-process launches ----------------------------------------------------------------------


def test_every_rank_refuses_an_earlier_run_and_exits_at_once(
    tmp_path: Path, earlier: tuple[Path, Path]
) -> None:
    data, run = earlier
    before = _snapshot(run)
    args = ["pretrain", "--data", str(data), "--out", str(run), *TINY, "--max-steps", "1",
            "--devices", "2", "--strategy", "ddp"]  # fmt: skip
    t0 = time.monotonic()
    results = _launch(args, tmp_path)
    took = time.monotonic() - t0
    for rank, (rc, _stdout, stderr) in enumerate(results):
        lines = stderr.strip().splitlines()
        assert rc == 2, f"rank {rank}: exit {rc}\n{stderr[-3000:]}"
        assert len(lines) == 1 and "Traceback" not in stderr, f"rank {rank}:\n{stderr[-3000:]}"
        assert lines[0].startswith(f"Error: --out {run} holds an earlier run"), lines[0]
        assert "--resume" in lines[0]
    assert _snapshot(run) == before  # nothing written, nothing touched
    assert took < TIMEOUT_S


@pytest.mark.slow
def test_a_rank_that_starts_late_is_not_fooled_by_rank_zero(tmp_path: Path) -> None:
    """A new --out: rank one starts only once rank zero has created the folder and gone on to the
    rendezvous. Rank zero writes its first run file after every rank has passed the check, so rank
    one finds no earlier run, and the two train together."""
    data = _images(tmp_path / "imgs")
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(data), "--out", str(run), *TINY, "--max-steps", "2",
            "--devices", "2", "--strategy", "ddp", "--set", "log_every=1"]  # fmt: skip
    results = _launch(args, tmp_path, late_after=run)
    for rank, (rc, _stdout, stderr) in enumerate(results):
        assert rc == 0, f"rank {rank}: exit {rc}\n{stderr[-3000:]}"
    assert results[0][1].count("pretrained vicreg") == 1 and "pretrained" not in results[1][1]
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2]
    assert (run / "config.yaml").is_file() and (run / "skipped.jsonl").is_file()
    assert (run / "backbone.safetensors").is_file()
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no stray temp files
