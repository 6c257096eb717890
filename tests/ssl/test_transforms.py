from __future__ import annotations

import torch

from glomssl.ssl.transforms import AugmentSpec, RandomRot90, StainJitter, TwoViews, eval_transform


def test_two_views_shape_range_and_differ() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 50, 60)
    v0, v1 = TwoViews(AugmentSpec(image_size=32))(x)
    assert v0.shape == v1.shape == (3, 32, 32)
    assert float(v0.min()) >= 0 and float(v0.max()) <= 1
    assert not torch.allclose(v0, v1)


def test_stain_jitter_zero_is_identity_and_nonzero_changes_colour() -> None:
    x = torch.rand(3, 16, 16) * 0.8 + 0.1
    assert torch.equal(StainJitter(0.0)(x), x)
    torch.manual_seed(1)
    y = StainJitter(0.2)(x)
    assert y.shape == x.shape and not torch.allclose(y, x, atol=1e-3)
    # the round trip RGB -> HED -> RGB without jitter must be exact up to clamping
    sj = StainJitter(1e-9)
    assert torch.allclose(sj(x), x, atol=1e-3)


def test_rot90_is_a_rotation() -> None:
    x = torch.arange(16.0).view(1, 4, 4)
    seen = set()
    for _ in range(40):
        y = RandomRot90()(x)
        assert sorted(y.flatten().tolist()) == sorted(x.flatten().tolist())
        seen.add(tuple(y.flatten().tolist()))
    assert len(seen) == 4


def test_eval_transform_resizes() -> None:
    assert eval_transform(24)(torch.rand(3, 40, 30)).shape == (3, 24, 24)
