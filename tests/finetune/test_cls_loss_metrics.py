"""Focal loss against hand-computed values, and the metrics against scikit-learn."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glomssl.finetune.classifier.loss import FocalLoss, balanced_weights, focal_loss
from glomssl.finetune.classifier.metrics import confusion_png, evaluate, summarise


def test_focal_loss_matches_a_hand_computed_value() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([0, 0])
    # by hand: p_t = softmax(logits)[i, 0]
    p1 = math.exp(2) / (math.exp(2) + 1)
    p2 = 1 / (1 + math.exp(1))
    gamma = 2.5
    hand = (-((1 - p1) ** gamma) * math.log(p1) - ((1 - p2) ** gamma) * math.log(p2)) / 2
    assert float(focal_loss(logits, target, gamma)) == pytest.approx(hand, rel=1e-6)
    # with class weights: normalised by the summed weights of the batch, as cross_entropy does
    w = torch.tensor([3.0, 1.0])
    target2 = torch.tensor([0, 1])
    q2 = math.exp(1) / (1 + math.exp(1))
    hand_w = (3 * (1 - p1) ** gamma * -math.log(p1) + 1 * (1 - q2) ** gamma * -math.log(q2)) / 4
    assert float(focal_loss(logits, target2, gamma, w)) == pytest.approx(hand_w, rel=1e-6)


def test_gamma_zero_is_cross_entropy_with_and_without_weights() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=g)
    target = torch.randint(0, 5, (16,), generator=g)
    w = torch.rand(5, generator=g) + 0.1
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(focal_loss(logits, target, 0.0), ce(logits, target), atol=1e-6)
    assert torch.allclose(
        focal_loss(logits, target, 0.0, w), ce(logits, target, weight=w), atol=1e-6
    )
    # gamma > 0 down-weights easy samples: never above cross-entropy
    assert float(FocalLoss(2.5)(logits, target)) < float(ce(logits, target))


def test_balanced_weights_are_inverse_frequency() -> None:
    w = balanced_weights(np.array([0, 0, 0, 1]), 2)
    assert w.tolist() == pytest.approx([4 / 6, 4 / 2])
    assert balanced_weights(np.array([1, 1]), 3).tolist() == pytest.approx([0.0, 1.0, 0.0])


def test_metrics_agree_with_sklearn() -> None:
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    prob = rng.dirichlet(np.ones(3), 60)
    prob[np.arange(60), y] += 0.3  # better than chance
    prob /= prob.sum(1, keepdims=True)
    m = evaluate(y, prob)
    pred = prob.argmax(1)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["auc"] == pytest.approx(roc_auc_score(y, prob, multi_class="ovr", average="macro"))
    assert np.asarray(m["confusion"]).sum() == 60
    yb = (y > 0).astype(int)
    pb = np.stack([1 - prob[:, 0], prob[:, 0]], 1)[:, ::-1]  # column 1 = P(class 1)
    assert evaluate(yb, pb)["auc"] == pytest.approx(roc_auc_score(yb, pb[:, 1]))
    s = summarise(
        [
            {"balanced_accuracy": 0.6, "macro_f1": 0.5, "auc": 0.7, "accuracy": 0.6},
            {"balanced_accuracy": 0.8, "macro_f1": 0.7, "auc": float("nan"), "accuracy": 0.9},
        ]
    )
    assert s["balanced_accuracy"] == pytest.approx(0.7)
    # the sample standard deviation (n - 1), as a paper quotes it, not the population one (0.1)
    assert s["balanced_accuracy_std"] == pytest.approx(0.2 / 2**0.5)
    assert s["auc"] == pytest.approx(0.7)  # the NaN fold (one class only) is left out


def test_confusion_png_is_a_real_image(tmp_path: Path) -> None:
    cm = np.array([[5, 1], [2, 7]])
    p = confusion_png(cm, ["GS", "nonGS"], tmp_path / "cm.png", "title")
    with Image.open(p) as im:
        assert im.format == "PNG" and im.size[0] > 200
        a = np.asarray(im.convert("RGB"))
    assert (a < 250).any() and (a == 255).any()  # drawn on white
