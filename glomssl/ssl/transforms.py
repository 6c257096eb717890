"""Augmentations for self-supervised pretraining on histology.

Histology has no canonical orientation, so flips and 90-degree rotations are free invariances. Colour
is different: the stain carries much of the diagnostic signal (a sclerosed glomerulus is a homogeneous
PAS-positive mass), so the stock SimSiam recipe (colour jitter 0.4/0.4/0.4/0.1 at p=0.8 and greyscale at
p=0.2, He et al. / Chen & He 2021) teaches the encoder to discard exactly that cue. :class:`AugmentSpec`
exposes every strength; ``stain_jitter`` perturbs the optical density in haematoxylin-eosin-DAB space
(Tellez et al., 2018) - a stain-shaped variation that keeps the stain's identity.

All transforms work on float tensors (3, H, W) in [0, 1]; normalisation happens inside the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from glomssl.config import opt
from glomssl.data.transforms import perturb_stains


@dataclass
class AugmentSpec:
    """Strengths of the two-view augmentation; the defaults are the recipe that won on real data."""

    image_size: int = opt(224, ge=16)
    crop_min_scale: float = opt(0.4, gt=0, le=1)
    flip: bool = True
    rot90: bool = True
    brightness: float = opt(0.1, ge=0, le=1)
    contrast: float = opt(0.1, ge=0, le=1)
    saturation: float = opt(0.1, ge=0, le=1)
    hue: float = opt(0.0, ge=0, le=0.5)
    jitter_p: float = opt(0.8, ge=0, le=1)
    gray_p: float = opt(0.0, ge=0, le=1)
    blur_p: float = opt(0.2, ge=0, le=1)
    stain_jitter: float = opt(0.05, ge=0, le=1)


class RandomRot90(nn.Module):
    """Rotate by a random multiple of 90 degrees (histology has no 'up')."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., H, W)
        k = int(torch.randint(0, 4, (1,)))
        return torch.rot90(x, k, dims=(-2, -1))


class StainJitter(nn.Module):
    """Random per-stain scale and shift of optical density in HED space (Tellez et al., 2018).

    ``x`` (3, H, W) in [0, 1] -> OD = -log(x) -> stains = OD @ HED_FROM_RGB -> s * (1 + a) + b with
    a, b ~ U(-sigma, sigma) per stain -> back to RGB. ``sigma=0`` is the identity.
    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = float(sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sigma <= 0:
            return x
        alpha = 1 + (torch.rand(3, device=x.device) * 2 - 1) * self.sigma
        beta = (torch.rand(3, device=x.device) * 2 - 1) * self.sigma
        return perturb_stains(x, alpha, beta, eps=1e-3)


def view_transform(spec: AugmentSpec) -> nn.Module:
    """One random view: crop, flips/rot90, stain and colour jitter, grey, blur; (3,H,W) -> (3,S,S)."""
    from torchvision.transforms import v2

    steps: list[nn.Module] = [
        v2.RandomResizedCrop(spec.image_size, scale=(spec.crop_min_scale, 1.0), antialias=True)
    ]
    if spec.flip:
        steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if spec.rot90:
        steps.append(RandomRot90())
    if spec.stain_jitter > 0:
        steps.append(StainJitter(spec.stain_jitter))
    if spec.jitter_p > 0 and max(spec.brightness, spec.contrast, spec.saturation, spec.hue) > 0:
        jitter = v2.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)
        steps.append(v2.RandomApply([jitter], p=spec.jitter_p))
    if spec.gray_p > 0:
        steps.append(v2.RandomGrayscale(p=spec.gray_p))
    if spec.blur_p > 0:
        k = max(3, (spec.image_size // 10) | 1)  # odd kernel ~10% of the image, as in SimCLR
        steps.append(v2.RandomApply([v2.GaussianBlur(k, sigma=(0.1, 2.0))], p=spec.blur_p))
    return v2.Compose(steps)


class TwoViews:
    """Callable: one image tensor (3, H, W) -> two independently augmented views (3, S, S) each."""

    def __init__(self, spec: AugmentSpec) -> None:
        self.spec = spec
        self.view = view_transform(spec)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view(x), self.view(x)


def eval_transform(image_size: int) -> nn.Module:
    """Deterministic resize for embedding: (3, H, W) -> (3, S, S)."""
    from torchvision.transforms import v2

    return v2.Resize((image_size, image_size), antialias=True)
