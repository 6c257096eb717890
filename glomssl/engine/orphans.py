"""A DDP rank that Lightning relaunched stops as soon as the process that launched it is gone.

With ``--devices N`` on one machine, Lightning's subprocess launcher starts ranks 1..N-1 as children of
rank 0 (the command the user ran) and watches them from rank 0. Nothing watches the other way: when
rank 0 dies (an error before or during the rendezvous, e.g. its MASTER_PORT taken by another
process; SIGKILL; a crash), Lightning does not stop the children, and a child waits for its peer for
the whole process-group timeout (30 min by default) -- in the rendezvous it may even sit connected to
whatever other process holds that port. Such an orphan keeps the terminal's (or a caller's) output
open and a core busy. This module gives those ranks a watchdog: a daemon thread that notices the
launcher is gone (its pid is no longer the parent pid once the rank was re-parented) and exits.
"""

from __future__ import annotations

import os
import sys
import threading
import time

# The pid of the glomssl command that may launch ranks (inherited by them through the environment).
LAUNCHER_ENV = "GLOMSSL_LAUNCHER_PID"
# Set by launchers that supervise their own workers (torchrun/elastic, SLURM): leave those alone.
_MANAGED = ("TORCHELASTIC_RUN_ID", "SLURM_PROCID")


def relaunched_rank() -> int | None:
    """This process's local rank when a launcher started it as rank 1.. (``LOCAL_RANK`` set before
    start-up, no cluster manager); None for the command the user ran and for managed jobs."""
    if any(v in os.environ for v in _MANAGED):
        return None
    try:
        rank = int(os.environ.get("LOCAL_RANK", ""))
    except ValueError:
        return None
    return rank if rank > 0 else None


def exit_with_launcher(poll_s: float = 0.5) -> bool:
    """In a relaunched rank, start a daemon thread that exits the process (code 1, one line on
    stderr) once the launching rank 0 has died. Returns whether the watch started.

    In any other process, record this pid in the environment the ranks it may launch inherit, so a
    rank whose launcher died before it even started (re-parented already) knows at once.
    """
    rank = relaunched_rank()
    if rank is None:
        os.environ[LAUNCHER_ENV] = str(os.getpid())
        return False
    try:
        launcher = int(os.environ.get(LAUNCHER_ENV, ""))
    except ValueError:
        launcher = os.getppid()  # started by something else that sets LOCAL_RANK: watch the parent

    def gone() -> None:
        print(
            f"rank {rank}: the launching process {launcher} (rank 0) has exited; stopping this rank",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)  # no clean-up: the peers are gone, any collective would only wait

    if os.getppid() != launcher:  # re-parented before we could look
        gone()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != launcher:
                gone()

    threading.Thread(target=watch, name="glomssl-launcher-watch", daemon=True).start()
    return True


def rendezvous_port_error(exc: BaseException) -> str | None:
    """The one-line error for a DDP rendezvous whose port is taken (torch's ``DistNetworkError``
    ... EADDRINUSE), or None for any other exception. The port usually comes from a ``MASTER_PORT``
    left set in the shell, or from another run on the same machine."""
    text = str(exc)
    if type(exc).__name__ != "DistNetworkError" or "EADDRINUSE" not in text:
        return None
    port = os.environ.get("MASTER_PORT", "")
    where = f"MASTER_PORT {port}" if port else "the DDP rendezvous port"
    return (
        f"{where} is already in use on this machine (another run, or a stale MASTER_PORT); "
        "unset MASTER_PORT to let glomssl pick a free port, or set it to a free one"
    )


def close_process_group() -> None:
    """Tear down torch.distributed's default process group, if this process has one, once a command
    has finished its work. A gloo group left for the interpreter's exit can abort the process
    (``terminate called without an active exception``, exit -6) after a run that succeeded; torch
    asks for ``destroy_process_group()`` before exit. Best effort: nothing is raised."""
    dist = sys.modules.get("torch.distributed")
    if dist is None:  # torch never loaded: nothing to close
        return
    try:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - at exit, a failed tear-down must not mask the result
        pass
