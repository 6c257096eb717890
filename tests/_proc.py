"""Run a command (usually the ``glomssl`` CLI) from a test so that it can neither hang CI nor leave
processes behind.

The command starts in its own session (so in its own process group). On a timeout the whole group is
stopped (SIGTERM, a short grace period, then SIGKILL): the DDP ranks Lightning relaunches, DataLoader
workers and slide-chain workers belong to that group, so none of them outlives the test. Whatever the
group still holds once the command has returned is stopped the same way. Output goes to temporary
files, not pipes, so a straggler that kept the output open cannot block the wait either.

The test tree is not a package: pytest puts ``tests/`` on ``sys.path`` (for ``conftest.py``), so the
tests import this as ``from _proc import run_cli``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What torch/Lightning read to join a distributed job. An in-process DDP run leaves some of them in
# this process's environment; a child that inherited them would rendezvous on a stale port.
RENDEZVOUS_VARS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "RANK",
                   "GROUP_RANK")  # fmt: skip

TAIL = 3000  # characters of stdout / stderr quoted in a failure message


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the rendezvous variables, with this checkout first on
    PYTHONPATH and one OpenMP thread (the CPUs are shared), then ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS_VARS}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra or {})
    return env


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still exists (zombies count as gone)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a member we may not signal: it exists
        return True
    # killpg succeeds while a reaped-to-be zombie is still listed; look for a live member
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return not Path("/proc/self").exists()  # no /proc: trust killpg


def kill_group(pgid: int, grace_s: float = 5.0) -> bool:
    """SIGTERM every process of group ``pgid``, wait up to ``grace_s``, then SIGKILL the rest.

    Returns whether anything was still running.
    """
    if not group_alive(pgid):
        return False
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not group_alive(pgid):
                return True
            time.sleep(0.05)
    return True


class Finished(subprocess.CompletedProcess[str]):
    """A finished command; ``left_behind``: some process it started outlived it (and was killed)."""

    def __init__(self, *args: object, left_behind: bool, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.left_behind = left_behind


def _read(f: IO[bytes]) -> str:
    f.seek(0)
    return f.read().decode("utf-8", errors="replace")


def _tail(text: str) -> str:
    return text[-TAIL:] if text.strip() else "(empty)"


def run_proc(
    cmd: Sequence[str],
    timeout: float,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    linger_s: float = 10.0,
) -> Finished:
    """Run ``cmd`` in its own session; fail the test (output tails quoted) if it takes over
    ``timeout`` seconds, after killing its whole process group. ``env`` is added to
    :func:`child_env`. Returns the finished process with ``stdout``/``stderr`` as text; processes of
    its group still running ``linger_s`` after it returned are killed and noted in ``left_behind``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=child_env(env),
            cwd=cwd,
            start_new_session=True,  # its own process group, with every process it starts
        )
        timed_out = left_behind = False
        try:
            proc.wait(timeout=timeout)
            # the ranks a command started end with it, a moment later at most
            deadline = time.monotonic() + linger_s
            while group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            left_behind = group_alive(proc.pid)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            kill_group(proc.pid)  # the command's group: a hung run, or a rank left behind
            proc.wait()

        stdout, stderr = _read(out), _read(err)
    if timed_out:
        shown = " ".join(str(c) for c in cmd[:6]) + (" ..." if len(cmd) > 6 else "")
        pytest.fail(
            f"`{shown}` did not finish within {timeout:g} s; its process group was killed\n"
            f"--- stdout (tail) ---\n{_tail(stdout)}\n--- stderr (tail) ---\n{_tail(stderr)}",
            pytrace=False,
        )
    return Finished(list(cmd), proc.returncode, stdout, stderr, left_behind=left_behind)


def run_cli(
    args: Sequence[str],
    timeout: float,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Finished:
    """``python -m glomssl ARGS`` through :func:`run_proc`."""
    return run_proc([sys.executable, "-m", "glomssl", *args], timeout, env=env, cwd=cwd)


def check(p: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert ``p`` exited 0, quoting the tail of its stderr (and stdout) otherwise."""
    assert p.returncode == 0, (
        f"exit {p.returncode}\n--- stderr (tail) ---\n{_tail(p.stderr)}\n"
        f"--- stdout (tail) ---\n{_tail(p.stdout)}"
    )
    return p
