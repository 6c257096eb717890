"""StyleGAN2 losses: non-saturating logistic loss, lazy R1, path-length regularisation, style mixing.

- Non-saturating logistic loss (Goodfellow et al. 2014): G minimises softplus(-D(G(z))), D minimises
  softplus(D(G(z))) + softplus(-D(x)).
- R1 (Mescheder et al. 2018): gamma/2 * E[||grad_x D(x)||^2] on (augmented) reals, computed "lazily"
  every ``d_reg_interval`` minibatches and scaled by the interval (StyleGAN2, section 3.1).
- Path-length regularisation (StyleGAN2 eq. 4): E[(||J_w^T y||_2 - a)^2] with y ~ N(0, I) / sqrt(HW)
  and a the running mean of the lengths; lazy like R1, on a smaller batch.
- Style mixing (StyleGAN, section 3.1): with probability 0.9 the ws after a random cut-off come from a
  second latent.

The functions take the raw (unwrapped) networks; the training loop handles autocast and gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from glomssl.datagan.networks import Discriminator, Generator


def sample_ws(
    G: Generator,
    z: torch.Tensor,
    style_mixing_prob: float = 0.9,
    update_w_avg: bool = True,
) -> torch.Tensor:
    """Map z to ws with style mixing: (B, z_dim) -> (B, num_ws, w_dim)."""
    ws = G.mapping(z, update_w_avg=update_w_avg)
    if style_mixing_prob > 0 and G.num_ws > 1:
        cut = int(torch.randint(1, G.num_ws, ()).item())
        if float(torch.rand(())) >= style_mixing_prob:
            cut = G.num_ws
        if cut < G.num_ws:
            ws2 = G.mapping(torch.randn_like(z), update_w_avg=False)
            ws = torch.cat([ws[:, :cut], ws2[:, cut:]], dim=1)
    return ws


def generator_loss(
    G: Generator,
    D: Discriminator,
    augment: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    style_mixing_prob: float = 0.9,
) -> torch.Tensor:
    """Non-saturating G loss, mean over the batch."""
    ws = sample_ws(G, z, style_mixing_prob)
    img = G.synthesis(ws, noise_mode="random")
    logits = D(augment(img))  # (B, 1)
    return F.softplus(-logits).mean()


def discriminator_loss(
    G: Generator,
    D: Discriminator,
    augment: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    real: torch.Tensor,
    r1_gamma: float,
    do_r1: bool,
    reg_interval: int,
    style_mixing_prob: float = 0.9,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """D loss on fakes and reals; adds lazy R1 (scaled by ``reg_interval``) when ``do_r1``.

    Returns (total loss, stats) with stats holding detached ``loss_fake``, ``loss_real``,
    ``r1_penalty`` (mean squared gradient norm, when computed) and the real logits (for ADA).
    """
    with torch.no_grad():
        ws = sample_ws(G, z, style_mixing_prob, update_w_avg=False)
        fake = G.synthesis(ws, noise_mode="random")
    logits_fake = D(augment(fake))
    loss_fake = F.softplus(logits_fake).mean()
    real_in = real.detach().requires_grad_(do_r1 and r1_gamma > 0)
    logits_real = D(augment(real_in))  # (B, 1)
    loss_real = F.softplus(-logits_real).mean()
    total = loss_fake + loss_real
    stats = {
        "loss_fake": loss_fake.detach(),
        "loss_real": loss_real.detach(),
        "real_logits": logits_real.detach(),
    }
    if do_r1 and r1_gamma > 0:
        (grad,) = torch.autograd.grad(logits_real.float().sum(), real_in, create_graph=True)
        penalty = grad.float().square().sum(dim=[1, 2, 3])  # (B,)
        total = total + penalty.mean() * (r1_gamma / 2) * reg_interval
        stats["r1_penalty"] = penalty.mean().detach()
    return total, stats


class PathLengthPenalty:
    """Lazy path-length regulariser (StyleGAN2 eq. 4) with a running mean of the path lengths."""

    def __init__(self, weight: float = 2.0, decay: float = 0.01, batch_shrink: int = 2) -> None:
        self.weight = weight
        self.decay = decay
        self.batch_shrink = batch_shrink
        self.mean = torch.zeros([])

    def __call__(
        self, G: Generator, z: torch.Tensor, reg_interval: int, style_mixing_prob: float = 0.9
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (weighted loss, mean penalty) for a batch of z (shrunk by ``batch_shrink``)."""
        n = max(1, z.shape[0] // self.batch_shrink)
        ws = sample_ws(G, z[:n], style_mixing_prob, update_w_avg=False)
        img = G.synthesis(ws, noise_mode="random")  # (n, C, H, W)
        y = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        (grad,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)
        lengths = grad.float().square().sum(dim=2).mean(dim=1).sqrt()  # (n,)
        self.mean = self.mean.to(lengths.device)
        mean = self.mean.lerp(lengths.detach().mean(), self.decay)
        self.mean = mean.detach()
        penalty = (lengths - mean).square()  # (n,)
        return penalty.mean() * self.weight * reg_interval, penalty.mean().detach()
