"""Partial-label losses and the metrics (Dice, boundary F1 with 2-px tolerance, priors)."""

from __future__ import annotations

import numpy as np
import torch

from glomssl.finetune.segmenter.losses import (
    expand_targets,
    multiclass_loss,
    naive_multiclass_targets,
    partial_bce_dice,
    ring_weights,
)
from glomssl.finetune.segmenter.metrics import aggregate, boundary_f1, centred_disk, dice, score


def test_partial_loss_ignores_unannotated_classes_and_255() -> None:
    torch.manual_seed(0)
    mask = torch.zeros(2, 8, 8, dtype=torch.long)
    mask[0, 2:5, 2:5] = 1
    mask[0, 0, :] = 255  # a row of "not annotated" pixels in image 0
    mask[1, 4:, 4:] = 1
    task = torch.tensor(
        [1, -1]
    )  # image 0 annotates class 1 only; image 1 is a label map (id 1 = class 0)
    target = expand_targets(mask, task, 3)  # (2, 3, 8, 8)
    assert (target[0, 0] == 255).all() and (target[0, 2] == 255).all()
    assert target[1, 0, 5, 5] == 1 and target[1, 1, 5, 5] == 0  # label map: id 1 -> class 0
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    partial_bce_dice(logits, target)["loss"].backward()
    g = logits.grad
    assert g is not None
    assert (
        float(g[0, 0].abs().sum()) == 0 and float(g[0, 2].abs().sum()) == 0
    )  # unannotated classes
    assert float(g[0, 1, 0].abs().sum()) == 0  # the 255 pixels
    assert float(g[0, 1, 3].abs().sum()) > 0 and float(g[1].abs().sum()) > 0
    # changing a logit where nothing is annotated leaves the loss unchanged; elsewhere it does not
    base = float(partial_bce_dice(logits.detach(), target)["loss"])
    l2 = logits.detach().clone()
    l2[0, 0] += 5.0
    l2[0, 1, 0] -= 5.0
    assert abs(float(partial_bce_dice(l2, target)["loss"]) - base) < 1e-6
    l2[0, 1, 3, 3] -= 5.0
    assert abs(float(partial_bce_dice(l2, target)["loss"]) - base) > 1e-4


def test_loss_with_nothing_annotated_is_zero_but_differentiable() -> None:
    logits = torch.randn(1, 1, 4, 4, requires_grad=True)
    out = partial_bce_dice(logits, torch.full((1, 1, 4, 4), 255))
    out["loss"].backward()
    assert float(out["loss"].detach()) == 0.0 and logits.grad is not None


def test_ring_weights_sit_just_outside_the_mask() -> None:
    t = torch.zeros(1, 1, 9, 9, dtype=torch.long)
    t[0, 0, 4, 4] = 1
    w = ring_weights(t, px=2, weight=1.2)[0, 0]
    assert w[4, 4] == 1.0 and w[4, 6] == 1.2 and w[4, 7] == 1.0 and w[2, 2] == 1.2


def test_naive_multiclass_targets_call_unannotated_classes_background() -> None:
    mask = torch.tensor([[[0, 1], [255, 1]]])
    out = naive_multiclass_targets(mask, torch.tensor([2]))
    assert out.tolist() == [[[0, 3], [255, 3]]]
    logits = torch.randn(1, 4, 2, 2, requires_grad=True)
    multiclass_loss(logits, out)["loss"].backward()
    assert logits.grad is not None and float(logits.grad[0, :, 1, 0].abs().sum()) == 0


def test_dice_and_boundary_f1() -> None:
    truth = np.zeros((40, 40), np.uint8)
    truth[10:30, 10:30] = 1
    assert dice(truth == 1, truth) == 1.0
    assert dice(np.zeros((40, 40), bool), np.zeros((40, 40), np.uint8)) == 1.0  # both empty
    assert dice(np.zeros((40, 40), bool), truth) == 0.0
    half = truth.copy()
    half[:, 20:] = 255  # the right half is not annotated
    pred = np.zeros((40, 40), bool)
    pred[10:30, 10:20] = True
    assert dice(pred, half) == 1.0
    shifted1 = np.roll(truth == 1, 1, axis=1)
    shifted5 = np.roll(truth == 1, 5, axis=1)
    assert boundary_f1(shifted1, truth) == 1.0  # within the 2-px tolerance
    assert boundary_f1(shifted5, truth) < 0.6 < dice(shifted5, truth)  # Dice forgives, BF1 does not
    assert boundary_f1(np.zeros((40, 40), bool), truth) == 0.0


def test_priors_and_aggregate() -> None:
    d = centred_disk(100, 100, 0.5)
    assert abs(d.mean() - 0.5) < 0.01 and d[50, 50] and not d[0, 0]
    truth = centred_disk(64, 64, 0.6).astype(np.uint8)
    s = score(truth == 1, truth, disk_fraction=0.6)
    assert s["dice"] == 1.0 and s["dice_centred_disk"] > 0.99
    assert abs(s["dice_all_foreground"] - 2 * 0.6 / 1.6) < 0.02
    agg = aggregate(
        [{"class": "a", "dice": 1.0}, {"class": "a", "dice": 0.5}, {"class": "b", "dice": 0.0}],
        ["a", "b", "c"],
    )
    assert agg["per_class"]["a"] == {"dice": 0.75, "n": 2} and "c" not in agg["per_class"]
    assert agg["mean_dice"] == 0.375


def test_all_empty_prior_is_what_predicting_nothing_scores() -> None:
    """A class whose masks are often empty (GS on crops without sclerosis): a model that predicts
    nothing scores the share of empty masks, so that share is reported beside every score."""
    truths = [np.zeros((32, 32), np.uint8) for _ in range(4)] + [centred_disk(32, 32, 0.3)]
    truths[-1] = truths[-1].astype(np.uint8)
    recs = []
    for t in truths:
        s = score(np.zeros((32, 32), bool), t)  # a model that learnt nothing
        assert s["dice_all_empty"] == s["dice"] and s["bf1_all_empty"] == s["bf1"]
        recs.append({"class": "GS", **s})
    agg = aggregate(recs, ["GS"])["per_class"]["GS"]
    assert agg["dice"] == agg["dice_all_empty"] == 0.8  # 4 of 5 masks empty
    assert agg["dice_all_foreground"] < 0.2  # the other prior would make 0.8 look like a gain
    truth = truths[-1]
    assert score(truth == 1, truth)["dice_all_empty"] == 0.0  # no help where the class is present
