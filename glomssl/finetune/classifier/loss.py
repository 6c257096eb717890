"""Focal loss (Lin et al., ICCV 2017), as Glo-In-One trains its GGS classifiers (gamma = 2.5).

For a sample of true class t with predicted probability p_t, the loss is ``-w_t (1 - p_t)^gamma
log p_t``: confident, correct samples are down-weighted so the rare sclerosis types keep their say.
``gamma = 0`` is plain cross-entropy; class weights ``w`` (e.g. inverse class frequency) enter as in
``torch.nn.functional.cross_entropy``, including its normalisation by the summed weights, so that
``focal_loss(gamma=0, weight=w) == cross_entropy(weight=w)`` exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.5,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean focal loss of ``logits`` (B, C) against class ids ``target`` (B,)."""
    logp = torch.log_softmax(logits.float(), dim=1)  # (B, C)
    logp_t = logp.gather(1, target.view(-1, 1)).squeeze(1)  # (B,)
    loss = -logp_t
    if gamma:
        loss = loss * (1.0 - logp_t.exp()).clamp(min=0.0).pow(gamma)
    if weight is None:
        return loss.mean()
    w = weight.to(loss)[target]  # (B,)
    return (loss * w).sum() / w.sum().clamp(min=1e-12)


class FocalLoss(nn.Module):
    """:func:`focal_loss` as a module (class weights kept as a buffer, moved with the model)."""

    weight: torch.Tensor | None

    def __init__(self, gamma: float = 2.5, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = float(gamma)
        self.register_buffer("weight", None if weight is None else weight.float())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, self.gamma, self.weight)


def balanced_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights (mean 1 over present classes): n / (C * n_c)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(num_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(w, dtype=torch.float32)
