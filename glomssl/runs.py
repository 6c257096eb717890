"""Run folders, weights on disk, metrics logs and rank-zero helpers.

Weights are stored as safetensors plus a JSON sidecar (architecture, config, version); the kind of
model is also written into the safetensors header, so a file copied without its sidecar still says what
it is. glomssl never unpickles a file a user downloaded. Only rank zero writes files in distributed
runs.
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
from typing import Any, Literal, TypeVar

from glomssl import __version__
from glomssl.errors import GlomsslError
from glomssl.fsutil import FILE_MODE, atomic_write_text

F = TypeVar("F", bound=Callable[..., Any])
_RUN_RE = re.compile(r"^(\d{5})-")


def global_rank() -> int:
    """Rank of this process in a distributed job (0 when not distributed).

    ``RANK`` (torchrun) and ``SLURM_PROCID`` are global; then an initialised process group; then a
    launcher's ``NODE_RANK`` (or ``GROUP_RANK``) with ``LOCAL_RANK``: on the first node the local rank,
    on another node ``node x LOCAL_WORLD_SIZE + local`` (exact when ``LOCAL_WORLD_SIZE`` is set, and
    never 0 otherwise: only one process of a job may act as rank zero).
    """
    for var in ("RANK", "SLURM_PROCID"):
        value = _env_int(var)
        if value is not None:
            return value
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except ImportError:
        pass
    local = _env_int("LOCAL_RANK") or 0
    node = _env_int("NODE_RANK")
    if node is None:
        node = _env_int("GROUP_RANK") or 0
    if node <= 0:
        return local
    per_node = _env_int("LOCAL_WORLD_SIZE") or 1
    return node * max(1, per_node) + local


def _env_int(var: str) -> int | None:
    """The integer in environment variable ``var``, or None when unset or not an integer."""
    try:
        return int(os.environ[var])
    except (KeyError, ValueError):
        return None


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


# What a weights file is, written into its safetensors header (metadata key WEIGHTS_KIND_KEY) so that a
# file copied without its .json sidecar still says what it is. kind -> (what it is, where it goes).
WEIGHTS_KIND_KEY = "glomssl_kind"
WeightsKind = Literal[
    "panel-detector",
    "glomerulus-detector",
    "segmenter",
    "classifier",
    "ssl-backbone",
    "ssl-decoder",
    "gan-snapshot",
    "datagan-labeler",
]
WEIGHTS_KINDS: dict[str, tuple[str, str]] = {
    "panel-detector": (
        "a panel detector",
        "glomssl separate --weights (or separator train --init)",
    ),
    "glomerulus-detector": (
        "a glomerulus detector",
        "glomssl detect --weights or glomssl wsi --detector (or detect train --init)",
    ),
    "segmenter": ("a glomssl segmenter", "glomssl segment --model or glomssl wsi --segmenter"),
    "classifier": ("a glomssl classifier", "glomssl classify --model or glomssl wsi --classifier"),
    "ssl-backbone": (
        "a glomssl pretrain encoder",
        "glomssl embed --checkpoint, finetune cls --backbone or finetune seg --init",
    ),
    "ssl-decoder": (
        "a glomssl pretrain decoder",
        "glomssl finetune seg --init (as decoder.safetensors beside its backbone.safetensors)",
    ),
    "gan-snapshot": ("a glomssl GAN snapshot", "glomssl gan or glomssl datagan --network"),
    "datagan-labeler": ("a datagan labeler", "glomssl datagan --labeler"),
}
# How the sidecars of each kind say what they are (the writers' constants: detect.model.ARCHITECTURE,
# mining.yolo.ARCHITECTURE, segmenter.infer.SEGMENTER_FORMAT, classifier.model.KIND,
# datagan.snapshot.FORMAT; tests/test_weights_kind.py checks they agree).
_SIDECAR_MARKS: tuple[tuple[str, str, str], ...] = (
    ("architecture", "glomssl-panel-yolo", "panel-detector"),
    ("architecture", "glomssl-glomerulus-yolo", "glomerulus-detector"),
    ("format", "glomssl-segmenter", "segmenter"),
    ("kind", "glomssl-classifier", "classifier"),
    ("format", "glomssl-gan-snapshot-v1", "gan-snapshot"),
    ("kind", "datagan-labeler", "datagan-labeler"),
)
# The panel and glomerulus detectors have the same layout (same tensor names and shapes, one class
# each), so an untagged file without a sidecar cannot be told apart by its architecture. The detectors
# glomssl shipped before files were tagged are known by the sha256 of their class head's weights.
_YOLO_HEAD = "model.22.cv3.0.2.weight"
_SHIPPED_UNTAGGED: dict[str, str] = {
    "4103caa00e0d1c5a75f7fed1c969e82ecacd2a453e98578161fcc9e20c8d5b31": "panel-detector",
    "15243b69d5f1021727bbeb740fe8d73d74850d09bbb05e9b648aeec75f9f6705": "glomerulus-detector",
}


class WeightsKindError(GlomsslError):
    """A weights file of another kind than the loader takes (loaders pass it on unchanged)."""


def sidecar_kind(meta: Mapping[str, Any]) -> str | None:
    """The kind of model a weights sidecar describes, or None when it does not say."""
    for key, value, kind in _SIDECAR_MARKS:
        if meta.get(key) == value:
            return kind
    if meta.get("part") == "decoder" and isinstance(meta.get("arch"), str):
        return "ssl-decoder"
    if isinstance(meta.get("arch"), str) and "method" in meta:
        return "ssl-backbone"
    return None


def _what(kind: str) -> str:
    return WEIGHTS_KINDS[kind][0] if kind in WEIGHTS_KINDS else f"a {kind!r} model"


def save_weights(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Any],
    meta: Mapping[str, Any],
    kind: WeightsKind | None = None,
) -> Path:
    """Save a state dict as safetensors plus a JSON sidecar, both atomically.

    ``kind`` (what the file is; by default what ``meta`` says, see :func:`sidecar_kind`) goes into
    the safetensors header under ``glomssl_kind``, so loaders can refuse a file of another kind even
    without its sidecar.

    The sidecar is renamed into place first and the weights last, so a crash in between leaves either
    nothing new or a sidecar without weights (ignored by loaders), never weights whose sidecar is
    missing.
    """
    from safetensors.torch import save_file

    described = sidecar_kind(meta)
    if kind is not None and kind not in WEIGHTS_KINDS:
        raise ValueError(f"unknown weights kind {kind!r}; one of {', '.join(WEIGHTS_KINDS)}")
    if kind is not None and described is not None and described != kind:
        raise ValueError(f"weights of kind {kind!r} with a sidecar that describes {described!r}")
    tag = kind if kind is not None else described
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    info = {
        "glomssl_version": __version__,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info.update(meta)
    header = {"format": "pt", "glomssl": __version__}
    if tag is not None:
        header[WEIGHTS_KIND_KEY] = tag
    try:
        save_file(flat, str(tmp), metadata=header)
        os.chmod(tmp, FILE_MODE)  # safetensors writes 0600 files; outputs follow the umask
        atomic_write_text(sidecar_path(target), json.dumps(info, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def weights_kind(path: str | os.PathLike[str]) -> str | None:
    """The kind written in a weights file's safetensors header (None: untagged or unreadable)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}).get(WEIGHTS_KIND_KEY)
    except (SafetensorError, OSError, ValueError):
        return None


