"""StyleGAN2 networks: shapes, the modulated convolution against a per-sample reference, resampling
filters against reference convolutions, truncation, configs and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from glomssl.datagan.networks import (
    CONFIG_NAMES,
    MinibatchStd,
    create_discriminator,
    create_generator,
    downsample2d,
    modulated_conv2d,
    upsample2d,
)
from glomssl.errors import GlomsslError


@pytest.mark.parametrize("res", [32, 64, 128])
def test_generator_and_discriminator_shapes(res: int) -> None:
    torch.manual_seed(0)
    G = create_generator("small", res, channel_max=8)
    D = create_discriminator("small", res, channel_max=8)
    log2 = int(math.log2(res))
    assert G.num_ws == 2 * log2 - 2 and G.img_resolution == res and G.img_channels == 3
    z = torch.randn(3, G.z_dim)
    ws = G.mapping(z)
    assert ws.shape == (3, G.num_ws, G.w_dim)
    img, feats = G.synthesis(ws, noise_mode="random", return_features=True)
    assert img.shape == (3, 3, res, res) and torch.isfinite(img).all()
    # one activation per synthesis conv: 1 at 4x4, then 2 per resolution; low to high resolution
    assert len(feats) == G.num_ws - 1
    assert [f.shape[-1] for f in feats] == [4] + [
        r for r in (2**i for i in range(3, log2 + 1)) for _ in (0, 1)
    ]
    assert all(f.shape[0] == 3 for f in feats)
    logits = D(img)
    assert logits.shape == (3, 1)
    assert torch.equal(G(z, noise_mode="const"), G.synthesis(ws, noise_mode="const"))


def test_1024_builds_with_18_ws_and_paper_widths() -> None:
    G = create_generator("small", 1024, channel_max=4)
    assert G.num_ws == 18
    G256 = create_generator("paper256", 256)
    assert G256.synthesis_net.channels == {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256,
        128: 128,
        256: 64,
    }
    assert G256.num_ws == 14 and G256.z_dim == 512 and len(G256.mapping_net.layers) == 8
    auto512 = create_generator("auto", 512, channel_max=8)
    assert len(auto512.mapping_net.layers) == 2


def _reference_modconv(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demod: bool, up: bool
) -> torch.Tensor:
    """Per-sample loop, straight from StyleGAN2 eq. 1-3."""
    outs = []
    for i in range(x.shape[0]):
        w = weight * styles[i][None, :, None, None]  # (Cout, Cin, k, k)
        if demod:
            w = w / torch.sqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        xi = x[i : i + 1]
        if up:
            xi = upsample2d(xi)
        outs.append(F.conv2d(xi, w, padding=weight.shape[-1] // 2))
    return torch.cat(outs)


@pytest.mark.parametrize("demod,up,k", [(True, False, 3), (True, True, 3), (False, False, 1)])
def test_modulated_conv_grouped_and_unfused_equal_reference(demod: bool, up: bool, k: int) -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 5, 8, 8)
    weight = torch.randn(6, 5, k, k)
    styles = torch.randn(4, 5) + 1
    ref = _reference_modconv(x, weight, styles, demod, up)
    fused = modulated_conv2d(x, weight, styles, demod, up, fused=True)
    unfused = modulated_conv2d(x, weight, styles, demod, up, fused=False)
    assert fused.shape == ref.shape == (4, 6, 16 if up else 8, 16 if up else 8)
    torch.testing.assert_close(fused, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(unfused, ref, rtol=1e-4, atol=1e-4)
    if (
        demod
    ):  # demodulation keeps unit output variance for unit-variance inputs (StyleGAN2 sec. 2.2)
        assert 0.5 < float(unfused.std()) < 2.0


def test_generator_fused_and_unfused_paths_agree() -> None:
    torch.manual_seed(2)
    G = create_generator("small", 32, channel_max=8)
    z = torch.randn(2, G.z_dim)
    a = G(z)
    G.set_fused(True)
    torch.testing.assert_close(G(z), a, rtol=1e-4, atol=1e-4)


def test_resampling_matches_reference_filters() -> None:
    torch.manual_seed(3)
    x = torch.randn(2, 3, 8, 8)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f2 = (f[:, None] * f[None, :]) / 64
    flat = x.reshape(6, 1, 8, 8)
    up = F.conv_transpose2d(flat, (4 * f2)[None, None], stride=2, padding=1).reshape(2, 3, 16, 16)
    down = F.conv2d(F.pad(flat, [1] * 4), f2[None, None], stride=2).reshape(2, 3, 4, 4)
    torch.testing.assert_close(upsample2d(x), up)
    torch.testing.assert_close(downsample2d(x), down)
    # a constant image stays constant away from the border
    c = torch.ones(1, 1, 8, 8)
    assert torch.allclose(upsample2d(c)[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12))


def test_truncation_zero_gives_the_mean_w() -> None:
    torch.manual_seed(4)
    G = create_generator("small", 32, channel_max=8)
    G.mapping(torch.randn(64, G.z_dim), update_w_avg=True)
    assert float(G.mapping_net.w_avg.abs().sum()) > 0
    ws = G.mapping(torch.randn(5, G.z_dim), truncation_psi=0.0)
    assert torch.allclose(ws, G.mapping_net.w_avg.expand_as(ws))
    ws_cut = G.mapping(torch.randn(5, G.z_dim), truncation_psi=0.0, truncation_cutoff=2)
    assert torch.allclose(ws_cut[:, :2], G.mapping_net.w_avg.expand(5, 2, -1))
    assert not torch.allclose(ws_cut[:, 2], G.mapping_net.w_avg.expand(5, -1))


def test_minibatch_std_handles_any_batch() -> None:
    for n in (1, 3, 4, 6):
        y = MinibatchStd(4)(torch.randn(n, 8, 4, 4))
        assert y.shape == (n, 9, 4, 4)
    same = MinibatchStd(4)(torch.ones(4, 2, 4, 4))
    assert float(same[:, 2].max()) < 1e-3


def test_backward_reaches_every_parameter() -> None:
    torch.manual_seed(5)
    G = create_generator("small", 32, channel_max=8)
    D = create_discriminator("small", 32, channel_max=8)
    D(G(torch.randn(2, G.z_dim), noise_mode="random")).sum().backward()
    missing = [n for n, p in [*G.named_parameters(), *D.named_parameters()] if p.grad is None]
    assert missing == []


def test_bad_config_and_resolution_raise() -> None:
    assert "small" in CONFIG_NAMES and "auto" in CONFIG_NAMES
    with pytest.raises(GlomsslError, match="--cfg"):
        create_generator("huge", 256)
    with pytest.raises(GlomsslError, match="--resolution 48"):
        create_discriminator("small", 48)
    G = create_generator("small", 32, channel_max=8)
    with pytest.raises(GlomsslError, match="noise_mode"):
        G.synthesis(G.mapping(torch.randn(1, G.z_dim)), noise_mode="loud")


# --------------------------------------------------------------------------------------------------
# issue 16: fused resampling (transposed conv + filter, filter + strided conv) against the literal path


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("mode", ["up", "down", "none"])
def test_fused_resampling_conv_equals_zero_insert_reference(k: int, groups: int, mode: str) -> None:
    from glomssl.datagan.resample import conv2d_resample, conv2d_resample_reference

    torch.manual_seed(10)
    x = torch.randn(2, 6, 8, 6, dtype=torch.float64)  # non-square on purpose
    w = torch.randn(9, 6 // groups, k, k, dtype=torch.float64)
    up, down = mode == "up", mode == "down"
    fast = conv2d_resample(x, w, up, down, groups)
    ref = conv2d_resample_reference(x, w, up, down, groups)
    scale = 2.0 if up else (0.5 if down else 1.0)
    assert fast.shape == ref.shape == (2, 9, int(8 * scale), int(6 * scale))
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    # the border rows/columns are where a transposed conv + filter alone would differ
    assert float(ref[:, :, 0].abs().max()) > 0.1


@pytest.mark.parametrize("up,down", [(True, False), (False, True)])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demod", [True, False])
def test_modulated_resampling_equals_reference(
    up: bool, down: bool, fused: bool, demod: bool
) -> None:
    torch.manual_seed(11)
    x = torch.randn(3, 5, 8, 8)
    weight = torch.randn(4, 5, 3, 3) / 3
    styles = torch.randn(3, 5) + 1
    noise = torch.randn(1, 1, 16 if up else 4, 16 if up else 4)
    fast = modulated_conv2d(x, weight, styles, demod, up, fused, down=down, noise=noise)
    ref = modulated_conv2d(x, weight, styles, demod, up, fused, down=down, reference=True)
    torch.testing.assert_close(fast, ref + noise, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the in-place (generation) branch gives the same numbers
        torch.testing.assert_close(
            modulated_conv2d(x, weight, styles, demod, up, fused, down=down, noise=noise), fast
        )


def test_polyphase_upsample_equals_zero_insertion() -> None:
    from glomssl.datagan.resample import upsample2d_reference

    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(upsample2d(x), upsample2d_reference(x), rtol=1e-12, atol=1e-12)


def test_filter_gradients_of_first_and_second_order() -> None:
    """R1 and path-length regularisation differentiate through the filters twice."""
    from glomssl.datagan.resample import conv2d_resample, fir_dim, fir_dim_adjoint

    torch.manual_seed(12)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    for pads, stride in (((1, 1), 1), ((2, 2), 1), ((1, 1), 2), ((3, 2), 1)):
        f = lambda t, p=pads, s=stride: fir_dim(t, 2, p, s, 4.0)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x,)) and torch.autograd.gradgradcheck(f, (x,))
    g = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    adj = lambda t: fir_dim_adjoint(t, 3, 12, (1, 1), 2, 4.0)  # noqa: E731
    assert torch.autograd.gradcheck(adj, (g,)) and torch.autograd.gradgradcheck(adj, (g,))
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    xs = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    for up in (True, False):
        conv = lambda a, b, u=up: conv2d_resample(a, b, up=u, down=not u)  # noqa: E731
        assert torch.autograd.gradcheck(conv, (xs, w))
        assert torch.autograd.gradgradcheck(conv, (xs, w))


def test_snapshot_written_before_the_fusion_reproduces_its_images() -> None:
    """A snapshot saved by the zero-insert networks (tests/datagan/data, written before issue 16)
    loads unchanged and gives the same images and logits it gave then."""
    import numpy as np

    from glomssl.datagan.snapshot import load_snapshot

    data = Path(__file__).parent / "data"
    snap = load_snapshot(data / "legacy-v1-snapshot-000000.safetensors")
    want = np.load(data / "legacy-v1-outputs.npz")
    z = torch.from_numpy(want["z"])
    with torch.no_grad():
        img = snap["G_ema"](z, truncation_psi=0.8, noise_mode="const")
        one = snap["G_ema"](z[1:2], truncation_psi=0.8, noise_mode="const")  # fused path (B = 1)
        logits = snap["D"](torch.from_numpy(np.random.RandomState(1).randn(3, 3, 32, 32)).float())
    torch.testing.assert_close(img, torch.from_numpy(want["img"]), rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(one[0], img[1], rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(logits, torch.from_numpy(want["d_logits"]), rtol=1e-5, atol=1e-6)
    # and with gradients on (the training branch)
    img_g = snap["G"].eval()(z, truncation_psi=0.8, noise_mode="const")
    torch.testing.assert_close(img_g.detach(), img, rtol=1e-5, atol=2e-5)
