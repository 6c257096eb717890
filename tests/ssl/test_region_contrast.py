from __future__ import annotations

import pytest
import torch

from glomssl.models.backbones import create_backbone
from glomssl.models.unet import UNetDecoder
from glomssl.ssl.region_contrast import RegionContrast


def test_decoder_output_resolution() -> None:
    bb = create_backbone("resnet18")
    dec = UNetDecoder("resnet18")
    y = dec(bb.stages(torch.randn(2, 3, 64, 64)))
    assert y.shape == (2, 64, 32, 32)


def test_assignment_is_a_soft_partition() -> None:
    torch.manual_seed(0)
    m = RegionContrast(create_backbone("resnet18"), regions=5).eval()
    feats, a = m.assign(torch.randn(2, 3, 64, 64))
    assert a.shape == (2, 5, 32, 32)
    assert torch.allclose(a.sum(dim=1), torch.ones(2, 32, 32), atol=1e-5)
    assert float(a.min()) >= 0


def test_balance_loss_zero_for_equal_usage_positive_otherwise() -> None:
    m = RegionContrast(create_backbone("resnet18"), regions=4)
    equal = {"usage": torch.full((3, 4), 0.25)}
    skewed = {"usage": torch.tensor([[0.97, 0.01, 0.01, 0.01]] * 3)}
    assert abs(float(m.balance_loss(equal))) < 1e-6
    assert float(m.balance_loss(skewed)) > 0.5


def test_grey_loss_prefers_uniform_distinct_regions() -> None:
    m = RegionContrast(create_backbone("resnet18"), regions=2, grey_sigma=0.5)
    use = torch.full((1, 2), 0.5)
    good = {"usage": use, "g_mean": torch.tensor([[-1.0, 1.0]]), "g_var": torch.zeros(1, 2)}
    bad = {"usage": use, "g_mean": torch.tensor([[0.0, 0.0]]), "g_var": torch.ones(1, 2)}
    assert float(m.grey_loss(good)) < float(m.grey_loss(bad))


def test_semantic_loss_lower_when_regions_match() -> None:
    torch.manual_seed(0)
    m = RegionContrast(create_backbone("resnet18"), regions=4)
    sem = torch.randn(2, 4, 64) * 5
    use = torch.full((2, 4), 0.25)
    same = m.semantic_loss({"sem": sem, "usage": use}, {"sem": sem, "usage": use})
    shuffled = m.semantic_loss(
        {"sem": sem, "usage": use}, {"sem": sem[:, [1, 2, 3, 0]], "usage": use}
    )
    assert float(same) < float(shuffled)


def test_batch_negatives_make_the_semantic_task_harder() -> None:
    # two images whose regions coincide: with same-image negatives only, a region of image 0 is never
    # confused with the identical region of image 1; with batch negatives it is, so the loss is higher
    torch.manual_seed(0)
    sem1 = torch.randn(1, 4, 64) * 5
    sem = torch.cat([sem1, sem1])  # (2, 4, 64)
    use = torch.full((2, 4), 0.25)
    r = {"sem": sem, "usage": use}
    image = RegionContrast(create_backbone("resnet18"), regions=4, negatives="image")
    batch = RegionContrast(create_backbone("resnet18"), regions=4, negatives="batch")
    batch.load_state_dict(image.state_dict())
    lo, hi = float(image.semantic_loss(r, r)), float(batch.semantic_loss(r, r))
    assert hi > lo + 0.5  # each positive now has an exact twin among the negatives: ~log 2 more
    # and distinct images behave like the per-image loss plus other images' regions as negatives
    sem2 = torch.randn(2, 4, 64) * 5
    r2 = {"sem": sem2, "usage": use}
    assert float(batch.semantic_loss(r2, r2)) >= float(image.semantic_loss(r2, r2)) - 1e-6
    with pytest.raises(ValueError, match="negatives"):
        RegionContrast(create_backbone("resnet18"), regions=4, negatives="nope")
