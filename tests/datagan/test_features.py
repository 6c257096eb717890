"""Bounded-memory pixel features equal datasetGAN's whole-image upsample-and-concatenate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glomssl.datagan import features as fx
from glomssl.datagan.networks import create_generator
from glomssl.errors import GlomsslError


@pytest.fixture(scope="module")
def G() -> torch.nn.Module:
    torch.manual_seed(0)
    return fx.load_network(create_generator("small", 32))


def _feats(G: torch.nn.Module, seed: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(seed))
    return fx.synthesize(G, G.mapping(z))


def test_synthesize_gives_every_layer(G: torch.nn.Module) -> None:
    img, feats = _feats(G)
    assert img.shape == (2, 3, 32, 32)
    res = [f.shape[-1] for f in feats]
    assert res == sorted(res) and res[0] == 4 and res[-1] == 32
    assert len(feats) == 1 + 2 * 3  # one conv at 4x4, two per block at 8, 16, 32
    assert sum(fx.feature_channels(feats)) == sum(int(f.shape[1]) for f in feats)


@pytest.mark.parametrize("rows", [1, 3, 7, 32])
def test_band_path_equals_whole_image(G: torch.nn.Module, rows: int) -> None:
    _img, feats = _feats(G)
    full = fx.full_features(feats, (32, 32), index=1)  # (C, H, W)
    c = full.shape[0]
    stitched = torch.empty(32, 32, c)
    for y0 in range(0, 32, rows):
        y1 = min(32, y0 + rows)
        stitched[y0:y1] = fx.band_features(feats, y0, y1, (32, 32), index=1)
    torch.testing.assert_close(stitched.permute(2, 0, 1), full, atol=1e-5, rtol=1e-5)


def test_band_upsamples_to_larger_label_resolution(G: torch.nn.Module) -> None:
    _img, feats = _feats(G)
    full = fx.full_features(feats, (48, 48))
    band = fx.band_features(feats, 10, 21, (48, 48))
    torch.testing.assert_close(band.permute(2, 0, 1), full[:, 10:21], atol=1e-5, rtol=1e-5)


def test_point_features_match_full_map(G: torch.nn.Module) -> None:
    _img, feats = _feats(G)
    full = fx.full_features(feats, (32, 32))
    ys = torch.tensor([0, 31, 5, 17, 31])
    xs = torch.tensor([0, 31, 30, 2, 0])
    pts = fx.point_features(feats, ys, xs, (32, 32))
    torch.testing.assert_close(pts, full[:, ys, xs].t(), atol=1e-5, rtol=1e-5)


def test_reference_upsample_is_pytorch_bilinear() -> None:
    f = torch.randn(1, 5, 4, 4)
    ref = F.interpolate(f, size=(16, 16), mode="bilinear", align_corners=False)[0]
    got = fx.band_features([f], 0, 16, (16, 16)).permute(2, 0, 1)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)


def test_rows_for_budget() -> None:
    assert fx.rows_for_budget(5568, 1024, 256 * 2**20) == 11
    assert fx.rows_for_budget(10**6, 1024, 1) == 1
    assert fx.rows_for_budget(1, 8, 2**30) == 8


def test_latent_round_trip_with_noise(G: torch.nn.Module, tmp_path) -> None:
    ws = G.mapping(torch.randn(1, G.z_dim))[0]
    noise = {n: torch.randn_like(b) for n, b in fx.noise_buffers(G).items()}
    assert noise, "the generator exposes its constant noise maps"
    fx.save_latent(tmp_path / "a.npz", ws, noise, seed=7)
    lat = fx.load_latent(tmp_path / "a.npz", G)
    assert lat["seed"] == 7
    torch.testing.assert_close(lat["ws"], ws)
    before = {n: b.clone() for n, b in fx.noise_buffers(G).items()}
    img_own, _ = fx.synthesize_latent(G, lat)
    img_const, _ = fx.synthesize(G, ws[None])
    # the latent's own noise maps are used, then the generator's buffers are restored
    for n, b in fx.noise_buffers(G).items():
        assert torch.equal(b, before[n])
    lat["noise"] = {}
    img_plain, _ = fx.synthesize_latent(G, lat)
    torch.testing.assert_close(img_plain, img_const)
    assert img_own.shape == img_const.shape


def test_latent_of_other_network_is_one_line_error(G: torch.nn.Module, tmp_path) -> None:
    fx.save_latent(tmp_path / "b.npz", torch.zeros(3, 5))
    with pytest.raises(GlomsslError, match="different generator"):
        fx.load_latent(tmp_path / "b.npz", G)
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(GlomsslError, match="not a readable"):
        fx.load_latent(tmp_path / "c.npz")
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 cut short")  # a zip's start, then nothing
    with pytest.raises(GlomsslError, match="not a readable"):
        fx.load_latent(tmp_path / "d.npz")
