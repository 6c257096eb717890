"""Hardware and run bookkeeping shared by every command that trains or runs a network (light imports).

- :func:`resolve_device`: one reading of ``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) for the
  commands that run a network on one device, with a one-line error for a device that does not exist.
- :class:`HardwareConfig`: one vocabulary for accelerator, devices, nodes, strategy and precision,
  nested in every training config (its click options live in ``glomssl.cli.common``).
- :func:`truncate_metrics`: after ``--resume``, drop the ``metrics.jsonl`` lines a killed run wrote
  after its last checkpoint, so no step is logged twice.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glomssl.config import opt
from glomssl.errors import GlomsslError

PRECISIONS = ("auto", "32", "bf16-mixed", "16-mixed", "64")
_PRECISION_ALIASES = {"32-true": "32", "fp32": "32", "bf16": "bf16-mixed", "16": "16-mixed"}
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "ddp_find_unused")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")


def check_accelerator_strategy(
    accelerator: str, strategy: str, strategies: tuple[str, ...] = STRATEGIES
) -> None:
    """One-line errors for an ``--accelerator`` or ``--strategy`` outside the known choices (before
    Lightning turns them into a traceback)."""
    if accelerator not in ACCELERATORS:
        raise GlomsslError(f"--accelerator {accelerator!r} is not one of {', '.join(ACCELERATORS)}")
    if strategy not in strategies:
        raise GlomsslError(f"--strategy {strategy!r} is not one of {', '.join(strategies)}")


def resolve_device(name: str, what: str = "--device") -> str:
    """``auto`` -> ``cuda:LOCAL_RANK`` when a GPU exists, else ``cpu``; checks an explicit choice.

    Raises a one-line GlomsslError for an unknown name or a CUDA device this machine does not have.
    """
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
        return "cpu"
    if name == "cpu":
        return "cpu"
    if name == "gpu":
        name = "cuda"
    if name.isdigit():
        name = f"cuda:{name}"
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise GlomsslError(f"{what} {name!r} is not a device; use auto, cpu, cuda or cuda:N")
        if not torch.cuda.is_available():
            raise GlomsslError(f"{what} {name}: this machine has no CUDA GPU; use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise GlomsslError(
                f"{what} {name}: only {torch.cuda.device_count()} GPU(s) here; use cuda:0 .. "
                f"cuda:{torch.cuda.device_count() - 1}"
            )
        return name
    raise GlomsslError(f"{what} {name!r} is not a device; use auto, cpu, cuda or cuda:N")


def normalise_precision(value: str) -> str:
    """One precision vocabulary: ``32``, ``bf16-mixed``, ``16-mixed``, ``64`` or ``auto``."""
    v = _PRECISION_ALIASES.get(str(value), str(value))
    if v not in PRECISIONS:
        raise GlomsslError(f"--precision {value!r} is not one of {', '.join(PRECISIONS)}")
    return v


@dataclass
class HardwareConfig:
    """Where and how a training command runs; the same options for every trainer.

    ``precision='auto'`` means bf16-mixed on GPUs that support it (16-mixed on older GPUs) and 32 on
    CPUs. ``devices`` counts devices per node; only the first process writes files.
    """

    accelerator: str = "auto"
    devices: int = opt(1, ge=1)
    num_nodes: int = opt(1, ge=1)
    strategy: str = "auto"
    precision: str = "auto"

    def validate(self) -> None:
        check_accelerator_strategy(self.accelerator, self.strategy)
        normalise_precision(self.precision)

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def on_gpu(self) -> bool:
        import torch

        return self.accelerator in ("gpu", "cuda") or (
            self.accelerator == "auto" and torch.cuda.is_available()
        )

    def check_available(self) -> None:
        """A GPU run on a machine without one stops here with advice, not deep inside Lightning."""
        import torch

        if self.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise GlomsslError("--accelerator gpu: this machine has no CUDA GPU; use cpu or auto")

    def lightning_precision(self) -> str:
        """The precision string Lightning expects, with ``auto`` resolved for this machine."""
        p = normalise_precision(self.precision)
        if p != "auto":
            return "32-true" if p == "32" else ("64-true" if p == "64" else p)
        if not self.on_gpu():
            return "32-true"
        import torch

        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"

    def lightning_strategy(self) -> str:
        if self.strategy == "ddp_find_unused":
            return "ddp_find_unused_parameters_true"
        return self.strategy


def quiet_third_party() -> None:
    """Hide Lightning's banners and tips and known third-party warnings, so what is left is ours."""
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning(_fabric)?(\..*)?")
    warnings.filterwarnings("ignore", message=r".*(LeafSpec|weights_only|litlogger).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def truncate_metrics(path: str | os.PathLike[str], step: float, key: str = "step") -> int:
    """Keep the lines of ``metrics.jsonl`` whose ``key`` is at most ``step``; returns lines dropped.

    A run killed after its last checkpoint logged steps that ``--resume`` will train (and log) again.
    """
    from glomssl.fsutil import atomic_write_text

    p = Path(path)
    if not p.is_file():
        return 0
    keep, dropped = [], 0
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            dropped += 1
            continue
        if isinstance(row, dict) and isinstance(row.get(key), int | float) and row[key] > step:
            dropped += 1
            continue
        keep.append(line)
    if dropped:
        atomic_write_text(p, "".join(f"{ln}\n" for ln in keep))
    return dropped


def is_finite_number(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def progress_line(what: str, done: int, total: int, t0: float, **extra: Any) -> str:
    """One plain progress line for logs: ``what 120/800 (15%) 3.1/s eta 3m40s key=value``."""
    dt = max(time.perf_counter() - t0, 1e-9)
    rate = done / dt
    eta = (total - done) / rate if rate > 0 and total else 0.0
    parts = [f"{what} {done}/{total} ({100 * done / max(total, 1):.0f}%)", f"{rate:.2f}/s"]
    if done and total:
        parts.append(f"eta {int(eta // 60)}m{int(eta % 60):02d}s")
    parts += [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()]
    return " ".join(parts)
