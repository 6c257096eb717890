"""Registry of self-supervised methods, all behind ``--method`` in the same harness.

Every method is an ``nn.Module`` with ``backbone`` (a :class:`ResNetTrunk`), ``training_loss(x0, x1)``
returning ``{"loss", "emb"}`` for two normalised views (B, 3, H, W), and ``on_train_step(step,
max_steps)`` for momentum updates. The image-level methods besides SimSiam are thin compositions of
lightly's heads and losses (BYOL, Barlow Twins, VICReg); ``regcon`` is the region-level
encoder-decoder of :mod:`glomssl.ssl.region_contrast`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from glomssl.errors import GlomsslError
from glomssl.models.backbones import ResNetTrunk, create_backbone


class BYOL(nn.Module):
    """BYOL (Grill et al., 2020): online net predicts a momentum target's projection of the other view.

    The target's momentum follows the paper's cosine schedule from 0.99 to 1.0.
    """

    def __init__(self, backbone: ResNetTrunk, proj_dim: int = 256, hidden: int = 4096) -> None:
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

        self.backbone = backbone
        self.projection = BYOLProjectionHead(backbone.feature_dim, hidden, proj_dim)
        self.prediction = BYOLPredictionHead(proj_dim, hidden, proj_dim)
        self.backbone_m = copy.deepcopy(backbone).requires_grad_(False)
        self.projection_m = copy.deepcopy(self.projection).requires_grad_(False)
        self.criterion = NegativeCosineSimilarity()
        self.out_dim = proj_dim

    def _online(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.projection(self.backbone(x))  # (B, proj_dim)
        return z, self.prediction(z)

    @torch.no_grad()
    def _target(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_m(self.backbone_m(x))  # (B, proj_dim)

    def training_loss(self, x0: torch.Tensor, x1: torch.Tensor) -> dict[str, torch.Tensor]:
        z0, p0 = self._online(x0)
        _, p1 = self._online(x1)
        t0, t1 = self._target(x0), self._target(x1)
        loss = 0.5 * (self.criterion(p0, t1) + self.criterion(p1, t0))
        return {"loss": loss, "emb": z0.detach()}

    @torch.no_grad()
    def on_train_step(self, step: int, max_steps: int) -> None:
        from lightly.models.utils import update_momentum

        m = 1.0 - (1.0 - 0.99) * (math.cos(math.pi * step / max(1, max_steps)) + 1) / 2
        update_momentum(self.backbone, self.backbone_m, m)
        update_momentum(self.projection, self.projection_m, m)


class _TwinLoss(nn.Module):
    """Shared body of Barlow Twins and VICReg: projection of both views + a symmetric loss."""

    def __init__(
        self, backbone: ResNetTrunk, projection: nn.Module, criterion: nn.Module, dim: int
    ):
        super().__init__()
        self.backbone = backbone
        self.projection = projection
        self.criterion = criterion
        self.out_dim = dim

    def training_loss(self, x0: torch.Tensor, x1: torch.Tensor) -> dict[str, torch.Tensor]:
        z0 = self.projection(self.backbone(x0))  # (B, dim)
        z1 = self.projection(self.backbone(x1))  # (B, dim)
        return {"loss": self.criterion(z0, z1), "emb": z0.detach()}

    def on_train_step(self, step: int, max_steps: int) -> None:
        """No momentum encoder."""


def _barlow(backbone: ResNetTrunk, proj_dim: int = 2048, **_: Any) -> nn.Module:
    """Barlow Twins (Zbontar et al., 2021): cross-correlation of the two views driven to identity."""
    from lightly.loss import BarlowTwinsLoss
    from lightly.models.modules import BarlowTwinsProjectionHead

    head = BarlowTwinsProjectionHead(backbone.feature_dim, proj_dim, proj_dim)
    return _TwinLoss(backbone, head, BarlowTwinsLoss(gather_distributed=True), proj_dim)


def _vicreg(backbone: ResNetTrunk, proj_dim: int = 2048, **_: Any) -> nn.Module:
    """VICReg (Bardes et al., 2022): invariance + variance + covariance terms."""
    from lightly.loss import VICRegLoss
    from lightly.models.modules.heads import VICRegProjectionHead

    head = VICRegProjectionHead(backbone.feature_dim, proj_dim, proj_dim)
    return _TwinLoss(backbone, head, VICRegLoss(gather_distributed=True), proj_dim)


def _simsiam(
    backbone: ResNetTrunk, proj_dim: int = 2048, pred_hidden: int = 512, **_: Any
) -> nn.Module:
    from glomssl.ssl.simsiam import SimSiam

    return SimSiam(backbone, proj_dim=proj_dim, pred_hidden=pred_hidden)


def _byol(backbone: ResNetTrunk, proj_dim: int = 256, **_: Any) -> nn.Module:
    return BYOL(backbone, proj_dim=proj_dim, hidden=max(4 * proj_dim, 1024))


def _regcon(backbone: ResNetTrunk, proj_dim: int = 128, **kw: Any) -> nn.Module:
    from glomssl.ssl.region_contrast import RegionContrast

    keep = {
        k: v for k, v in kw.items() if k in ("regions", "temperature", "grey_weight", "negatives")
    }
    return RegionContrast(backbone, proj_dim=proj_dim, **keep)


METHODS: dict[str, Callable[..., nn.Module]] = {
    "simsiam": _simsiam,
    "regcon": _regcon,
    "byol": _byol,
    "barlowtwins": _barlow,
    "vicreg": _vicreg,
}


def create_method(name: str, arch: str, frozen_bn: bool = False, **kw: Any) -> nn.Module:
    """Build method ``name`` around a fresh randomly initialised ``arch`` trunk."""
    if name not in METHODS:
        raise GlomsslError(f"unknown --method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name](create_backbone(arch, frozen_bn=frozen_bn), **kw)
