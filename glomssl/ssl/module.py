"""The Lightning module of ``glomssl pretrain`` and the export of its encoder.

:class:`SSLModule` wraps one method of :mod:`glomssl.ssl.methods`: it normalises the two views, steps the
method's loss, and schedules the learning rate (linear warm-up, then cosine decay over the whole run,
SimSiam's recipe: SGD with momentum, lr = base_lr x effective batch / 256).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch

from glomssl.errors import GlomsslError
from glomssl.models.backbones import IMAGENET_MEAN, IMAGENET_STD

#: Batches in a row with fewer than two images that decode before a run stops: such a batch is no
#: step, so images that pass the start-up header check but never decode would loop forever.
MAX_EMPTY_BATCHES = 100


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """The lr factor at ``step``: linear from 1/warmup to 1 over ``warmup`` steps, then cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


class SSLModule(L.LightningModule):
    """One self-supervised method behind Lightning.

    ``method_kw`` goes to :func:`glomssl.ssl.methods.create_method`; ``lr`` is the already scaled
    learning rate; ``total_steps`` sets the cosine's length.
    """

    def __init__(
        self,
        method: str,
        arch: str,
        lr: float,
        momentum: float,
        weight_decay: float,
        warmup_steps: int,
        total_steps: int,
        frozen_bn: bool = False,
        **method_kw: Any,
    ) -> None:
        super().__init__()
        from glomssl.ssl.methods import create_method

        self.method = create_method(method, arch, frozen_bn=frozen_bn, **method_kw)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.total_steps = max(1, total_steps)
        self.empty_batches = 0

    mean: torch.Tensor
    std: torch.Tensor

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        from glomssl.ssl.simsiam import embedding_std

        if batch is None:  # every image of this batch failed to decode
            return None
        x0, x1 = ((v - self.mean) / self.std for v in batch)  # (B, 3, S, S) each
        method: Any = self.method
        out = method.training_loss(x0, x1)
        bs = x0.shape[0]
        self.log("loss", out["loss"], prog_bar=True, batch_size=bs, sync_dist=False)
        self.log("emb_std", embedding_std(out["emb"]), batch_size=bs)
        for k, v in out.items():
            if k not in ("loss", "emb"):
                self.log(k, v.detach(), batch_size=bs)
        return out["loss"]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Lightning skips training_step for a None batch (fewer than two images decoded) but still
        # calls this hook: count such batches here, or a run whose images never decode never ends.
        self.empty_batches = self.empty_batches + 1 if batch is None else 0
        if self.empty_batches >= MAX_EMPTY_BATCHES:
            raise GlomsslError(
                f"pretraining stopped: {self.empty_batches} batches in a row held fewer than two "
                "images that decode (files that open but are truncated or damaged); replace or "
                "remove them from --data"
            )
        method: Any = self.method
        method.on_train_step(self.global_step, self.total_steps)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.method.parameters() if p.requires_grad]
        opt = torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        total, warm = self.total_steps, self.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: cosine_with_warmup(step, total, warm)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def export_backbone(module: SSLModule, cfg: Any, out: Path, step: int) -> Path:
    """Write ``backbone.safetensors`` + ``backbone.json`` (and the regcon decoder) into ``out``.

    Refuses (one-line error) when a weight is NaN or infinite: a diverged run never exports.
    """
    from glomssl.engine.trainer import check_finite_state
    from glomssl.runs import save_weights

    method: Any = module.method
    check_finite_state(method, f"the {cfg.method} encoder")
    meta = {
        "arch": cfg.arch,
        "method": cfg.method,
        "image_size": cfg.image_size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "feature_dim": method.backbone.feature_dim,
        "step": int(step),
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
    }
    trunk = method.backbone.trunk_state_dict()
    path = save_weights(out / "backbone.safetensors", trunk, meta, kind="ssl-backbone")
    decoder = getattr(method, "decoder", None)
    if decoder is not None:
        part = {**meta, "part": "decoder"}
        save_weights(out / "decoder.safetensors", decoder.state_dict(), part, kind="ssl-decoder")
    return path
