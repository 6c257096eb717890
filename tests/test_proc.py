"""The test helper that runs CLI commands (tests/_proc.py): a timeout kills the whole process group,
grandchildren included, and the failure quotes the command's output."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from _proc import child_env, run_proc

# A child that starts a grandchild (which writes its pid and sleeps), says so, then sleeps itself.
# With ``ignore_term`` both ignore SIGTERM, so only the SIGKILL that follows can stop them.
_PARENT = r"""
import signal, subprocess, sys, time
if sys.argv[2] == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
grand = (
    "import os, signal, sys, time\n"
    "if sys.argv[2] == '1': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "time.sleep(600)\n"
)
subprocess.Popen([sys.executable, "-c", grand, sys.argv[1], sys.argv[2]])
print("parent started its grandchild", flush=True)
print("parent stderr line", file=sys.stderr, flush=True)
if sys.argv[3] == "sleep":
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _grandchild(pid_file: Path) -> int:
    t0 = time.monotonic()
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    return int(pid_file.read_text())


@pytest.mark.parametrize("ignore_term", ["0", "1"])
def test_timeout_kills_the_child_and_its_grandchild(tmp_path: Path, ignore_term: str) -> None:
    pid_file = tmp_path / "grandchild.pid"
    cmd = [sys.executable, "-c", _PARENT, str(pid_file), ignore_term, "sleep"]
    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception) as info:
        run_proc(cmd, timeout=4)
    took = time.monotonic() - t0
    grand = _grandchild(pid_file)
    assert not _alive(grand), f"grandchild {grand} survived the timeout"
    msg = str(info.value)
    assert "did not finish within 4 s" in msg and "process group was killed" in msg
    assert "parent started its grandchild" in msg and "parent stderr line" in msg
    # SIGTERM ends it at once; a child that ignores SIGTERM waits out the grace period for SIGKILL
    assert took < (30 if ignore_term == "1" else 20)


def test_a_grandchild_left_behind_by_a_finished_command_is_killed(tmp_path: Path) -> None:
    """A command that returns while a process it started still runs (a DDP rank that outlived rank
    0) leaves nothing behind, and its output does not wait for the straggler."""
    pid_file = tmp_path / "grandchild.pid"
    t0 = time.monotonic()
    cmd = [sys.executable, "-c", _PARENT, str(pid_file), "0", "return"]
    p = run_proc(cmd, timeout=60, linger_s=1)
    assert time.monotonic() - t0 < 30
    assert p.returncode == 0 and "parent started its grandchild" in p.stdout
    assert p.left_behind  # noted, so a test can insist that nothing outlives its command
    assert "parent stderr line" in p.stderr
    grand = _grandchild(pid_file)
    assert not _alive(grand), f"grandchild {grand} outlived the command"


def test_children_do_not_inherit_a_stale_rendezvous_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """An in-process DDP run leaves MASTER_PORT in the test process; a CLI child must not reuse it."""
    monkeypatch.setenv("MASTER_PORT", "29999")
    monkeypatch.setenv("LOCAL_RANK", "0")
    code = "import os; print(os.environ.get('MASTER_PORT'), os.environ.get('LOCAL_RANK'))"
    p = run_proc([sys.executable, "-c", code], timeout=60)
    assert p.stdout.split() == ["None", "None"] and not p.left_behind
    assert child_env({"MASTER_PORT": "1234"})["MASTER_PORT"] == "1234"  # unless asked for
    assert "MASTER_PORT" in os.environ  # the test process itself is left alone
