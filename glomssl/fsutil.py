"""Small filesystem helpers: atomic writes and hashing.

Every file glomssl produces is written to a temporary name in the same folder and renamed into place,
so a crash (even ``kill -9``) never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from glomssl.errors import GlomsslError


def _read_umask() -> int:
    mask = os.umask(0o022)  # there is no getter: set, then put it straight back
    os.umask(mask)
    return mask


#: Mode for new files: 0o666 less the umask, what ``open(path, "w")`` gives (read once, at import,
#: before any worker thread exists).
FILE_MODE = 0o666 & ~_read_umask()


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", fsync: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically."""
    target = Path(path)
    if target.is_dir():
        raise GlomsslError(f"{target} is a folder, not a file; pass another output file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    binary = "b" in mode
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600 files; outputs follow the umask
        fh: IO = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")
        with fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb", fsync=fsync) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, fsync: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w", fsync=fsync) as fh:
        fh.write(text)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    except OSError as exc:
        raise GlomsslError(f"cannot read {path}: {exc.strerror}; check the path") from exc
    return h.hexdigest()


def ensure_writable_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """Create ``path`` if needed and check we can write there; raise a one-line error otherwise."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise GlomsslError(
            f"{what} {p} is not a writable folder ({exc.strerror}); choose a folder you can write to"
        ) from exc
    return p


def _same_path(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file or folder: equal resolved paths (another spelling, a
    trailing slash, a symlink), or, both existing, the same inode (a case-insensitive file system)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refuse_out_is_input(
    out: str | os.PathLike[str] | None,
    inputs: Iterable[str | os.PathLike[str]],
    command: str,
    input_opt: str = "--input",
    out_opt: str = "--out",
) -> None:
    """Refuse an output that IS one of the inputs, before anything is written (one-line error, exit 2).

    An ``--out`` folder equal to an input folder would put the command's outputs among the user's
    images, and a rerun would read them as input (leaving out everything under ``--out`` would leave
    out every input, so the readers' ``exclude`` cannot help). An ``--out`` file equal to an input
    file would overwrite it. Compared on resolved paths, so a relative spelling, a trailing slash or a
    symlink of the input count as the input. An ``--out`` inside an input folder is not refused: the
    readers leave it out (see :func:`glomssl.manifest.list_images`).
    """
    if out is None or not os.fspath(out):
        return
    target = Path(out)
    for src in inputs:
        given = Path(src)
        if not os.fspath(src) or not given.exists() or not _same_path(given, target):
            continue
        real = given.resolve()
        who = f"`glomssl {command}`" if command else "this command"
        instead = (
            f"{real.parent / (real.stem or 'input')}_out{real.suffix}"  # figs_out, m_out.jsonl
        )
        kind = "folder" if given.is_dir() else "file"
        said = f"{out_opt} {os.fspath(out)} is the {input_opt} {kind} {os.fspath(src)} itself"
        if os.path.normpath(out) != os.path.normpath(src):  # another spelling: show what both are
            said += f" ({real})"
        if kind == "folder":
            raise GlomsslError(
                f"{said}: {who} would write among its images and a rerun would read "
                f"its own outputs as input; choose an {out_opt} outside the input folder, e.g. "
                f"{instead}"
            )
        raise GlomsslError(
            f"{said}: {who} would overwrite its input; choose another {out_opt}, e.g. {instead}"
        )


@contextmanager
def folder_lock(out: Path, command: str) -> Iterator[None]:
    """Hold an OS lock on ``OUT/.<command>.lock`` so two runs of ``glomssl <command>`` never work in
    one folder; the OS releases it even on ``kill -9``. A second run gets a one-line error."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no guard
        yield
        return
    with open(Path(out) / f".{command}.lock", "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise GlomsslError(
                f"another `glomssl {command}` is working in {out}; wait for it or use another --out"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
