"""Every registered method: forward + backward on a tiny batch, finite loss, gradients reach the trunk."""

from __future__ import annotations

import pytest
import torch

from glomssl.errors import GlomsslError
from glomssl.ssl.methods import METHODS, create_method
from glomssl.ssl.simsiam import embedding_std


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    m = create_method(name, "resnet18", proj_dim=64, pred_hidden=16, regions=4)
    x0, x1 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    out = m.training_loss(x0, x1)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert out["emb"].shape[0] == 4 and not out["emb"].requires_grad
    out["loss"].backward()
    g = m.backbone.net.conv1.weight.grad
    assert g is not None and float(g.abs().sum()) > 0
    m.on_train_step(1, 10)


def test_unknown_method_is_a_user_error() -> None:
    with pytest.raises(GlomsslError, match="unknown --method"):
        create_method("nope", "resnet18")


def test_embedding_std_detects_collapse() -> None:
    spread = torch.randn(256, 64)
    collapsed = torch.ones(256, 64) + 1e-6 * torch.randn(256, 64)
    assert abs(float(embedding_std(spread)) - 64**-0.5) < 0.03
    assert float(embedding_std(collapsed)) < 1e-3


def test_byol_target_follows_online_by_momentum() -> None:
    torch.manual_seed(0)
    m = create_method("byol", "resnet18", proj_dim=32)
    before = m.backbone_m.net.conv1.weight.clone()
    with torch.no_grad():
        m.backbone.net.conv1.weight.add_(1.0)
    m.on_train_step(0, 100)  # momentum 0.99 at step 0
    moved = m.backbone_m.net.conv1.weight - before
    assert torch.allclose(moved, torch.full_like(moved, 0.01), atol=1e-5)
