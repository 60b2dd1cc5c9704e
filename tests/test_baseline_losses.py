"""Baseline losses: pseudo-label CE and CLIP2Scene's label-free loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shared.errors import UserError
from train.engine.methods import class_weights
from train.losses.baselines import clip2scene_loss, pseudo_ce_loss

LOGITS = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0]])


def _ce(row: list[float], target: int) -> float:
    return -row[target] + math.log(sum(math.exp(v) for v in row))


def test_pseudo_ce_ignores_unlabelled():
    labels = torch.tensor([0, 2, -1, -1], dtype=torch.int16)
    expected = (_ce([2.0, 0.0, 0.0], 0) + _ce([0.0, 1.0, 0.0], 2)) / 2
    assert pseudo_ce_loss(LOGITS, labels).item() == pytest.approx(expected, rel=1e-6)


def test_pseudo_ce_class_weights_give_the_weighted_mean():
    labels = torch.tensor([0, 2, -1, 1])
    weight = torch.tensor([0.5, 1.0, 2.0])
    terms = [(0.5, _ce([2.0, 0.0, 0.0], 0)), (2.0, _ce([0.0, 1.0, 0.0], 2)), (1.0, _ce([5.0, 5.0, 5.0], 1))]
    expected = sum(w * v for w, v in terms) / sum(w for w, _ in terms)
    assert pseudo_ce_loss(LOGITS, labels, weight).item() == pytest.approx(expected, rel=1e-6)


def test_inverse_sqrt_class_weights():
    # 1/sqrt(frequency) ∝ [1/10, 1/5, -, 1/2], scaled to mean 1 over the three present classes
    assert class_weights(np.array([100, 25, 0, 4])).tolist() == pytest.approx([0.375, 0.75, 0.0, 1.875])
    with pytest.raises(UserError, match="no labelled point"):
        class_weights(np.zeros(3))


def test_pseudo_ce_all_ignored_is_zero_with_graph():
    logits = LOGITS.clone().requires_grad_()
    loss = pseudo_ce_loss(logits, torch.full((4,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def _inputs():
    point = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [3.0, 0.0]], requires_grad=True)
    clip = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]], dtype=torch.float16)
    has = torch.tensor([True, True, False, True])
    labels = torch.tensor([1, 0, 2, -1])
    return point, clip, has, labels


def test_clip2scene_before_switch_epoch_uses_pseudo_labels_and_distils():
    point, clip, has, labels = _inputs()
    out = clip2scene_loss(LOGITS, point, clip, labels, has, epoch=9, switch_prob=1.0, distill_weight=0.5)
    ce = (_ce([2.0, 0.0, 0.0], 1) + _ce([0.0, 1.0, 0.0], 0) + _ce([0.0, 0.0, 3.0], 2)) / 3
    # cos: 1 (same direction), 1/√2, (point 2 has no feature), −1 (opposite)
    distill = ((1 - 1) + (1 - 1 / math.sqrt(2)) + (1 + 1)) / 3
    assert out["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert out["distill"].item() == pytest.approx(distill, rel=1e-6)
    assert out["total"].item() == pytest.approx(ce + 0.5 * distill, rel=1e-6)
    out["distill"].backward()
    assert point.grad[2].abs().sum() == 0 and point.grad[1].abs().sum() > 0


def test_clip2scene_switches_to_own_predictions_on_labelled_points():
    point, clip, has, labels = _inputs()
    out = clip2scene_loss(LOGITS, point, clip, labels, has, epoch=10, switch_prob=1.0)
    # Own predictions: 0, 1, 2 on the three labelled points; point 3 stays unsupervised.
    expected = (_ce([2.0, 0.0, 0.0], 0) + _ce([0.0, 1.0, 0.0], 1) + _ce([0.0, 0.0, 3.0], 2)) / 3
    assert out["ce"].item() == pytest.approx(expected, rel=1e-6)
    never = clip2scene_loss(LOGITS, point, clip, labels, has, epoch=50, switch_prob=0.0)
    assert never["ce"].item() == pytest.approx(pseudo_ce_loss(LOGITS, labels).item(), rel=1e-6)


def test_clip2scene_switch_frequency_follows_probability():
    point, clip, has, labels = _inputs()
    g = torch.Generator().manual_seed(0)
    own = pseudo_ce_loss(LOGITS, torch.tensor([0, 1, 2, -1])).item()
    switched = sum(
        clip2scene_loss(LOGITS, point, clip, labels, has, epoch=10, generator=g)["ce"].item() == pytest.approx(own)
        for _ in range(400)
    )
    assert 160 <= switched <= 240  # Binomial(400, 0.5): mean 200, sd 10
    # Same generator state, same decisions.
    a = [clip2scene_loss(LOGITS, point, clip, labels, has, 10, generator=torch.Generator().manual_seed(s))["ce"].item()
         for s in range(5)]
    b = [clip2scene_loss(LOGITS, point, clip, labels, has, 10, generator=torch.Generator().manual_seed(s))["ce"].item()
         for s in range(5)]
    assert a == b


def test_clip2scene_without_features_has_zero_distill():
    point, clip, _, labels = _inputs()
    out = clip2scene_loss(LOGITS, point, clip, labels, torch.zeros(4, dtype=torch.bool), epoch=0)
    assert out["distill"].item() == 0.0
    assert out["total"].item() == pytest.approx(out["ce"].item())
