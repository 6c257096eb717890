"""ADA: the augmentation pipeline (identity at p=0, differentiable, sensible transforms) and the
adaptive p controller (rises when D over-fits, falls when it does not), also driven by a real D."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from glomssl.datagan.augment import AdaptiveP, AugmentPipe
from glomssl.datagan.networks import create_discriminator


def test_p_zero_is_identity() -> None:
    x = torch.randn(4, 3, 16, 16)
    assert AugmentPipe(0.0)(x) is x


def test_p_one_changes_images_and_is_differentiable() -> None:
    torch.manual_seed(0)
    x = (torch.rand(8, 3, 16, 16) * 2 - 1).requires_grad_(True)
    y = AugmentPipe(1.0)(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert float((y - x).detach().abs().mean()) > 0.05
    y.square().sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_geometric_part_keeps_a_constant_image_constant() -> None:
    torch.manual_seed(1)
    pipe = AugmentPipe(1.0)
    mat = pipe.geometric_matrix(6, 16, torch.device("cpu"))
    # every sampled geometric map is invertible; flips/rotations/scalings only
    assert (torch.linalg.det(mat[:, :2, :2]).abs() > 0.1).all()
    const = torch.full((6, 3, 16, 16), 0.3)
    grid = F.affine_grid(mat[:, :2, :], [6, 3, 16, 16], align_corners=False)
    out = F.grid_sample(const, grid, padding_mode="reflection", align_corners=False)
    torch.testing.assert_close(out, const)


def test_geometric_only_xflip_reproduces_torch_flip() -> None:
    """With p=1 the first transform alone (x-flip, drawn 1) must equal a plain flip."""
    x = torch.randn(1, 3, 8, 8)
    m = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    grid = F.affine_grid(m, [1, 3, 8, 8], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    torch.testing.assert_close(out, x.flip(3))


def test_color_matrix_keeps_grey_grey_under_hue_and_saturation() -> None:
    torch.manual_seed(2)
    pipe = AugmentPipe(1.0)
    c = pipe.color_matrix(16, torch.device("cpu"))  # (16, 4, 4)
    grey = torch.tensor([0.2, 0.2, 0.2, 1.0])
    out = c @ grey  # (16, 4)
    # brightness/contrast/luma-flip move a grey along the grey axis; hue/saturation never leave it
    torch.testing.assert_close(out[:, 0], out[:, 1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, 1], out[:, 2], rtol=1e-5, atol=1e-5)


def test_adaptive_p_rises_when_d_overfits_and_falls_when_not() -> None:
    pipe = AugmentPipe(0.0)
    ada = AdaptiveP(pipe, target=0.6, ada_kimg=1.0, interval=4)
    for _ in range(5):  # D confident on every real: r_t = 1 > 0.6
        ada.accumulate(torch.full((32, 1), 3.0))
        ada.update(images_seen=128)
    assert math.isclose(float(pipe.p), 5 * 128 / 1000, rel_tol=1e-5)
    high = float(pipe.p)
    for _ in range(2):  # half the reals judged fake: r_t = 0 < 0.6
        ada.accumulate(torch.cat([torch.full((16, 1), 1.0), torch.full((16, 1), -1.0)]))
        ada.update(images_seen=128)
    assert float(pipe.p) < high
    for _ in range(20):
        ada.accumulate(torch.full((8, 1), -1.0))
        ada.update(images_seen=128)
    assert float(pipe.p) == 0.0  # clamped
    for _ in range(20):
        ada.accumulate(torch.full((8, 1), 1.0))
        ada.update(images_seen=128)
    assert float(pipe.p) == 1.0


def test_adaptive_p_driven_by_a_discriminator_that_memorises() -> None:
    """A real D trained to separate 4 fixed 'real' images from noise over-fits (its outputs on the
    reals turn positive), so p must rise; with D's bias forced negative, p must fall back."""
    torch.manual_seed(3)
    D = create_discriminator("small", 32, channel_max=8)
    opt = torch.optim.Adam(D.parameters(), lr=5e-3, betas=(0.5, 0.99))
    reals = torch.rand(4, 3, 32, 32) * 2 - 1
    for _ in range(60):  # train until D calls every (memorised) real image real
        lr_ = D(reals)
        if bool((lr_ > 0.5).all()):
            break
        loss = F.softplus(-lr_).mean() + F.softplus(D(torch.randn(4, 3, 32, 32) * 0.3)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    pipe = AugmentPipe(0.0)
    ada = AdaptiveP(pipe, target=0.6, ada_kimg=0.5, interval=1)
    with torch.no_grad():
        for _ in range(3):
            ada.accumulate(D(pipe(reals)))
            ada.update(images_seen=4)
        assert ada.last_rt is not None and ada.last_rt > 0.6
        risen = float(pipe.p)
        assert risen > 0.0
        D.out.bias.fill_(-1e3)  # now every real is judged fake
        for _ in range(2):
            ada.accumulate(D(pipe(reals)))
            ada.update(images_seen=4)
    assert float(pipe.p) < risen
