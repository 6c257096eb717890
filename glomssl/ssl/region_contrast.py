"""Region-level contrastive pretraining of an encoder-decoder (USRegCon, Nan Fang Yi Ke Da Xue Xue Bao
2023; ../shared/papers/004): the decoder's features divide each image into K regions by semantic
similarity, region pooling gives per-region grey-level and semantic vectors, and two losses train the
whole encoder-decoder without labels.

Our reading of the (abstract-level) description, step by step, for a view x (B, 3, H, W):

1. Encode (ResNet trunk) and decode (U-Net decoder with skips) to pixel features F (B, D, h, w).
2. Soft region assignment A (B, K, h, w) = softmax_k(cos(F, P_k) / tau_a) against K learnt region
   prototypes P (K, D). Pixels that look alike fall into the same region; A is returned for inspection.
3. Region pooling: mass m_k = sum A_k, grey-level mean g_k = sum A_k G / m_k and variance
   v_k = sum A_k (G - g_k)^2 / m_k of the grey image G, semantic vector s_k = sum A_k F / m_k.
4. Grey-level loss: mean_k v_k (each region uniform inside) + mean_{k != l} exp(-(g_k - g_l)^2 / 2 sigma^2)
   (regions mutually distinct in grey level).
5. Semantic loss: InfoNCE between the projected s_k of view 1 and view 2 of the same image: region k
   of view 2 is the positive, the other regions of that image the negatives (temperature tau). With
   ``negatives="batch"`` (the default) every region of every other image in the batch is a negative
   too: with the K regions of one image alone the task is too easy (the loss fell to ~0.04 within 40
   steps on real crops), and the encoder stops learning from it.
6. A usage-balance term KL(uniform || mean_k usage) keeps all K regions alive; this is our addition (the
   paper does not describe how empty regions are avoided).

Regions are matched between views by prototype index, so the views may differ in crop and geometry.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from glomssl.models.backbones import ResNetTrunk
from glomssl.models.unet import UNetDecoder


class RegionContrast(nn.Module):
    """Encoder + U-Net decoder + K region prototypes + projection head; see the module docstring."""

    def __init__(
        self,
        backbone: ResNetTrunk,
        regions: int = 8,
        proj_dim: int = 128,
        temperature: float = 0.2,
        assign_temperature: float = 0.1,
        grey_weight: float = 1.0,
        grey_sigma: float = 0.5,
        balance_weight: float = 1.0,
        negatives: str = "batch",
    ) -> None:
        super().__init__()
        if regions < 2:
            raise ValueError("regcon needs at least 2 regions")
        if negatives not in ("batch", "image"):
            raise ValueError(f"negatives must be 'batch' or 'image', got {negatives!r}")
        self.negatives = negatives
        self.backbone = backbone
        self.decoder = UNetDecoder(backbone.arch)
        d = self.decoder.out_dim
        self.prototypes = nn.Parameter(torch.randn(regions, d))
        self.projection = nn.Sequential(
            nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, proj_dim)
        )
        self.k = regions
        self.tau = temperature
        self.tau_a = assign_temperature
        self.grey_weight = grey_weight
        self.grey_sigma = grey_sigma
        self.balance_weight = balance_weight
        self.out_dim = proj_dim

    def assign(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> pixel features (B, D, h, w) and soft region assignment (B, K, h, w)."""
        feats = self.decoder(self.backbone.stages(x))  # (B, D, h, w)
        fn = F.normalize(feats, dim=1)
        pn = F.normalize(self.prototypes, dim=1)  # (K, D)
        logits = torch.einsum("bdhw,kd->bkhw", fn, pn) / self.tau_a  # (B, K, h, w)
        return feats, logits.softmax(dim=1)

    def _pool(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats, a = self.assign(x)
        grey = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
        grey = F.adaptive_avg_pool2d(grey, (a.shape[-2], a.shape[-1]))  # (B, 1, h, w)
        mass = a.sum(dim=(2, 3)) + 1e-6  # (B, K)
        g_mean = (a * grey).sum(dim=(2, 3)) / mass  # (B, K)
        g_var = (a * (grey - g_mean[..., None, None]) ** 2).sum(dim=(2, 3)) / mass  # (B, K)
        sem = torch.einsum("bkhw,bdhw->bkd", a, feats) / mass[..., None]  # (B, K, D)
        usage = mass / mass.sum(dim=1, keepdim=True)  # (B, K)
        return {"g_mean": g_mean, "g_var": g_var, "sem": sem, "usage": usage}

    def grey_loss(self, r: dict[str, torch.Tensor]) -> torch.Tensor:
        """Uniform inside (weighted variance) + distinct between regions (Gaussian similarity)."""
        inside = (r["usage"] * r["g_var"]).sum(dim=1).mean()
        d2 = (r["g_mean"][:, :, None] - r["g_mean"][:, None, :]) ** 2  # (B, K, K)
        sim = torch.exp(-d2 / (2 * self.grey_sigma**2))
        off = ~torch.eye(self.k, dtype=torch.bool, device=sim.device)
        pair_w = (r["usage"][:, :, None] * r["usage"][:, None, :])[:, off]  # (B, K(K-1))
        between = (sim[:, off] * pair_w).sum(dim=1) / pair_w.sum(dim=1).clamp(min=1e-6)
        return inside + between.mean()

    def semantic_loss(
        self, r0: dict[str, torch.Tensor], r1: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """InfoNCE over regions: region k of view 1 vs the regions of view 2 (same image, or batch)."""
        z0 = F.normalize(self.projection(r0["sem"]), dim=-1)  # (B, K, P)
        z1 = F.normalize(self.projection(r1["sem"]), dim=-1)  # (B, K, P)
        w = (r0["usage"] * r1["usage"]).detach()  # regions present in both views count most
        if self.negatives == "batch":
            a, b = z0.flatten(0, 1), z1.flatten(0, 1)  # (B*K, P): all regions of all images
            logits = a @ b.T / self.tau
            target = torch.arange(a.shape[0], device=a.device)
            ce2 = F.cross_entropy(logits, target, reduction="none")
            ce2 = 0.5 * (ce2 + F.cross_entropy(logits.T, target, reduction="none"))
            wf = w.flatten() / w.sum().clamp(min=1e-6)
            return (ce2 * wf).sum()
        logits = torch.einsum("bkp,blp->bkl", z0, z1) / self.tau  # (B, K, K)
        target = torch.arange(self.k, device=logits.device).expand(logits.shape[0], -1)  # (B, K)
        w = w / w.sum(dim=1, keepdim=True).clamp(min=1e-6)
        ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, K)
        ce_t = F.cross_entropy(logits, target, reduction="none")  # symmetric direction
        return (0.5 * (ce + ce_t) * w).sum(dim=1).mean()

    def balance_loss(self, r: dict[str, torch.Tensor]) -> torch.Tensor:
        """KL(uniform || batch-mean region usage): zero when all K regions are used equally."""
        mean_use = r["usage"].mean(dim=0).clamp(min=1e-8)  # (K,)
        return (
            torch.log(torch.tensor(1.0 / self.k, device=mean_use.device)) - mean_use.log()
        ).mean()

    def training_loss(self, x0: torch.Tensor, x1: torch.Tensor) -> dict[str, torch.Tensor]:
        r0, r1 = self._pool(x0), self._pool(x1)
        grey = 0.5 * (self.grey_loss(r0) + self.grey_loss(r1))
        sem = self.semantic_loss(r0, r1)
        bal = 0.5 * (self.balance_loss(r0) + self.balance_loss(r1))
        loss = sem + self.grey_weight * grey + self.balance_weight * bal
        emb = r0["sem"].mean(dim=1)  # (B, D) usage-weighted image summary for the collapse monitor
        return {
            "loss": loss,
            "emb": emb.detach(),
            "grey_loss": grey.detach(),
            "semantic_loss": sem.detach(),
            "balance_loss": bal.detach(),
        }

    def on_train_step(self, step: int, max_steps: int) -> None:
        """No momentum encoder."""
