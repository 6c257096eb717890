"""SimSiam (Chen & He, CVPR 2021) from lightly's building blocks.

Two views x1, x2 of an image pass through the encoder f (backbone + projection MLP) and the predictor h.
The loss is the symmetrised negative cosine similarity with a stop-gradient on the target branch
(paper Eq. 3-4): L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2, with D(p, z) = -cos(p, z). Without the
stop-gradient the representation collapses; the per-dimension std of the L2-normalised z (paper
Fig. 2, ~1/sqrt(d) when healthy, 0 when collapsed) is returned as a monitor.
"""

from __future__ import annotations

import torch
from torch import nn

from glomssl.models.backbones import ResNetTrunk


def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the batch std of L2-normalised embeddings (B, D) -> scalar.

    SimSiam's collapse monitor: ~1/sqrt(D) for well-spread embeddings, 0 when all images map to one
    point. Under DDP this is computed on the local batch.
    """
    zn = nn.functional.normalize(z.detach().float(), dim=1)
    return zn.std(dim=0).mean()


class SimSiam(nn.Module):
    """Backbone + SimSiam projection (3-layer MLP, BN on every layer) + prediction (2-layer MLP).

    ``proj_dim`` is the paper's 2048 and ``pred_hidden`` its 512-d bottleneck by default.
    """

    def __init__(self, backbone: ResNetTrunk, proj_dim: int = 2048, pred_hidden: int = 512) -> None:
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

        self.backbone = backbone
        self.projection = SimSiamProjectionHead(backbone.feature_dim, proj_dim, proj_dim)
        self.prediction = SimSiamPredictionHead(proj_dim, pred_hidden, proj_dim)
        self.criterion = NegativeCosineSimilarity()
        self.out_dim = proj_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) normalised -> (z, p), both (B, proj_dim); z is detached (stop-gradient)."""
        z = self.projection(self.backbone(x))  # (B, proj_dim)
        p = self.prediction(z)  # (B, proj_dim)
        return z.detach(), p

    def training_loss(self, x0: torch.Tensor, x1: torch.Tensor) -> dict[str, torch.Tensor]:
        """Symmetrised negative cosine loss of two views; ``emb`` is z of the first view."""
        z0, p0 = self(x0)
        z1, p1 = self(x1)
        loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        return {"loss": loss, "emb": z0}

    def on_train_step(self, step: int, max_steps: int) -> None:
        """SimSiam has no momentum encoder; nothing to update."""