def load_weights(
    path: str | os.PathLike[str],
    expect: WeightsKind | None = None,
    flag: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load safetensors weights and their JSON sidecar; clear errors for wrong files.

    ``expect``: the kind of model the caller loads. A file whose header tag (or, untagged, whose
    sidecar; or, for an untagged detector without a sidecar, a shipped detector's tensors) says it
    is another kind is refused with a one-line :class:`WeightsKindError` that names ``flag`` (the
    option that gave the file) and where the file goes instead. A header tag and a sidecar that
    disagree are refused whatever ``expect`` is.
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise GlomsslError(f"weights file {p} does not exist; check the path")
    try:
        with safe_open(str(p), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
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
    where = f"{flag} {p}" if flag else str(p)
    tag = header.get(WEIGHTS_KIND_KEY)
    described = sidecar_kind(meta)
    if tag and described and tag != described:
        raise WeightsKindError(
            f"{where} is {_what(tag)}'s weights but its sidecar {side.name} describes "
            f"{_what(described)}'s; the .json belongs to another file: restore the right one or "
            "delete it"
        )
    kind = tag or described
    if kind is None and not side.is_file() and expect in ("panel-detector", "glomerulus-detector"):
        head = tensors.get(_YOLO_HEAD)
        if head is not None:
            import hashlib

            digest = hashlib.sha256(head.float().contiguous().numpy().tobytes()).hexdigest()
            kind = _SHIPPED_UNTAGGED.get(digest)
    if expect is not None and kind is not None and kind != expect:
        use = WEIGHTS_KINDS[kind][1] if kind in WEIGHTS_KINDS else "the command that made it"
        raise WeightsKindError(
            f"{where} is not {_what(expect)}'s weights but {_what(kind)}'s; pass it to {use}"
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
