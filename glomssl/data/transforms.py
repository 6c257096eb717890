"""Paired image + mask augmentations that draw their randomness once (MONAI's dict-transform idea).

Geometry (flips, 90-degree rotations, random scale and crop) is drawn once per call and applied to the
image and the mask alike, the mask with nearest-neighbour sampling so class ids and :data:`IGNORE`
survive; colour (stain jitter, brightness/contrast) touches the image only. Images are float tensors
(3, H, W) in [0, 1]; masks are int64 tensors (H, W).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from glomssl.config import opt
from glomssl.data.masks import IGNORE


@dataclass
class PairedAugment:
    """Strengths of the paired augmentation (all off at 0; the defaults suit histology patches)."""

    flip: bool = True
    rot90: bool = True
    scale_min: float = opt(0.75, gt=0, le=1)
    scale_max: float = opt(1.33, ge=1, le=4)
    stain_jitter: float = opt(0.05, ge=0, le=1)
    brightness: float = opt(0.1, ge=0, le=1)
    contrast: float = opt(0.1, ge=0, le=1)


# Ruifrok & Johnston (2001) stain vectors (rows: haematoxylin, eosin, DAB) in optical-density space.
RGB_FROM_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32
)
RGB_FROM_HED = RGB_FROM_HED / RGB_FROM_HED.norm(dim=1, keepdim=True)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)


def perturb_stains(
    img: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Scale and shift each stain's optical density (Tellez et al. 2018): (3, H, W) in [0, 1].

    OD = -log(x) -> stains = OD @ HED_FROM_RGB -> stains * alpha + beta -> back to RGB; ``alpha`` = 1 and
    ``beta`` = 0 (shape (3,)) give back the image.
    """
    od = -torch.log(img.clamp(min=eps, max=1.0)).permute(1, 2, 0) @ HED_FROM_RGB.to(
        img
    )  # (H, W, 3)
    rgb = torch.exp(-((od * alpha + beta) @ RGB_FROM_HED.to(img))).permute(2, 0, 1)
    return rgb.clamp(0, 1)


def _stain_jitter(img: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Random per-stain scale and shift of strength ``strength``, drawn from ``g``."""
    alpha = 1 + (torch.rand(3, generator=g) * 2 - 1) * strength
    beta = (torch.rand(3, generator=g) * 2 - 1) * strength
    return perturb_stains(img, alpha, beta)


def paired_augment(
    img: torch.Tensor,
    mask: torch.Tensor,
    size: int,
    spec: PairedAugment,
    g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random draw applied to both: (3, H, W) float, (H, W) long -> (3, S, S), (S, S).

    A crop of side ``size / s`` (s drawn log-uniformly in [scale_min, scale_max]) is taken at a random
    place (padding with IGNORE / white when the image is smaller), resized to ``size``, then flipped
    and rotated; the image alone gets the colour changes.
    """
    _, h, w = img.shape
    lo, hi = math.log(spec.scale_min), math.log(spec.scale_max)
    s = math.exp(lo + (hi - lo) * float(torch.rand((), generator=g)))
    side = max(8, int(round(min(h, w) / s)))
    if h < side or w < side:  # pad to the crop size
        ph, pw = max(0, side - h), max(0, side - w)
        img = F.pad(img, (0, pw, 0, ph), value=1.0)
        mask = F.pad(mask, (0, pw, 0, ph), value=IGNORE)
        h, w = img.shape[1:]
    y0 = int(torch.randint(0, h - side + 1, (), generator=g))
    x0 = int(torch.randint(0, w - side + 1, (), generator=g))
    img = img[:, y0 : y0 + side, x0 : x0 + side]
    mask = mask[y0 : y0 + side, x0 : x0 + side]
    img = F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    mask = F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest-exact")[
        0, 0
    ].long()
    if spec.flip and bool(torch.rand((), generator=g) < 0.5):
        img, mask = img.flip(-1), mask.flip(-1)
    if spec.rot90:
        k = int(torch.randint(0, 4, (), generator=g))
        img, mask = torch.rot90(img, k, (-2, -1)), torch.rot90(mask, k, (-2, -1))
    if spec.stain_jitter > 0:
        img = _stain_jitter(img, spec.stain_jitter, g)
    if spec.brightness > 0 or spec.contrast > 0:
        b = 1 + (float(torch.rand((), generator=g)) * 2 - 1) * spec.brightness
        c = 1 + (float(torch.rand((), generator=g)) * 2 - 1) * spec.contrast
        mean = img.mean()
        img = ((img - mean) * c + mean) * b
    return img.clamp(0, 1).contiguous(), mask.contiguous()


def centre_resize(
    img: torch.Tensor, mask: torch.Tensor | None, size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The deterministic evaluation view: centre square crop, resized to ``size`` (mask: nearest)."""
    _, h, w = img.shape
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    img = img[:, y0 : y0 + s, x0 : x0 + s]
    img = F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    if mask is not None:
        mask = mask[y0 : y0 + s, x0 : x0 + s]
        mask = F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest-exact")[
            0, 0
        ]
        mask = mask.long()
    return img, mask
