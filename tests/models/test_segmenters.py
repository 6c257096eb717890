"""The registered segmenters: shapes, gradients, the dynamic head's arithmetic, one-pass inference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from glomssl.errors import GlomsslError
from glomssl.models import create_model, model_names
from glomssl.models.dynamic_head import Controller, DynamicHead, head_param_count
from glomssl.models.segmenters import SEGMENTER_NAMES, DynamicSegmenter

CLASSES = ["Tuft", "GS", "Cap"]


def small(name: str, **kw: Any) -> Any:
    """The registry model ``name`` at CPU-test size."""
    if name == "deeplabv3":
        kw.setdefault("backbone", "mobilenet_v3_large")
    else:
        kw.setdefault("base", 8)
    return create_model(name, classes=CLASSES, **kw)


def test_every_segmenter_is_registered() -> None:
    names = model_names()
    for n in SEGMENTER_NAMES:
        assert n in names


@pytest.mark.parametrize("name", SEGMENTER_NAMES)
def test_shapes_and_backward(name: str) -> None:
    torch.manual_seed(0)
    m = small(name).train()
    x = torch.rand(2, 3, 64, 64)
    out = m(x)
    k = len(CLASSES) + (1 if name == "multiclass" else 0)
    assert out.shape == (2, k, 64, 64)
    p = m.probabilities(x).detach()
    assert p.shape == (2, 3, 64, 64) and float(p.min()) >= 0 and float(p.max()) <= 1
    loss = out.square().mean()
    loss.backward()
    grads = [q.grad for q in m.parameters() if q.requires_grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    assert 64 % m.stride == 0


@pytest.mark.parametrize("name", ["dynamic", "multihead", "unet", "deeplabv3"])
def test_forward_tasks_picks_each_images_task(name: str) -> None:
    torch.manual_seed(0)
    m = small(name).eval()
    x = torch.rand(3, 3, 32, 32)
    tasks = torch.tensor([2, 0, 1])
    with torch.no_grad():
        full = m(x)
        picked = m.forward_tasks(x, tasks)
    assert picked.shape == (3, 32, 32)
    for b in range(3):
        torch.testing.assert_close(picked[b], full[b, int(tasks[b])], rtol=1e-4, atol=1e-5)


def test_multiclass_refuses_per_task_training() -> None:
    with pytest.raises(GlomsslError, match="softmax"):
        small("multiclass").forward_tasks(torch.rand(1, 3, 32, 32), torch.tensor([0]))


def test_head_has_the_papers_162_parameters() -> None:
    assert head_param_count(8, 8, 2) == 162
    m = DynamicSegmenter(CLASSES, base=8)
    assert m.head.num_params == 162


@pytest.mark.parametrize("kind", ["concat", "outer"])
def test_dynamic_head_equals_a_per_sample_loop_of_1x1_convs(kind: str) -> None:
    """Batched einsum head == for each (image, task): conv1x1 -> relu -> conv1x1 -> relu -> conv1x1."""
    torch.manual_seed(1)
    head = DynamicHead(8, 8, 2)
    ctrl = Controller(16, 4, head.num_params, kind)
    feats = torch.randn(3, 8, 10, 12)
    pooled = torch.randn(3, 16)
    tasks = torch.tensor([[0, 3], [2, 2], [1, 0]])
    params = ctrl(pooled, tasks)  # (3, 2, 162)
    out = head(feats, params)  # (3, 2, 10, 12)
    for b in range(3):
        for t in range(2):
            theta = params[b, t]
            w1, b1 = theta[:64].view(8, 8, 1, 1), theta[64:72]
            w2, b2 = theta[72:136].view(8, 8, 1, 1), theta[136:144]
            w3, b3 = theta[144:160].view(2, 8, 1, 1), theta[160:162]
            y = F.relu(F.conv2d(feats[b : b + 1], w1, b1))
            y = F.relu(F.conv2d(y, w2, b2))
            y = F.conv2d(y, w3, b3)[0]  # (2, H, W)
            want = y[1] - y[0]
            torch.testing.assert_close(out[b, t], want, rtol=1e-4, atol=1e-5)
            # the logit is the 2-way softmax's foreground probability, through a sigmoid
            torch.testing.assert_close(torch.sigmoid(out[b, t]), torch.softmax(y, 0)[1])


def test_controller_outer_is_a_linear_map_per_task() -> None:
    torch.manual_seed(2)
    ctrl = Controller(5, 3, 7, "outer")
    f = torch.randn(2, 5)
    got = ctrl(f, torch.tensor([[1], [2]]))[:, 0]
    u = f / f.norm(dim=1, keepdim=True)  # the controller reads the unit-length pooled feature
    want = torch.stack([ctrl.weight[1] @ u[0], ctrl.weight[2] @ u[1]]) + ctrl.task_bias[[1, 2]]
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("kind", ["outer", "concat"])
def test_controller_ignores_the_scale_of_the_pooled_feature(kind: str) -> None:
    """A ResNet bottleneck pools to features ~30x larger than the residual U-Net's; the generated
    heads must not depend on that scale (else AdamW steps move them by ~1 per step)."""
    torch.manual_seed(4)
    ctrl = Controller(512, 2, 162, kind)
    f = torch.rand(3, 512)
    tasks = torch.tensor([[0, 1]] * 3)
    torch.testing.assert_close(ctrl(f, tasks), ctrl(100.0 * f, tasks))


@pytest.mark.parametrize("encoder", ["resunet", "resnet18"])
def test_one_pass_equals_k_single_task_passes(encoder: str) -> None:
    """All K classes from one encoder-decoder pass == K passes of one task each (the reference way)."""
    torch.manual_seed(3)
    classes = [f"c{i}" for i in range(5)]
    m = DynamicSegmenter(classes, encoder=encoder, base=8).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        one = m.probabilities(x)  # (2, 5, 64, 64)
        per_task = torch.stack(
            [torch.sigmoid(m.forward_tasks(x, torch.full((2,), k))) for k in range(5)], dim=1
        )
        subset = m.probabilities(x, [4, 1])
    torch.testing.assert_close(one, per_task, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(subset, one[:, [4, 1]], rtol=1e-4, atol=1e-5)
    assert float((one[:, 0] - one[:, 1]).abs().max()) > 0  # the heads really differ per class


def test_bad_arguments_are_one_line_errors() -> None:
    with pytest.raises(GlomsslError, match="dynamic"):
        create_model("dynamic", classes=CLASSES, no_such_option=1)
    with pytest.raises(GlomsslError, match="unknown encoder"):
        create_model("dynamic", classes=CLASSES, encoder="vgg")
    with pytest.raises(GlomsslError, match="twice"):
        create_model("multihead", classes=["a", "a"], base=8)
    with pytest.raises(GlomsslError, match="controller"):
        create_model("dynamic", classes=CLASSES, base=8, controller="sum")


def test_init_from_a_pretrain_run(tmp_path: Path) -> None:
    """--init loads the ResNet trunk (and a regcon decoder) that `glomssl pretrain` exports."""
    from glomssl.models.backbones import ResNetTrunk
    from glomssl.models.unet import UNetDecoder
    from glomssl.runs import save_weights

    torch.manual_seed(4)
    trunk, dec = ResNetTrunk("resnet18"), UNetDecoder("resnet18")
    save_weights(tmp_path / "backbone.safetensors", trunk.trunk_state_dict(), {"arch": "resnet18"})
    save_weights(tmp_path / "decoder.safetensors", dec.state_dict(), {"arch": "resnet18"})
    m = create_model("dynamic", classes=CLASSES, encoder="resnet18")
    info = m.load_init(str(tmp_path))
    assert info["decoder"].endswith("decoder.safetensors")
    torch.testing.assert_close(m.net.trunk.net.conv1.weight, trunk.net.conv1.weight)
    torch.testing.assert_close(m.net.decoder.head.weight, dec.head.weight)
    u = create_model("unet", classes=CLASSES[:2], encoder="resnet18")
    u.load_init(str(tmp_path / "backbone.safetensors"))
    for net in u.nets:
        torch.testing.assert_close(net.trunk.net.conv1.weight, trunk.net.conv1.weight)
    with pytest.raises(GlomsslError, match="resnet34"):
        create_model("multihead", classes=CLASSES, encoder="resnet34").load_init(str(tmp_path))
    with pytest.raises(GlomsslError, match="resnet18"):
        small("dynamic").load_init(str(tmp_path))  # a resunet has nothing pretrained


def test_segmenters_saved_before_the_unit_pooled_change_load_unchanged(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A model.json without ``unit_pooled`` (saved before the controller change) rebuilds a controller
    that reads the pooled feature unscaled, so the old weights give the old outputs; new exports say
    ``unit_pooled: true``."""
    from glomssl.finetune.segmenter.infer import export_segmenter, load_segmenter
    from glomssl.finetune.segmenter.train import SegTrainConfig

    torch.manual_seed(5)
    old = DynamicSegmenter(["Tuft", "GS"], encoder="resunet", base=8).eval()
    assert old.controller.normalise is False
    kwargs = dict(old.build_kwargs)
    kwargs.pop("unit_pooled")  # what an earlier glomssl wrote
    old.build_kwargs = kwargs
    export_segmenter(old, tmp_path, {})
    back, meta = load_segmenter(tmp_path)
    assert "unit_pooled" not in meta["model_kwargs"] and back.controller.normalise is False
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(back.probabilities(x), old.probabilities(x))
    kw = SegTrainConfig(train=["t.csv"], out=str(tmp_path / "r")).model_kwargs(["Tuft", "GS"])
    assert kw["unit_pooled"] is True  # what `finetune seg` builds and exports now
    new = DynamicSegmenter(**kw)
    assert new.controller.normalise is True and new.build_kwargs["unit_pooled"] is True
