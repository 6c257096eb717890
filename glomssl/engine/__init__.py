"""The engine shared by every command that trains or runs a network.

``glomssl.engine`` itself stays light (no torch or Lightning at import): device and hardware options,
metrics bookkeeping, progress lines. The Lightning callbacks and the Trainer builder live in
:mod:`glomssl.engine.trainer`.
"""

from glomssl.engine.hardware import (
    HardwareConfig,
    normalise_precision,
    progress_line,
    quiet_third_party,
    resolve_device,
    truncate_metrics,
)

__all__ = [
    "HardwareConfig",
    "normalise_precision",
    "progress_line",
    "quiet_third_party",
    "resolve_device",
    "truncate_metrics",
]
