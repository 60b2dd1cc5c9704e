"""Baseline losses: pseudo-label CE and CLIP2Scene's label-free losses on pixel-point pairs."""

from __future__ import annotations

import math

import pytest
import torch

from train.losses.baselines import (
    clip2scene_loss,
    pair_ce_loss,
    pair_distill_loss,
    pseudo_ce_loss,
    spatial_temporal_loss,
)

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


def test_pseudo_ce_all_ignored_is_zero_with_graph():
    logits = LOGITS.clone().requires_grad_()
    loss = pseudo_ce_loss(logits, torch.full((4,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# Three voxels (rows of LOGITS[:3]); voxel 0 is seen by two views whose pixels disagree.
PAIR_VOXEL = torch.tensor([0, 0, 1, 2])
PAIR_LABEL = torch.tensor([1, 0, 2, 2])


def test_pair_ce_counts_every_pair_with_its_own_label():
    # voxel 0 contributes two terms (labels 1 and 0), voxels 1 and 2 one each; voxel 3 none
    expected = (_ce([2.0, 0.0, 0.0], 1) + _ce([2.0, 0.0, 0.0], 0) + _ce([0.0, 1.0, 0.0], 2) + _ce([0.0, 0.0, 3.0], 2)) / 4
    assert pair_ce_loss(LOGITS, PAIR_VOXEL, PAIR_LABEL).item() == pytest.approx(expected, rel=1e-6)
    weight = torch.tensor([0.5, 1.0, 2.0])
    assert pair_ce_loss(LOGITS, PAIR_VOXEL, PAIR_LABEL, weight).item() == pytest.approx(
        torch.nn.functional.cross_entropy(LOGITS[PAIR_VOXEL], PAIR_LABEL, weight=weight).item(), rel=1e-6)
    logits = LOGITS.clone().requires_grad_()
    pair_ce_loss(logits, PAIR_VOXEL, PAIR_LABEL).backward()
    assert logits.grad[3].abs().sum() == 0 and logits.grad[0].abs().sum() > 0
    empty = torch.zeros(0, dtype=torch.long)
    assert pair_ce_loss(LOGITS, empty, empty).item() == 0.0


def test_pair_distill_is_the_mean_over_pairs_of_one_minus_cosine():
    features = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [3.0, 0.0]], requires_grad=True)
    patches = torch.tensor([[2.0, 0.0], [0.0, 5.0], [0.0, -1.0]], dtype=torch.float16)
    pair_patch = torch.tensor([0, 1, 0, 2])  # voxel 0 meets two different pixel features
    # cos: 1 (same direction), 0 (orthogonal), 1/√2, −1 (opposite)
    expected = ((1 - 1) + (1 - 0) + (1 - 1 / math.sqrt(2)) + (1 + 1)) / 4
    loss = pair_distill_loss(features, PAIR_VOXEL, patches, pair_patch)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert features.grad[3].abs().sum() == 0 and features.grad[1].abs().sum() > 0


def test_clip2scene_switches_only_from_the_switch_epoch():
    before = clip2scene_loss(LOGITS, LOGITS, PAIR_VOXEL, PAIR_LABEL, epoch=9, switch_epoch=10, switch_prob=1.0)
    assert before["ce"].item() == pytest.approx(pair_ce_loss(LOGITS, PAIR_VOXEL, PAIR_LABEL).item(), rel=1e-6)
    after = clip2scene_loss(LOGITS, LOGITS, PAIR_VOXEL, PAIR_LABEL, epoch=10, switch_epoch=10, switch_prob=1.0)
    # every pair's target is its voxel's own argmax: 0, 0, 1, 2
    own = pair_ce_loss(LOGITS, PAIR_VOXEL, torch.tensor([0, 0, 1, 2])).item()
    assert after["ce"].item() == pytest.approx(own, rel=1e-6) and own < before["ce"].item()
    never = clip2scene_loss(LOGITS, LOGITS, PAIR_VOXEL, PAIR_LABEL, epoch=50, switch_prob=0.0)
    assert never["ce"].item() == pytest.approx(before["ce"].item(), rel=1e-6)
    assert set(before) == {"ce", "total"} and before["total"] is before["ce"]


def test_clip2scene_switch_frequency_follows_probability():
    own = pair_ce_loss(LOGITS, PAIR_VOXEL, torch.tensor([0, 0, 1, 2])).item()
    g = torch.Generator().manual_seed(0)
    switched = sum(
        clip2scene_loss(LOGITS, LOGITS, PAIR_VOXEL, PAIR_LABEL, epoch=10, generator=g)["ce"].item() == pytest.approx(own)
        for _ in range(400)
    )
    assert 160 <= switched <= 240  # Binomial(400, 0.5): mean 200, sd 10
    runs = [[clip2scene_loss(LOGITS, LOGITS, PAIR_VOXEL, PAIR_LABEL, 10, generator=torch.Generator().manual_seed(s))
             ["ce"].item() for s in range(5)] for _ in range(2)]
    assert runs[0] == runs[1]  # same generator state, same decisions


def test_spatial_temporal_term_on_a_hand_made_group():
    """One super-node of two members with different features, and one of a single member."""
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], requires_grad=True)
    # node 7: pairs on voxels 0 and 1, the first pixel says class 1; node 3: voxel 2, class 0
    loss = spatial_temporal_loss(features, torch.tensor([0, 2, 1]), torch.tensor([1, 0, 0]), torch.tensor([7, 3, 7]), text)
    # node 7: attention softmax(f·t1) = softmax(0, 2); fusion z = a0 (1, 0) + a1 (0, 2)
    a0, a1 = 1 / (1 + math.exp(2)), math.exp(2) / (1 + math.exp(2))
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    node7 = [1 - sig(a0 * 1.0), 1 - sig(a1 * 4.0)]  # z·f0 = a0, z·f1 = 4 a1
    node3 = [1 - sig(2.0)]  # a lone member: z = f, z·f = |f|² = 2
    assert loss.item() == pytest.approx(sum(node7 + node3) / 3, rel=1e-6)
    loss.backward()
    assert features.grad.abs().sum(dim=1).gt(0).all()
    # members beyond max_members are left out: with one member per node, node 7 keeps voxel 0 only
    capped = spatial_temporal_loss(features, torch.tensor([0, 2, 1]), torch.tensor([1, 0, 0]), torch.tensor([7, 3, 7]),
                                   text, max_members=1)
    assert capped.item() == pytest.approx(((1 - sig(1.0)) + (1 - sig(2.0))) / 2, rel=1e-6)


def test_losses_stay_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 20, generator=g) * 8
    features = torch.randn(500, 64, generator=g)
    voxel = torch.randint(0, 500, (3000,), generator=g)
    label = torch.randint(0, 20, (3000,), generator=g)
    patches = torch.randn(200, 64, generator=g)
    patch = torch.randint(0, 200, (3000,), generator=g)
    text = torch.nn.functional.normalize(torch.randn(20, 64, generator=g), dim=1)
    args = dict(patch_feat=patches, pair_patch=patch, text=text, pair_group=voxel // 3)
    exact = clip2scene_loss(logits, features, voxel, label, 0, **args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = clip2scene_loss(logits.bfloat16(), features.bfloat16(), voxel, label, 0, **args)
    for name in ("ce", "distill", "spatial_temporal"):
        assert low[name].dtype == torch.float32
        # bf16 inputs carry ~3 significant digits; the losses themselves add no more error
        assert low[name].item() == pytest.approx(exact[name].item(), rel=2e-2), name
