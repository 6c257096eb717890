"""The Lightning module of ``glomssl finetune seg``: partial-label training and per-class validation.

Training follows Glo-In-One v2 (../shared/papers/000): batches of one task, BCE + Dice on the task's
annotated pixels, SGD with Nesterov momentum 0.99 at lr 1e-3 and a poly(0.9) decay (AdamW is an
option for short runs). Sigmoid models whose batch is single-task per image run
``forward_tasks`` (only the needed heads: one per image); label-map images use every head. The
``multiclass`` baseline is trained with cross-entropy on naive targets (unannotated = background).

Validation scores every image on its own task (Dice at probability 0.5); under DDP each rank scores a
strided share of the validation set and the scores are gathered, so every rank logs the same
``val_dice`` (mean over classes) and ``val_dice_<class>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch

from glomssl.finetune.segmenter.losses import (
    expand_targets,
    multiclass_loss,
    naive_multiclass_targets,
    partial_bce_dice,
)


def poly_with_warmup(step: int, total: int, warmup: int, power: float) -> float:
    """lr factor: linear warm-up over ``warmup`` steps, then (1 - step/total)^power (GIO2's poly)."""
    if step < warmup:
        return (step + 1) / warmup
    return float(max(0.0, 1 - min(step, total) / max(total, 1)) ** power)


class SegModule(L.LightningModule):
    """Wraps a registered segmenter; the data loaders are built here, once ranks are known."""

    def __init__(
        self,
        model: Any,
        train_ds: Any,
        val_ds: Any,
        sampler_kw: dict[str, Any],
        *,
        batch_size: int,
        workers: int,
        lr: float,
        optimizer: str,
        momentum: float,
        weight_decay: float,
        poly_power: float,
        warmup_steps: int,
        total_steps: int,
        loss_kw: dict[str, Any],
    ) -> None:
        super().__init__()
        self.model = model
        self.train_ds, self.val_ds = train_ds, val_ds
        self.sampler_kw = sampler_kw
        self.batch_size, self.workers = batch_size, workers
        self.lr, self.optimizer_name = lr, optimizer
        self.momentum, self.weight_decay = momentum, weight_decay
        self.poly_power, self.warmup_steps = poly_power, warmup_steps
        self.total_steps = max(1, total_steps)
        self.loss_kw = loss_kw
        self._val: list[tuple[int, float]] = []

    @property
    def classes(self) -> list[str]:
        return list(self.model.classes)

    # ---------------------------------------------------------------- data
    def train_dataloader(self) -> Any:
        from glomssl.finetune.segmenter.dataset import TaskBatchSampler

        sampler = TaskBatchSampler(
            rank=self.global_rank, world=self.trainer.world_size, **self.sampler_kw
        )
        return torch.utils.data.DataLoader(
            self.train_ds,
            batch_sampler=sampler,
            num_workers=self.workers,
            persistent_workers=self.workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self) -> Any:
        world = self.trainer.world_size
        share = torch.utils.data.Subset(
            self.val_ds, list(range(self.global_rank, len(self.val_ds), world))
        )
        return torch.utils.data.DataLoader(
            share, batch_size=self.batch_size, shuffle=False, num_workers=self.workers
        )

    # ---------------------------------------------------------------- steps
    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x, mask, task = batch["image"], batch["mask"], batch["task"]  # (B,3,S,S), (B,S,S), (B,)
        m = self.model
        if m.output == "softmax":
            return multiclass_loss(m(x), naive_multiclass_targets(mask, task))
        if bool((task >= 0).all()):
            logits = m.forward_tasks(x, task)[:, None]  # (B, 1, S, S)
            return partial_bce_dice(logits, mask[:, None], **self.loss_kw)
        target = expand_targets(mask, task, m.num_classes)  # (B, K, S, S)
        return partial_bce_dice(m(x), target, **self.loss_kw)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Any:
        out = self.losses(batch)
        bs = int(batch["image"].shape[0])
        self.log("loss", out["loss"], prog_bar=True, batch_size=bs)
        self.log("loss_bce", out["bce"], batch_size=bs)
        self.log("loss_dice", out["dice"], batch_size=bs)
        return out["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        from glomssl.finetune.segmenter.metrics import dice

        x, mask, task = batch["image"], batch["mask"], batch["task"]
        probs = self.model.probabilities(x).float().cpu().numpy()  # (B, K, S, S)
        masks = mask.cpu().numpy()
        for b, t in enumerate(task.tolist()):
            for k, truth in per_class_truth(masks[b], int(t), probs.shape[1]):
                self._val.append((k, dice(probs[b, k] > 0.5, truth)))

    def on_validation_epoch_end(self) -> None:
        rows = torch.tensor(self._val, dtype=torch.float64).reshape(-1, 2)
        if self.trainer.world_size > 1:
            n: Any = self.all_gather(torch.tensor(rows.shape[0], device=self.device))
            pad = torch.full((int(n.max()) - rows.shape[0], 2), -1.0, dtype=torch.float64)
            gathered: Any = self.all_gather(torch.cat([rows, pad]).to(self.device))  # (W, N, 2)
            rows = gathered.reshape(-1, 2).cpu()
            rows = rows[rows[:, 0] >= 0]
        means = []
        for k, name in enumerate(self.classes):
            sel = rows[rows[:, 0] == k][:, 1]
            if sel.numel():
                v = float(sel.mean())
                means.append(v)
                self.log(f"val_dice_{name}", v, sync_dist=False)
        if means:
            self.log("val_dice", float(np.mean(means)), prog_bar=True, sync_dist=False)

    # ---------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt: torch.optim.Optimizer
        if self.optimizer_name == "adamw":
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.SGD(
                params,
                lr=self.lr,
                momentum=self.momentum,
                nesterov=self.momentum > 0,
                weight_decay=self.weight_decay,
            )
        total, warm, power = self.total_steps, self.warmup_steps, self.poly_power
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: poly_with_warmup(s, total, warm, power)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def per_class_truth(mask: np.ndarray, task: int, num_classes: int) -> Sequence[tuple[int, Any]]:
    """[(class index, truth (H, W) in {0, 1, 255})] that one image annotates."""
    if task >= 0:
        return [(task, mask)]
    out = []
    for k in range(num_classes):
        truth = np.where(mask == 255, 255, (mask == k + 1).astype(np.uint8))
        if (truth != 255).any():
            out.append((k, truth))
    return out
