"""End-to-end training of the classifier on Lightning: ``finetune`` (pretrained trunk, lower lr) and
``scratch`` (random init), as Glo-In-One's protocols (b) and (c).

The same code runs on a CPU, one GPU or several (DDP; the hardware comes from a
:class:`glomssl.engine.HardwareConfig`). Images are held in memory as uint8 at the training size, with
flips and 90-degree rotations as the only augmentation (histology has no up; colour is diagnostic, so it
is left alone). Each epoch ends with the whole validation part (gathered over ranks): the state of the
epoch with the best validation balanced accuracy (ties: lower validation loss) is kept and restored
after the last epoch, Glo-In-One's model selection.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from glomssl.engine import HardwareConfig
from glomssl.finetune.classifier.loss import FocalLoss
from glomssl.finetune.classifier.metrics import balanced_accuracy, confusion


class ImageSet(torch.utils.data.Dataset):
    """(image float (3,S,S) in [0,1], label, index) from uint8 images held in memory."""

    def __init__(
        self, images: torch.Tensor, labels: np.ndarray, index: np.ndarray, augment: bool
    ) -> None:
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.index = torch.as_tensor(index, dtype=torch.long)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        j = int(self.index[i])
        x = self.images[j].float().div(255)  # (3, S, S)
        if self.augment:
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            x = torch.rot90(x, int(torch.randint(0, 4, ())), dims=(-2, -1))
        return x, self.labels[j], self.index[i]


class ClassifierModule(L.LightningModule):
    """Focal loss, Adam with the trunk at ``lr * backbone_lr_scale``, validation gathered over ranks."""

    def __init__(
        self,
        model: torch.nn.Module,
        loss: FocalLoss,
        lr: float,
        backbone_lr_scale: float,
        weight_decay: float,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.lr = lr
        self.backbone_lr_scale = backbone_lr_scale
        self.weight_decay = weight_decay
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.val_bal = float("nan")
        self.val_loss = float("nan")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, _ = batch  # (B, 3, S, S), (B,), (B,)
        loss = self.loss(self.model(x), y)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, idx = batch
        self._val.append((self.model(x).float(), y, idx))

    def on_validation_epoch_end(self) -> None:
        logits = torch.cat([v[0] for v in self._val])  # (N_rank, C)
        y = torch.cat([v[1] for v in self._val])
        idx = torch.cat([v[2] for v in self._val])
        self._val.clear()
        if self.trainer.world_size > 1:  # DistributedSampler pads: gather, then drop repeats
            gather: Any = self.all_gather
            logits = gather(logits).flatten(0, 1)  # (world * N_rank, C)
            y = gather(y).flatten()
            idx = gather(idx).flatten()
        _, first = np.unique(idx.cpu().numpy(), return_index=True)
        logits, y = logits[first], y[first]
        self.val_loss = float(self.loss(logits, y))
        cm = confusion(y.cpu().numpy(), logits.argmax(1).cpu().numpy(), logits.shape[1])
        self.val_bal = balanced_accuracy(cm)
        self.log("val_balanced_accuracy", self.val_bal, sync_dist=False)
        self.log("val_loss", self.val_loss, sync_dist=False)

    def configure_optimizers(self) -> Any:
        model: Any = self.model
        groups = [
            {"params": list(model.head.parameters()), "lr": self.lr},
            {"params": list(model.trunk.parameters()), "lr": self.lr * self.backbone_lr_scale},
        ]
        return torch.optim.Adam(groups, weight_decay=self.weight_decay)


class BestState(L.Callback):
    """Keep a CPU copy of the weights of the best validation epoch (balanced accuracy, then loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.best: tuple[float, float] | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self.epoch = 0
        self.val_bal = float("nan")

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        score = (pl_module.val_bal, -pl_module.val_loss)
        if self.best is None or score > self.best:
            self.best, self.epoch, self.val_bal = score, int(trainer.current_epoch) + 1, score[0]
            self.state = {
                k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()
            }


def train_network(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    loss: FocalLoss,
    hardware: HardwareConfig,
    out: Path,
    epochs: int,
    lr: float,
    backbone_lr_scale: float,
    weight_decay: float,
    batch_size: int,
    sampler_weights: np.ndarray | None,
    workers: int,
    static: dict[str, Any],
    quiet: bool = True,
) -> tuple[torch.nn.Module, int]:
    """Train ``model`` end to end; returns it with the best validation epoch's weights, and that epoch."""
    from glomssl.engine.trainer import DivergenceGuard, JsonlMetrics, make_trainer

    train_set = ImageSet(images, labels, train_idx, augment=True)
    sampler = None
    if sampler_weights is not None:
        sampler = torch.utils.data.WeightedRandomSampler(
            [float(w) for w in sampler_weights], len(train_idx), replacement=True
        )
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=min(batch_size, len(train_idx)),
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(train_idx) > batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    val_loader = torch.utils.data.DataLoader(
        ImageSet(images, labels, val_idx, augment=False), batch_size=max(batch_size, 64)
    )
    module = ClassifierModule(model, loss, lr, backbone_lr_scale, weight_decay)
    best = BestState()
    trainer = make_trainer(
        hardware,
        out,
        callbacks=[
            JsonlMetrics(out / "metrics.jsonl", log_every=10, batch_size=batch_size, static=static),
            DivergenceGuard("classifier training", "Lower --lr."),
            best,
            # the best epoch is kept in memory; this stops Lightning's default checkpoint files
            L.pytorch.callbacks.ModelCheckpoint(save_top_k=0, save_last=False),
        ],
        max_epochs=epochs,
        quiet=quiet,
    )
    trainer.fit(module, loader, val_loader)
    if best.state is not None:
        model.load_state_dict(best.state)
    return copy.deepcopy(model).cpu().eval(), best.epoch
