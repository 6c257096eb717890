"""Losses for partially labelled masks (Glo-In-One v2, ../shared/papers/000).

A batch's masks arrive as (B, H, W) with a task per image: ``task >= 0`` means the mask annotates that
class only (values 0, 1, or 255 = not annotated); ``task = -1`` means a label map of every class (ids
0..K, 255). :func:`expand_targets` turns them into per-class targets (B, K, H, W) where every class an
image does not annotate is entirely 255, so :func:`partial_bce_dice` never trains a head on a class
its image says nothing about. GIO2's loss: binary cross-entropy + soft Dice, with a weight (1.2) on a
2-pixel ring just outside each mask, where the boundary errors are.

The ``multiclass`` baseline cannot express "not annotated": :func:`naive_multiclass_targets` marks the
annotated class and calls every other pixel background, which is exactly its weakness on partial labels.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from glomssl.data.masks import IGNORE


def expand_targets(mask: torch.Tensor, task: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) masks + (B,) tasks -> (B, K, H, W) long targets in {0, 1, 255}."""
    b, h, w = mask.shape
    out = torch.full((b, num_classes, h, w), IGNORE, dtype=torch.long, device=mask.device)
    for i in range(b):
        t = int(task[i])
        if t >= 0:
            out[i, t] = mask[i]
        else:  # label map: class k is id k + 1
            m = mask[i]
            for k in range(num_classes):
                out[i, k] = torch.where(m == IGNORE, IGNORE, (m == k + 1).long())
    return out


def ring_weights(target: torch.Tensor, px: int = 2, weight: float = 1.2) -> torch.Tensor:
    """(B, C, H, W) targets -> weights: ``weight`` on the ``px``-pixel ring just outside the mask."""
    fg = (target == 1).float()
    if px <= 0 or weight == 1.0:
        return torch.ones_like(fg)
    grown = F.max_pool2d(fg, kernel_size=2 * px + 1, stride=1, padding=px)  # dilation
    ring = (grown > 0) & (fg == 0)
    return torch.where(ring, torch.full_like(fg, weight), torch.ones_like(fg))


def partial_bce_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    ring_weight: float = 1.2,
    ring_px: int = 2,
) -> dict[str, torch.Tensor]:
    """BCE + soft Dice over annotated pixels only: ``logits`` and ``target`` are (B, C, H, W).

    Pixels equal to 255 add nothing; an (image, class) with no annotated pixel adds nothing to the
    Dice term. Returns {"loss", "bce", "dice"} (the parts detached).
    """
    valid = target != IGNORE  # (B, C, H, W)
    t = torch.where(valid, target, torch.zeros_like(target)).float()
    if not bool(valid.any()):
        zero = logits.sum() * 0.0
        return {"loss": zero, "bce": zero.detach(), "dice": zero.detach()}
    w = ring_weights(torch.where(valid, target, torch.zeros_like(target)), ring_px, ring_weight)
    w = w * valid.float()
    bce = F.binary_cross_entropy_with_logits(logits, t, weight=w, reduction="sum") / w.sum()
    p = torch.sigmoid(logits) * valid.float()
    inter = (p * t).sum(dim=(2, 3))  # (B, C)
    denom = p.sum(dim=(2, 3)) + t.sum(dim=(2, 3))
    annotated = valid.any(dim=(2, 3))  # (B, C)
    dice = 1 - (2 * inter + 1) / (denom + 1)
    dice_l = dice[annotated].mean()
    loss = bce_weight * bce + dice_weight * dice_l
    return {"loss": loss, "bce": bce.detach(), "dice": dice_l.detach()}


def naive_multiclass_targets(mask: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
    """(B, H, W) + (B,) -> (B, H, W) ids for a softmax over background + K classes.

    A task mask's foreground becomes class ``task + 1`` and everything else background (0): the
    multi-class network is told that the other classes are absent, true or not. 255 stays ignored.
    """
    out = mask.clone()
    for i in range(mask.shape[0]):
        t = int(task[i])
        if t >= 0:
            m = mask[i]
            out[i] = torch.where(m == IGNORE, IGNORE, torch.where(m == 1, t + 1, 0))
    return out


def multiclass_loss(
    logits: torch.Tensor, label: torch.Tensor, dice_weight: float = 1.0
) -> dict[str, torch.Tensor]:
    """Cross-entropy (255 ignored) + soft Dice over the K foreground classes: (B, K+1, H, W), (B, H, W)."""
    ce = F.cross_entropy(logits, label, ignore_index=IGNORE)
    valid = (label != IGNORE).float()[:, None]  # (B, 1, H, W)
    p = torch.softmax(logits, dim=1)[:, 1:] * valid  # (B, K, H, W)
    onehot = F.one_hot(label.clamp(max=logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2)
    t = onehot[:, 1:].float() * valid
    dice = 1 - (2 * (p * t).sum(dim=(2, 3)) + 1) / (p.sum(dim=(2, 3)) + t.sum(dim=(2, 3)) + 1)
    d = dice.mean()
    return {"loss": ce + dice_weight * d, "bce": ce.detach(), "dice": d.detach()}
