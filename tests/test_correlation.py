"""Correlation learning with set prototypes (method.md §3–§5)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from shared.config import HICLConfig
from train.losses.correlation import HICLLoss, correlation_loss, set_prototypes
from train.reports.attention import correlation

Q2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
K3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
K3_LABEL = torch.tensor([0, 1, 0])


def test_hand_computed_two_queries_three_keys():
    # tau = 0.5: q0·k/τ = (2, 0, -2), q1·k/τ = (0, 2, 0).
    loss, p = correlation_loss(Q2, torch.tensor([0, 1]), K3, K3_LABEL, num_classes=3, tau=0.5)
    e = math.e
    p00 = (e**2 + e**-2) / (e**2 + 1 + e**-2)
    p11 = e**2 / (e**2 + 2)
    assert loss.item() == pytest.approx(-(math.log(p00) + math.log(p11)) / 2, rel=1e-6)
    expected = torch.tensor([[p00, 1 - p00, 0.0], [1 - p11, p11, 0.0]])
    torch.testing.assert_close(p, expected)
    assert not p.requires_grad


def test_exclude_and_skipped_queries():
    # q0 excludes k0: its class-0 mass is only k2. q1 has class 2: no key, skipped.
    loss, p = correlation_loss(Q2, torch.tensor([0, 2]), K3, K3_LABEL, num_classes=3, tau=0.5,
                               exclude=torch.tensor([0, -1]))
    e = math.e
    assert loss.item() == pytest.approx(-math.log(e**-2 / (1 + e**-2)), rel=1e-6)
    torch.testing.assert_close(p[0], torch.tensor([e**-2 / (1 + e**-2), 1 / (1 + e**-2), 0.0]))
    # Excluding the only key of class 1 removes class 1 from q1's distribution.
    _, p = correlation_loss(Q2, torch.tensor([0, 0]), K3, K3_LABEL, num_classes=3, tau=0.5,
                            exclude=torch.tensor([-1, 1]))
    torch.testing.assert_close(p[1], torch.tensor([1.0, 0.0, 0.0]))


def test_no_valid_query_gives_zero_that_keeps_graph():
    query = Q2.clone().requires_grad_()
    loss, _ = correlation_loss(query, torch.tensor([2, -1]), K3, K3_LABEL, num_classes=3)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(query.grad, torch.zeros_like(query))


def test_unlabelled_keys_ignored_and_chunking_exact():
    g = torch.Generator().manual_seed(0)
    query = F.normalize(torch.randn(37, 8, generator=g), dim=1).requires_grad_()
    keys = F.normalize(torch.randn(23, 8, generator=g), dim=1).requires_grad_()
    key_label = torch.randint(-1, 4, (23,), generator=g)
    label = torch.randint(0, 4, (37,), generator=g)
    exclude = torch.randint(-1, 23, (37,), generator=g)
    loss, p = correlation_loss(query, label, keys, key_label, num_classes=4, exclude=exclude)
    loss.backward()
    grads = (query.grad.clone(), keys.grad.clone())
    query.grad, keys.grad = None, None
    loss_c, p_c = correlation_loss(query, label, keys, key_label, num_classes=4, exclude=exclude, chunk_size=5)
    loss_c.backward()
    torch.testing.assert_close(loss_c, loss)
    torch.testing.assert_close(p_c, p)
    torch.testing.assert_close(query.grad, grads[0])
    torch.testing.assert_close(keys.grad, grads[1])

    # Reference: dense softmax over usable keys, in float64.
    sim = (query.detach().double() @ keys.detach().double().T) / 0.1
    mask = (key_label >= 0)[None, :].expand(37, -1).clone()
    rows = torch.nonzero(exclude >= 0).squeeze(1)
    mask[rows, exclude[rows]] = False
    attn = torch.softmax(sim.masked_fill(~mask, float("-inf")), dim=1)
    onehot = F.one_hot(key_label.clamp(min=0), 4).double() * (key_label >= 0)[:, None]
    ref_p = attn @ onehot
    torch.testing.assert_close(p.double(), ref_p, atol=1e-5, rtol=1e-5)
    own = ref_p.gather(1, label[:, None]).squeeze(1)
    ok = own > 0
    torch.testing.assert_close(loss.double(), -own[ok].log().mean(), atol=1e-5, rtol=1e-5)


def test_stable_at_tiny_tau():
    # At τ = 1e-3 the class-0 key is 2000 nats below the class-1 key: a softmax-then-sum
    # underflows to log 0, per-class logsumexp does not.
    loss, _ = correlation_loss(Q2[:1], torch.tensor([0]), K3[1:], torch.tensor([1, 0]), num_classes=2, tau=1e-3)
    assert loss.item() == pytest.approx(1000.0, rel=1e-6)  # (0 − (−1)) / τ


def test_set_prototypes():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0], [5.0, 5.0], [1.0, 1.0]], requires_grad=True)
    segment = torch.tensor([0, 0, 1, 3, -1, 4])  # set 2 has no point
    labels = torch.tensor([2, 2, 1, -1, 0, -1])
    protos, proto_labels = set_prototypes(emb, segment, labels, num_classes=3, num_sets=5)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(protos, torch.tensor([[s, s], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [s, s]]))
    assert proto_labels.tolist() == [2, 1, -1, -1, -1]
    protos[0, 0].backward()
    assert emb.grad[0].abs().sum() > 0 and emb.grad[4].abs().sum() == 0


def test_set_prototype_label_is_plurality_lowest_on_ties():
    emb = F.normalize(torch.ones(7, 2), dim=1)
    segment = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    labels = torch.tensor([3, 3, 1, 2, 0, 0, 2])
    _, proto_labels = set_prototypes(emb, segment, labels, num_classes=4, num_sets=2)
    assert proto_labels.tolist() == [3, 0]


def test_attention_figure_correlation_is_the_softmax_the_losses_train():
    attn = correlation(np.array([1.0, 0.0]), K3.numpy().astype(np.float64), tau=0.5)
    e = math.e
    np.testing.assert_allclose(attn, np.array([e**2, 1.0, e**-2]) / (e**2 + 1 + e**-2))


# --------------------------------------------------------------------------------------------
# HICLLoss
# --------------------------------------------------------------------------------------------
def _config(**kw) -> HICLConfig:
    """The correlation terms under test; the intra-set term only where a test asks for it."""
    return dataclasses.replace(HICLConfig(intra_set=False), **kw)


SETS = 6  # per scene of `_batch`


def _batch(seed: int = 0, points_per_scene: int = 60, scenes: int = 2, dim: int = 8, classes: int = 3):
    """Scenes of 6 sets each (10 points per set, ids 0..5 per scene); set j has class j % classes."""
    g = torch.Generator().manual_seed(seed)
    n = points_per_scene * scenes
    scene = torch.arange(scenes).repeat_interleave(points_per_scene)
    segment = (torch.arange(n) % points_per_scene) // 10
    labels = segment % classes
    labels[torch.rand(n, generator=g) < 0.1] = -1
    emb = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    return emb, labels, segment, scene


def _hicl(loss, emb, labels, segment, scene, epoch=0, scene_ids=None, sets=SETS, **kw):
    """The loss on a batch of per-scene set ids 0..sets-1, made batch-global as collate does."""
    scenes = int(scene.max()) + 1
    scene_ids = torch.arange(scenes) if scene_ids is None else scene_ids
    global_ids = torch.where(segment >= 0, scene * sets + segment, -1)
    return loss(emb, labels, global_ids, scene, scene_ids, epoch, num_sets=sets * scenes, **kw)


def test_intra_scene_matches_per_scene_correlation_loss():
    emb, labels, segment, scene = _batch()
    loss = HICLLoss(_config(inter_scene=False, feedback=False, queries_per_scene=1000, embed_dim=8), 3)
    terms = _hicl(loss, emb, labels, segment, scene)
    assert set(terms) == {"intra", "total"}
    total, count = 0.0, 0
    for b in range(2):
        m = scene == b
        protos, proto_labels = set_prototypes(emb[m], segment[m], labels[m], 3, SETS)
        q = m & (labels >= 0)
        value, _ = correlation_loss(emb[q], labels[q], protos, proto_labels, num_classes=3, tau=0.1)
        total += value.item() * int(q.sum())
        count += int(q.sum())
    assert terms["intra"].item() == pytest.approx(total / count, rel=1e-5)
    assert terms["total"].item() == pytest.approx(terms["intra"].item(), rel=1e-6)


def test_similar_positives_add_lookalike_sets_of_other_labels():
    """One scene of 6 sets (labels 0,1,2,0,1,2). Sets 0 and 1 share a CLIP feature and a normal,
    set 2 shares the feature but faces another way, sets 3-5 look different: a query of set 0
    counts set 1 as a positive as well, a query of set 1 counts set 0, nobody else changes."""
    emb, labels, segment, scene = _batch(scenes=1)
    emb.requires_grad_()
    looks_clip = torch.tensor([[1.0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1]])[segment]
    looks_normal = torch.tensor([[0.0, 0, 1], [0, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]])[segment]
    looks_clip[::7] = 0.0  # points no camera saw: not part of their set's mean CLIP feature
    cfg = _config(inter_scene=False, feedback=False, queries_per_scene=1000, embed_dim=8, similar_positives=True)
    terms = _hicl(HICLLoss(cfg, 3), emb, labels, segment, scene, looks=(looks_clip, looks_normal))
    protos, proto_labels = set_prototypes(emb.detach(), segment, labels, 3, SETS)
    expected = []
    for q in torch.nonzero(labels >= 0).squeeze(1).tolist():
        weights = torch.exp(protos @ emb[q].detach() / 0.1)
        positive = proto_labels == labels[q]
        if int(segment[q]) in (0, 1):
            positive[1 - int(segment[q])] = True
        expected.append(-math.log(weights[positive].sum() / weights.sum()))
    assert terms["intra"].item() == pytest.approx(sum(expected) / len(expected), rel=1e-5)
    terms["intra"].backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    off = _hicl(HICLLoss(dataclasses.replace(cfg, similar_positives=False), 3), emb, labels, segment, scene)
    assert terms["intra"].item() < off["intra"].item()
    with pytest.raises(ValueError, match="similar_positives needs"):
        _hicl(HICLLoss(cfg, 3), emb, labels, segment, scene)


def test_inter_scene_uses_other_scenes_then_the_bank():
    emb, labels, segment, scene = _batch()
    loss = HICLLoss(_config(intra_scene=False, feedback=False, queries_per_scene=1000, embed_dim=8), 3)
    terms = _hicl(loss, emb, labels, segment, scene, scene_ids=torch.tensor([10, 11]))
    # Keys of scene 0's queries: scene 1's prototypes only (the bank is empty).
    m0, m1 = scene == 0, scene == 1
    p1, l1 = set_prototypes(emb[m1], segment[m1], labels[m1], 3, SETS)
    p0, l0 = set_prototypes(emb[m0], segment[m0], labels[m0], 3, SETS)
    q0, q1 = m0 & (labels >= 0), m1 & (labels >= 0)
    v0, _ = correlation_loss(emb[q0], labels[q0], p1, l1, num_classes=3)
    v1, _ = correlation_loss(emb[q1], labels[q1], p0, l0, num_classes=3)
    n0, n1 = int(q0.sum()), int(q1.sum())
    assert terms["inter"].item() == pytest.approx((v0.item() * n0 + v1.item() * n1) / (n0 + n1), rel=1e-5)
    # The batch's 12 labelled prototypes went into the bank after the loss.
    keys, bank_labels, bank_scenes = loss.memory.get()
    assert keys.shape == (12, 8) and bank_labels.tolist() == l0.tolist() + l1.tolist()
    assert bank_scenes.tolist() == [10] * len(l0) + [11] * len(l1)

    # Next batch with one new scene: its inter keys are exactly the bank.
    emb2, labels2, segment2, scene2 = _batch(seed=1, scenes=1)
    terms2 = _hicl(loss, emb2, labels2, segment2, scene2, scene_ids=torch.tensor([12]))
    q = labels2 >= 0
    expected, _ = correlation_loss(emb2[q], labels2[q], keys, bank_labels, num_classes=3)
    assert terms2["inter"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_scene_never_meets_its_own_bank_entries():
    """Scene 7 seen again (a later epoch): its inter keys are the other scene's bank entries only,
    and its own earlier prototypes are not among them."""
    emb, labels, segment, scene = _batch()
    loss = HICLLoss(_config(intra_scene=False, feedback=False, queries_per_scene=1000, embed_dim=8), 3)
    _hicl(loss, emb, labels, segment, scene, scene_ids=torch.tensor([7, 8]))
    keys, bank_labels, bank_scenes = loss.memory.get()
    others = bank_scenes == 8
    assert 0 < int(others.sum()) < len(bank_scenes)
    emb2, labels2, segment2, scene2 = _batch(seed=1, scenes=1)
    terms = _hicl(loss, emb2, labels2, segment2, scene2, epoch=1, scene_ids=torch.tensor([7]))
    q = labels2 >= 0
    expected, _ = correlation_loss(emb2[q], labels2[q], keys[others], bank_labels[others], num_classes=3)
    assert terms["inter"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_bank_not_updated_in_eval_mode():
    emb, labels, segment, scene = _batch()
    loss = HICLLoss(_config(embed_dim=8, feedback=False), 3).eval()
    _hicl(loss, emb, labels, segment, scene)
    assert loss.memory.get()[0].shape[0] == 0


def test_feedback_after_warmup_matches_kl():
    emb, labels, segment, scene = _batch(scenes=1)
    logits = torch.randn(emb.shape[0], 3, generator=torch.Generator().manual_seed(3), requires_grad=True)
    loss = HICLLoss(_config(inter_scene=False, queries_per_scene=1000, embed_dim=8, feedback_warmup_epochs=10), 3)
    assert "feedback" not in _hicl(loss, emb, labels, segment, scene, epoch=9, logits=logits)
    terms = _hicl(loss, emb, labels, segment, scene, epoch=10, logits=logits)
    assert set(terms) == {"intra", "feedback", "total"}
    protos, proto_labels = set_prototypes(emb, segment, labels, 3, SETS)
    q = labels >= 0
    _, p = correlation_loss(emb[q], labels[q], protos, proto_labels, num_classes=3)
    log_q = torch.log_softmax(logits[q], dim=1)
    expected = (p * (p.clamp(min=1e-30).log() - log_q)).sum(1).mean()
    assert terms["feedback"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["total"].item() == pytest.approx(terms["intra"].item() + expected.item(), rel=1e-5)
    terms["feedback"].backward()
    assert logits.grad.abs().sum() > 0


def test_exclude_own_set_skips_queries_without_other_sets_of_their_class():
    # One scene, one set per class: with the own set excluded no query has a positive key.
    emb = F.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    segment = torch.arange(30) // 10
    labels = segment.clone()
    scene = torch.zeros(30, dtype=torch.long)
    on = HICLLoss(_config(inter_scene=False, feedback=False, exclude_own_set=True, embed_dim=8), 3)
    off = HICLLoss(_config(inter_scene=False, feedback=False, embed_dim=8), 3)
    assert _hicl(on, emb, labels, segment, scene, sets=3)["intra"].item() == 0.0
    assert _hicl(off, emb, labels, segment, scene, sets=3)["intra"].item() > 0.0


def test_queries_per_scene_caps_and_samples_labelled_points():
    emb, labels, segment, scene = _batch(points_per_scene=200)
    labels[scene == 1] = -1
    labels[torch.nonzero(scene == 1)[:5, 0]] = 2  # scene 1: only five labelled points
    loss = HICLLoss(_config(queries_per_scene=16, embed_dim=8), 3)
    generator = torch.Generator().manual_seed(0)
    points, used = loss._sample_queries(labels, scene, 2, generator)
    assert points.shape == used.shape == (32,) and used.tolist() == [True] * 16 + [True] * 5 + [False] * 11
    first = points[:16]
    assert len(set(first.tolist())) == 16 and bool((scene[first] == 0).all()) and bool((labels[first] >= 0).all())
    assert sorted(points[16:21].tolist()) == torch.nonzero(labels * (scene == 1) == 2)[:, 0].tolist()
    again, _ = loss._sample_queries(labels, scene, 2, generator)
    assert not torch.equal(again[:16], first)  # a new draw per step


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: threads only add contention on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _class_cosines(emb: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean cosine over pairs of labelled points of the same class and of different classes."""
    e = F.normalize(emb.detach(), dim=1)
    sim = e @ e.T
    labelled = (labels[:, None] >= 0) & (labels[None, :] >= 0)
    same = labelled & (labels[:, None] == labels[None, :])
    same.fill_diagonal_(False)
    return sim[same].mean().item(), sim[labelled & (labels[:, None] != labels[None, :])].mean().item()


