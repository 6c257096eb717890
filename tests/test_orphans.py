"""A DDP rank that Lightning relaunched exits once rank 0 (its parent) is gone
(glomssl/engine/orphans.py); without it, such a rank waits out the 30-minute process-group timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _proc import child_env, kill_group

from glomssl.engine.orphans import LAUNCHER_ENV, exit_with_launcher, relaunched_rank

# Rank 1 as Lightning starts it: glomssl's entry point with LOCAL_RANK=1 in its environment; the
# command itself is replaced by a long sleep (it first leaves a marker file).
_CHILD = r"""
import sys, time
import glomssl.cli as c
def busy(**kw):
    open(sys.argv[1], "w").write("started")
    time.sleep(600)
c.cli.main = busy
c.main()
"""
# Rank 0: glomssl's entry point too; its command starts the child, writes the child's pid, and then
# returns (rank 0 failing) at once or once the child runs.
_LAUNCHER = r"""
import os, subprocess, sys, time
import glomssl.cli as c
marker, pid_file, err_file, wait = sys.argv[1:5]
def launch(**kw):
    env = {**os.environ, "LOCAL_RANK": "1"}
    child = subprocess.Popen([sys.executable, "-c", sys.argv[5], marker], env=env,
                             stderr=open(err_file, "w"))
    open(pid_file, "w").write(str(child.pid))
    t0 = time.time()
    while wait == "1" and not os.path.exists(marker):
        if time.time() - t0 > 60:
            sys.exit("the child never started")
        time.sleep(0.05)
    sys.exit(1)
c.cli.main = launch
c.main()
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize("child_started", [True, False], ids=["running", "still-starting"])
def test_a_relaunched_rank_exits_when_its_launcher_dies(
    tmp_path: Path, child_started: bool
) -> None:
    """Rank 0 dies while rank 1 runs, or before rank 1 even reached glomssl's entry point."""
    marker, pid_file, err_file = tmp_path / "started", tmp_path / "child.pid", tmp_path / "err"
    cmd = [sys.executable, "-c", _LAUNCHER, str(marker), str(pid_file), str(err_file)]
    cmd += ["1" if child_started else "0", _CHILD]
    launcher = subprocess.Popen(cmd, env=child_env(), start_new_session=True)
    try:
        assert launcher.wait(timeout=120) == 1
        child = int(pid_file.read_text())
        t0 = time.monotonic()
        while _alive(child) and time.monotonic() - t0 < 15:
            time.sleep(0.05)
        assert not _alive(child), "the relaunched rank outlived its launcher"
        assert marker.exists() == child_started
        assert f"rank 1: the launching process {launcher.pid} (rank 0) has exited" in (
            err_file.read_text()
        )
    finally:
        kill_group(launcher.pid, grace_s=1)


def test_only_relaunched_ranks_are_watched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LAUNCHER_ENV, "")  # restored after the test
    for var in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    assert relaunched_rank() is None and exit_with_launcher() is False  # the command a user ran
    assert os.environ[LAUNCHER_ENV] == str(os.getpid())  # what the ranks it launches will compare
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert relaunched_rank() is None  # rank 0 (Lightning sets LOCAL_RANK=0 there at launch)
    monkeypatch.setenv("LOCAL_RANK", "x")
    assert relaunched_rank() is None
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert relaunched_rank() == 2
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")  # torchrun supervises its own workers
    assert relaunched_rank() is None


def test_a_taken_rendezvous_port_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from glomssl.engine.orphans import rendezvous_port_error

    class DistNetworkError(RuntimeError):  # torch.distributed's class, by name
        pass

    monkeypatch.setenv("MASTER_PORT", "29512")
    busy = DistNetworkError("The server socket has failed to listen ... name: EADDRINUSE, ...")
    msg = rendezvous_port_error(busy)
    assert msg is not None and msg.startswith("MASTER_PORT 29512 is already in use")
    assert "\n" not in msg and "unset MASTER_PORT" in msg
    assert rendezvous_port_error(RuntimeError("EADDRINUSE")) is None  # not torch's error
    assert rendezvous_port_error(DistNetworkError("connection reset")) is None


def test_a_successful_command_closes_its_process_group(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``glomssl`` tears down a DDP process group once a command has succeeded (a gloo group left
    for the interpreter's exit can abort a finished run with exit -6)."""
    import torch.distributed as dist

    from glomssl.cli import main

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        with pytest.raises(SystemExit) as done:
            main(["--version"])
        assert done.value.code in (0, None)
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_a_failed_command_leaves_the_process_group_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """On an error the group is not touched: peers may be gone, and tearing down could wait."""
    import torch.distributed as dist

    from glomssl.cli import main

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        with pytest.raises(SystemExit) as done:
            main(["no-such-command"])
        assert done.value.code == 2
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()
