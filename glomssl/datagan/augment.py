"""Adaptive discriminator augmentation (ADA; Karras et al., NeurIPS 2020).

Every image the discriminator sees (real or generated) passes through the same differentiable
pipeline, so D never sees un-augmented data and the augmentations do not "leak" into the generator
as long as the probability ``p`` of each transform stays below ~0.8 (ADA, section 2).

Pipeline (ADA's "bgc" set, in the paper's order), each transform applied independently per image
with probability ``p``:

- geometric (composed into one 3x3 matrix per image, applied once by bilinear resampling with
  reflection padding): x-flip, 90-degree rotations, integer translation (up to 1/8 of the image),
  isotropic scaling (log-normal, sigma 0.2 ln 2), arbitrary rotation (applied before and after the
  anisotropic scaling, each with probability 1 - sqrt(1 - p) so that the total is p), anisotropic
  scaling, fractional translation (normal, sigma 1/8 of the image);
- colour (composed into one 4x4 affine colour matrix): brightness (+N(0, 0.2)), contrast
  (log-normal, sigma 0.5 ln 2), luma flip (Householder reflection about the luma axis), hue rotation
  (uniform about the luma axis), saturation (log-normal, sigma ln 2 away from the luma axis).

The heuristic r_t = E[sign(D(real))] measures discriminator over-fitting; every ``interval`` minibatches
``p`` moves by sign(r_t - target) * (images seen) / (ada_kimg * 1000) (ADA eq. 1 and section 2.2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

AUG_MODES = ("ada", "noaug", "fixed")


def _eye(n: int, b: int, device: torch.device) -> torch.Tensor:
    return torch.eye(n, device=device).repeat(b, 1, 1)  # (B, n, n)


def _translate(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(3, tx.shape[0], tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _scale(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(3, sx.shape[0], sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate(theta: torch.Tensor) -> torch.Tensor:
    m = _eye(3, theta.shape[0], theta.device)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _translate3(t: torch.Tensor) -> torch.Tensor:
    m = _eye(4, t.shape[0], t.device)
    m[:, :3, 3] = t[:, None].expand(-1, 3)
    return m


def _scale3(s: torch.Tensor) -> torch.Tensor:
    m = _eye(4, s.shape[0], s.device)
    for i in range(3):
        m[:, i, i] = s
    return m


def _rotate3(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by theta (B,) about a unit axis (3,) (Rodrigues), as (B, 4, 4)."""
    x, y, z = axis
    c, s = torch.cos(theta), torch.sin(theta)
    cc = 1 - c
    m = _eye(4, theta.shape[0], theta.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = x * x * cc + c, x * y * cc - z * s, x * z * cc + y * s
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = y * x * cc + z * s, y * y * cc + c, y * z * cc - x * s
    m[:, 2, 0], m[:, 2, 1], m[:, 2, 2] = z * x * cc - y * s, z * y * cc + x * s, z * z * cc + c
    return m


class AugmentPipe(nn.Module):
    """Differentiable ADA pipeline for images in [-1, 1], shape (B, C, H, W), C = 3 (or 1).

    ``p`` is a buffer (saved in snapshots). Multipliers of 1 for every transform, as in ADA's "bgc".
    """

    p: torch.Tensor

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))

    def _gate(self, b: int, prob: float | torch.Tensor, device: torch.device) -> torch.Tensor:
        return (torch.rand(b, device=device) < prob).float()  # (B,) 1 = apply

    def geometric_matrix(self, b: int, size: int, device: torch.device) -> torch.Tensor:
        """(B, 3, 3) random matrices in normalised [-1, 1] coordinates, mapping output -> input."""
        p = float(self.p)
        m = _eye(3, b, device)
        # x-flip
        flip = torch.randint(0, 2, (b,), device=device).float() * self._gate(b, p, device)
        m = m @ _scale(1 - 2 * flip, torch.ones(b, device=device))
        # 90-degree rotations
        k = torch.randint(0, 4, (b,), device=device).float() * self._gate(b, p, device)
        m = m @ _rotate(k * (math.pi / 2))
        # integer translation, up to 1/8 of the image, rounded to whole pixels
        t = (torch.rand(b, 2, device=device) * 2 - 1) * 0.125 * self._gate(b, p, device)[:, None]
        t = torch.round(t * size) * 2 / size  # pixels -> normalised units (image spans 2)
        m = m @ _translate(t[:, 0], t[:, 1])
        # isotropic scaling
        s = torch.exp2(torch.randn(b, device=device) * 0.2 * self._gate(b, p, device))
        m = m @ _scale(s, s)
        p_rot = 1 - math.sqrt(max(0.0, 1 - p))
        # pre-rotation
        th = (torch.rand(b, device=device) * 2 - 1) * math.pi * self._gate(b, p_rot, device)
        m = m @ _rotate(-th)
        # anisotropic scaling
        a = torch.exp2(torch.randn(b, device=device) * 0.2 * self._gate(b, p, device))
        m = m @ _scale(a, 1 / a)
        # post-rotation
        th = (torch.rand(b, device=device) * 2 - 1) * math.pi * self._gate(b, p_rot, device)
        m = m @ _rotate(-th)
        # fractional translation, sigma 1/8 of the image
        t = torch.randn(b, 2, device=device) * 0.125 * 2 * self._gate(b, p, device)[:, None]
        m = m @ _translate(t[:, 0], t[:, 1])
        return m

    def color_matrix(self, b: int, device: torch.device) -> torch.Tensor:
        """(B, 4, 4) random affine colour transforms acting on homogeneous RGB in [-1, 1]."""
        p = float(self.p)
        c = _eye(4, b, device)
        luma = torch.tensor([1.0, 1.0, 1.0], device=device) / math.sqrt(3)
        c = _translate3(torch.randn(b, device=device) * 0.2 * self._gate(b, p, device)) @ c
        c = _scale3(torch.exp2(torch.randn(b, device=device) * 0.5 * self._gate(b, p, device))) @ c
        # luma flip: I - 2 v v^T on the rgb part (Householder about the luma axis)
        lf = torch.randint(0, 2, (b,), device=device).float() * self._gate(b, p, device)
        hh = _eye(4, b, device)
        hh[:, :3, :3] -= 2 * lf[:, None, None] * torch.outer(luma, luma)[None]
        c = hh @ c
        # hue rotation about the luma axis
        th = (torch.rand(b, device=device) * 2 - 1) * math.pi * self._gate(b, p, device)
        c = _rotate3(luma, th) @ c
        # saturation: scale the component orthogonal to the luma axis
        s = torch.exp2(torch.randn(b, device=device) * 1.0 * self._gate(b, p, device))
        vv = torch.outer(luma, luma)[None]  # (1, 3, 3)
        sat = _eye(4, b, device)
        sat[:, :3, :3] = vv + (torch.eye(3, device=device)[None] - vv) * s[:, None, None]
        c = sat @ c
        return c

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a batch (B, C, H, W); identity (and no cost) when p = 0."""
        if float(self.p) <= 0:
            return images
        b, ch, h, w = images.shape
        dev = images.device
        x = images.float()
        mat = self.geometric_matrix(b, h, dev)  # (B, 3, 3)
        grid = F.affine_grid(mat[:, :2, :], [b, ch, h, w], align_corners=False)  # (B, H, W, 2)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if ch == 3:
            cm = self.color_matrix(b, dev)  # (B, 4, 4)
            flat = x.reshape(b, 3, h * w)  # (B, 3, HW)
            flat = cm[:, :3, :3] @ flat + cm[:, :3, 3:]
            x = flat.reshape(b, 3, h, w)
        return x.to(images.dtype)


class AdaptiveP:
    """Controls ADA's p from the sign of D's outputs on real images.

    Call :meth:`accumulate` with the real logits of each D step; :meth:`update` every ``interval``
    minibatches moves p toward the over-fitting target. In distributed runs, pass ``reduce`` (a
    function summing a tensor across processes) so every rank sees the same statistics and p.
    """

    def __init__(
        self,
        pipe: AugmentPipe,
        target: float = 0.6,
        ada_kimg: float = 500.0,
        interval: int = 4,
    ) -> None:
        self.pipe = pipe
        self.target = target
        self.ada_kimg = ada_kimg
        self.interval = interval
        self._sum = 0.0
        self._count = 0.0
        self.last_rt: float | None = None

    def accumulate(self, real_logits: torch.Tensor) -> None:
        self._sum += float(torch.sign(real_logits.detach().float()).sum())
        self._count += float(real_logits.numel())

    def update(self, images_seen: int, reduce: object = None) -> float:
        """Adjust p after ``images_seen`` images (all processes) since the last update."""
        stats = torch.tensor([self._sum, self._count], dtype=torch.float64)
        if callable(reduce):
            stats = reduce(stats)
        self._sum = self._count = 0.0
        if float(stats[1]) <= 0:
            return float(self.pipe.p)
        rt = float(stats[0] / stats[1])
        self.last_rt = rt
        step = math.copysign(1.0, rt - self.target) * images_seen / (self.ada_kimg * 1000)
        if rt == self.target:
            step = 0.0
        p = min(max(float(self.pipe.p) + step, 0.0), 1.0)
        self.pipe.p.fill_(p)
        return p