def test_sgd_on_free_embeddings_lowers_loss_and_compacts_classes():
    _, labels, segment, scene = _batch(seed=2, points_per_scene=90, scenes=3)
    raw = torch.randn(labels.shape[0], 8, generator=torch.Generator().manual_seed(5), requires_grad=True)
    loss = HICLLoss(_config(feedback=False, queries_per_scene=64, embed_dim=8, memory_size=64), 3)
    opt = torch.optim.SGD([raw], lr=10.0)
    g = torch.Generator().manual_seed(0)
    same_before, other_before = _class_cosines(raw, labels)
    history = []
    for _ in range(60):
        terms = _hicl(loss, F.normalize(raw, dim=1), labels, segment, scene, sets=9, generator=g)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        history.append(terms["total"].item())
    same_after, other_after = _class_cosines(raw, labels)
    assert history[-1] < 0.05 * history[0]
    # Same-class pairs move together, different-class pairs apart. (τ = 0.1 saturates the loss
    # once same-class keys lead by a margin, so classes separate rather than collapse.)
    assert same_after > same_before + 0.1
    assert other_after < other_before - 0.05


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operator produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_memory_linear_in_points_no_query_by_point_tensors():
    n, dim, scenes, queries = 200_000, 16, 2, 64
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(n, dim, generator=g, requires_grad=True)
    scene = torch.arange(scenes).repeat_interleave(n // scenes)
    segment = torch.randint(0, 1000, (n,), generator=g)
    labels = torch.randint(-1, 20, (n,), generator=g)
    logits = torch.randn(n, 20, generator=g, requires_grad=True)
    loss = HICLLoss(_config(queries_per_scene=queries, embed_dim=dim, memory_size=4096, feedback_warmup_epochs=0), 20)
    with _LargestTensor() as probe:
        terms = _hicl(loss, F.normalize(raw, dim=1), labels, segment, scene, sets=1000, logits=logits, generator=g)
        terms["total"].backward()
    assert set(terms) == {"intra", "inter", "feedback", "total"}
    # Biggest tensors are per-point (N × 20 logits, N × D embeddings); a (Q·scenes) × N tensor
    # would be 128 × 200k = 25.6M elements.
    assert probe.largest == n * 20
    assert all(torch.isfinite(v) for v in terms.values())


def test_intra_set_term_is_mean_distance_to_own_prototype():
    emb = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.2]]), dim=1)
    segment = torch.tensor([0, 0, 1, -1])
    labels = torch.tensor([0, 0, 1, 1])
    scene = torch.zeros(4, dtype=torch.long)
    loss = HICLLoss(_config(intra_set=True, intra_scene=False, inter_scene=False, feedback=False), num_classes=2)
    terms = _hicl(loss, emb, labels, segment, scene, sets=2)
    # set 0: prototype at 45 degrees, both points at cos = 1/sqrt(2); set 1: cos = 1; point 3 in no set
    expected = (2 * (1 - 2 ** -0.5) + 0.0) / 3
    torch.testing.assert_close(terms["set"], torch.tensor(expected))
    torch.testing.assert_close(terms["total"], torch.tensor(expected))
