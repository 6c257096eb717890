"""Run folders, weights on disk, metrics logs and rank-zero helpers.

Weights are stored as safetensors plus a JSON sidecar (architecture, config, version); glomssl never
unpickles a file a user downloaded. Only rank zero writes files in distributed runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from glomssl import __version__
from glomssl.errors import GlomsslError
from glomssl.fsutil import FILE_MODE, atomic_write_text

F = TypeVar("F", bound=Callable[..., Any])
_RUN_RE = re.compile(r"^(\d{5})-")


def global_rank() -> int:
    """Rank of this process in a distributed job (0 when not distributed)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            try:
                return int(os.environ[var])
            except ValueError:
                pass
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except ImportError:
        pass
    return 0


def is_rank_zero() -> bool:
    return global_rank() == 0


def rank_zero_only(fn: F) -> F:
    """Decorator: run ``fn`` on rank zero only (returns None elsewhere)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if is_rank_zero():
            return fn(*args, **kwargs)
        return None

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper  # type: ignore[return-value]


def next_run_dir(root: str | os.PathLike[str], desc: str) -> Path:
    """Create the next numbered run folder ``root/00007-desc`` (stylegan2-ada style)."""
    from glomssl.fsutil import ensure_writable_dir

    base = ensure_writable_dir(root)  # a file named like --out is a one-line error
    nums = [int(m.group(1)) for p in base.iterdir() if (m := _RUN_RE.match(p.name))]
    while True:
        n = max(nums, default=-1) + 1
        run = base / f"{n:05d}-{desc}"
        try:
            run.mkdir()
            return run
        except FileExistsError:
            nums.append(n)


@contextlib.contextmanager
def removed_on_error(run: Path) -> Iterator[Path]:
    """Remove the new run folder ``run`` when the block raises: a run refused while it is being set
    up (a bad --model, --init or data) leaves no empty numbered folder behind."""
    try:
        yield run
    except BaseException:
        shutil.rmtree(run, ignore_errors=True)
        raise


def sidecar_path(weights: str | os.PathLike[str]) -> Path:
    return Path(weights).with_suffix(".json")


def save_weights(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> Path:
    """Save a state dict as safetensors plus a JSON sidecar, both atomically.

    The sidecar is renamed into place first and the weights last, so a crash in between leaves either
    nothing new or a sidecar without weights (ignored by loaders), never weights whose sidecar is
    missing.
    """
    from safetensors.torch import save_file

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    info = {
        "glomssl_version": __version__,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info.update(meta)
    try:
        save_file(flat, str(tmp), metadata={"format": "pt", "glomssl": __version__})
        os.chmod(tmp, FILE_MODE)  # safetensors writes 0600 files; outputs follow the umask
        atomic_write_text(sidecar_path(target), json.dumps(info, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def load_weights(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load safetensors weights and their JSON sidecar; clear errors for wrong files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise GlomsslError(f"weights file {p} does not exist; check the path")
    try:
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as exc:
        raise GlomsslError(
            f"{p} is not a safetensors weights file ({exc}); pass a file glomssl wrote"
        ) from exc
    meta: dict[str, Any] = {}
    side = sidecar_path(p)
    if side.is_file():
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        # JSONDecodeError (bad JSON) and UnicodeDecodeError (binary bytes) are both ValueErrors
        except (OSError, ValueError) as exc:
            raise GlomsslError(f"{side} is not valid JSON; restore or delete it") from exc
        if not isinstance(meta, dict):
            raise GlomsslError(
                f"{side} is not a weights sidecar (a JSON object of key: value); restore or delete it"
            )
    return tensors, meta


class MetricsLogger:
    """Append-only ``metrics.jsonl`` (one JSON object per line), written on rank zero only."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def log(self, **values: Any) -> None:
        if not is_rank_zero():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(values, default=float) + "\n")
            fh.flush()


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
