"""Lightning side of the engine: module-level callbacks and the Trainer builder.

- :class:`JsonlMetrics`: a JSON line every ``log_every`` steps, at each validation, and always after the
  final step (a 6-step run is never silent).
- :class:`DivergenceGuard`: stops a run whose loss is no longer finite, at that step, on every rank.
- :func:`check_finite_state`: refuses to export NaN/inf weights.
- :func:`resume_checkpoint`: ``--resume`` reads ``checkpoints/last.ckpt`` with ``weights_only=True``
  (no unpickling) and truncates ``metrics.jsonl`` to the checkpoint's step.
- :func:`make_trainer`: a quiet Lightning Trainer from a :class:`HardwareConfig`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from glomssl.engine.hardware import HardwareConfig, quiet_third_party, truncate_metrics
from glomssl.errors import GlomsslError


def _lightning_callback_base() -> Any:
    import lightning as L

    return L.Callback


class JsonlMetrics(_lightning_callback_base()):  # type: ignore[misc]
    """Every ``log_every`` optimizer steps, and always after the last step, one JSON line.

    Each line holds ``step``, ``epoch``, ``lr``, ``images_per_s`` (when ``batch_size`` is given) and
    every value in ``trainer.callback_metrics`` (the module's ``self.log`` calls). Validation metrics
    logged at the end of an epoch are written with that epoch's step. Only rank zero writes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        log_every: int = 10,
        batch_size: int | None = None,
        static: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from glomssl.runs import MetricsLogger

        self.static = dict(static or {})
        self.logger = MetricsLogger(path)
        self.log_every = max(1, int(log_every))
        self.batch_size = batch_size
        self.t0 = time.perf_counter()
        self.last_step = -1

    def _row(self, trainer: Any) -> dict[str, Any]:
        step = int(trainer.global_step)
        n = step - self.last_step
        dt = time.perf_counter() - self.t0
        self.t0, self.last_step = time.perf_counter(), step
        row: dict[str, Any] = {"step": step, "epoch": int(trainer.current_epoch)}
        if trainer.optimizers:
            row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        if self.batch_size and dt > 0 and n > 0:
            row["images_per_s"] = n * self.batch_size / dt
        row.update(self.static)
        for k, v in trainer.callback_metrics.items():
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                continue
        return row

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.t0, self.last_step = time.perf_counter(), int(trainer.global_step)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = int(trainer.global_step)
        if step == self.last_step or step % self.log_every != 0 or not trainer.is_global_zero:
            return
        self.logger.log(**self._row(trainer))

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row = self._row(trainer)
        row["event"] = "validation"
        self.logger.log(**row)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """The last step is always logged, so a run shorter than ``log_every`` is never silent."""
        if trainer.is_global_zero and int(trainer.global_step) != self.last_step:
            self.logger.log(**self._row(trainer))


class DivergenceGuard(_lightning_callback_base()):  # type: ignore[misc]
    """Stop a run whose training loss is NaN or infinite, at the step it happens, on every rank.

    The loss is checked after every optimizer step (one ``isfinite`` on a scalar); DDP averages
    gradients, so every rank sees the same divergence and all stop together. ``advice`` is appended to
    the one-line error (e.g. "lower --lr or raise --warmup-steps").
    """

    def __init__(self, what: str = "training", advice: str = "lower --lr") -> None:
        super().__init__()
        self.what = what
        self.advice = advice

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        import torch

        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None or not isinstance(loss, torch.Tensor):
            return
        if not bool(torch.isfinite(loss.detach()).all()):
            lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
            raise GlomsslError(
                f"{self.what} diverged: the loss became {float(loss.detach().float().mean())} at "
                f"step {trainer.global_step} (lr {lr:g}); nothing was exported. {self.advice}"
            )


class LogProgress(_lightning_callback_base()):  # type: ignore[misc]
    """Without a terminal (a log file, a batch job), one plain progress line every ``every`` steps.

    A progress bar in a log file is a wall of carriage returns; this prints
    ``train step 120/800 (15%) 3.10/s eta 3m40s loss=0.41`` instead, on rank zero only.
    """

    def __init__(self, every: int = 10, what: str = "train") -> None:
        super().__init__()
        self.every = max(1, int(every))
        self.what = what
        self.t0 = time.perf_counter()
        self.start = 0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.t0, self.start = time.perf_counter(), int(trainer.global_step)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        import sys

        step = int(trainer.global_step)
        if not trainer.is_global_zero or step % self.every:
            return
        total = int(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else 0
        rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        parts = [
            f"{self.what} step {step}" + (f"/{total} ({100 * step / total:.0f}%)" if total else "")
        ]
        parts.append(f"{rate:.2f} steps/s")
        if total and rate > 0:
            eta = (total - step) / rate
            parts.append(f"eta {int(eta // 60)}m{int(eta % 60):02d}s")
        for key in ("loss", "val_loss"):
            v = trainer.callback_metrics.get(key)
            if v is not None:
                parts.append(f"{key}={float(v):.4g}")
        print(" ".join(parts), file=sys.stderr, flush=True)


class EpochSetter(_lightning_callback_base()):  # type: ignore[misc]
    """Tell datasets that draw per-epoch randomness (``set_epoch``) which epoch starts."""

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        ds: Any = getattr(trainer.train_dataloader, "dataset", None)
        if ds is not None and hasattr(ds, "set_epoch"):
            ds.set_epoch(trainer.current_epoch)


def check_finite_state(module: Any, what: str = "the model") -> None:
    """Refuse to export weights holding NaN or inf (a diverged run must never write a model)."""
    import torch

    for name, t in module.state_dict().items():
        if torch.is_floating_point(t) and not bool(torch.isfinite(t).all()):
            raise GlomsslError(
                f"{what} has non-finite values in {name}; the run diverged and nothing was exported "
                "(lower the learning rate)"
            )


def checkpoint_step(path: str | os.PathLike[str]) -> int | None:
    """The global step stored in a Lightning checkpoint, read without unpickling code objects."""
    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or holding pickled objects
        raise GlomsslError(
            f"checkpoint {path} cannot be read safely ({type(exc).__name__}); delete it to start "
            "over, or restore a good copy"
        ) from exc
    step = ckpt.get("global_step") if isinstance(ckpt, dict) else None
    return int(step) if isinstance(step, int) else None


def resume_checkpoint(
    out: str | os.PathLike[str], resume: bool, metrics: str = "metrics.jsonl"
) -> str | None:
    """``RUN/checkpoints/last.ckpt`` when resuming and it exists (checked, metrics truncated)."""
    from glomssl.runs import is_rank_zero

    last = Path(out) / "checkpoints" / "last.ckpt"
    if not resume:
        return None
    if not last.is_file():
        if is_rank_zero():
            print(f"no checkpoint in {last.parent}; starting from scratch")
        return None
    step = checkpoint_step(last)
    if step is not None and is_rank_zero():
        truncate_metrics(Path(out) / metrics, step)
    return str(last)


def make_trainer(
    hw: HardwareConfig,
    out: str | os.PathLike[str],
    *,
    callbacks: list[Any],
    max_steps: int = -1,
    max_epochs: int | None = None,
    max_minutes: float | None = None,
    accumulate: int = 1,
    log_every: int = 10,
    quiet: bool = False,
    sync_batchnorm: bool | None = None,
    val_every_epochs: int | None = None,
    deterministic: bool = False,
    use_distributed_sampler: bool = True,
) -> Any:
    """A Lightning Trainer for ``hw``: glomssl's quiet defaults, no logger folders, rank-zero output.

    ``sync_batchnorm`` defaults to True for multi-device GPU runs (torch's SyncBatchNorm is CUDA only).
    ``use_distributed_sampler=False`` is for loaders that shard themselves per rank (e.g. a batch
    sampler that keeps each batch to one task).
    """
    import sys
    from datetime import timedelta

    import lightning as L

    hw.check_available()
    quiet_third_party()
    interactive = sys.stderr.isatty()
    if not quiet and not interactive:
        callbacks = [*callbacks, LogProgress(log_every)]
    if sync_batchnorm is None:
        sync_batchnorm = hw.world_size > 1 and hw.on_gpu()
    return L.Trainer(
        accelerator="gpu" if hw.accelerator == "cuda" else hw.accelerator,
        devices=hw.devices,
        num_nodes=hw.num_nodes,
        strategy=hw.lightning_strategy(),
        precision=hw.lightning_precision(),  # type: ignore[arg-type]
        max_steps=max_steps,
        max_epochs=max_epochs if max_epochs is not None else (-1 if max_steps > 0 else None),
        max_time=timedelta(minutes=max_minutes) if max_minutes else None,
        accumulate_grad_batches=accumulate,
        sync_batchnorm=sync_batchnorm,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=not quiet and interactive,
        enable_model_summary=False,
        log_every_n_steps=log_every,
        use_distributed_sampler=use_distributed_sampler,
        default_root_dir=str(out),
        check_val_every_n_epoch=val_every_epochs or 1,
        num_sanity_val_steps=0,
        deterministic=deterministic,
    )
