"""MinkUNet and its heads on tiny synthetic scenes (pure-PyTorch backend, CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from shared.config import CLASSIFIER_HEADS
from train.models import DotTextHead, LinearHead, MinkUNet, ProjectionHead, TextHead, build_classifier
from train.models.heads import CLASSIFIERS
from train.sparse import SparseTensor, sparse_collate


@pytest.fixture(autouse=True)
def one_thread():
    """These scenes have a few hundred voxels: on a shared 2-core machine, thread hand-offs
    cost more than they save (7x slower under load), so run them single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def box_shell(lo: tuple[int, int, int], hi: tuple[int, int, int]) -> torch.Tensor:
    """Integer sites on the surface of the box [lo, hi] (inclusive), (N, 3)."""
    axes = [torch.arange(a, b + 1) for a, b in zip(lo, hi)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    on_face = ((grid == torch.tensor(lo)) | (grid == torch.tensor(hi))).any(dim=1)
    return grid[on_face]


def random_scene(seed: int) -> torch.Tensor:
    """A room shell with two random boxes inside: a few hundred surface voxels."""
    g = torch.Generator().manual_seed(seed)
    parts = [box_shell((0, 0, 0), (23, 19, 9))]
    for _ in range(2):
        lo = torch.randint(2, 8, (3,), generator=g)
        parts.append(box_shell(tuple(lo.tolist()), tuple((lo + torch.randint(2, 5, (3,), generator=g)).tolist())))
    return torch.unique(torch.cat(parts), dim=0)


def batch_of(scenes: list[torch.Tensor], channels: int = 4) -> SparseTensor:
    g = torch.Generator().manual_seed(0)
    return sparse_collate([(s, torch.randn(len(s), channels, generator=g)) for s in scenes])


def make_model(in_channels: int = 4, **kwargs) -> MinkUNet:
    torch.manual_seed(0)
    return MinkUNet(in_channels, width=0.25, backend="torch", **kwargs)


def test_forward_backward_shapes_per_input_voxel() -> None:
    x = batch_of([random_scene(1), random_scene(2)])
    model = make_model(num_classes=5)
    logits = model(x)
    assert model.out_channels == 24 and logits.shape == (len(x.C), 5)
    assert model.forward_features(x).shape == (len(x.C), 24)
    F.cross_entropy(logits, torch.randint(0, 5, (len(x.C),))).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_parameter_names_and_count_follow_spvnas() -> None:
    """SPVNAS checkpoints (torchsparse Conv3d `kernel`s) load by name; cr=1.0 has 21.7M parameters."""
    names = dict(MinkUNet(4, 19, backend="torch").named_parameters())
    assert names["stem.0.kernel"].shape == (27, 4, 32)
    assert names["stage1.0.net.0.kernel"].shape == (8, 32, 32)
    assert "stage1.1.downsample.0.kernel" not in names  # 32 -> 32: identity shortcut
    assert names["stage2.1.downsample.0.kernel"].shape == (32, 64)
    assert names["up1.0.net.0.kernel"].shape == (8, 256, 256)
    assert names["up4.1.0.downsample.0.kernel"].shape == (96 + 32, 96)
    assert round(sum(p.numel() for p in names.values()) / 1e6, 1) == 21.7


def test_deterministic_on_cpu() -> None:
    outputs, grads = [], []
    for _ in range(2):
        model = make_model(num_classes=3)
        logits = model(batch_of([random_scene(3), random_scene(4)]))
        logits.square().sum().backward()
        outputs.append(logits)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(grads[0], grads[1])


def test_scenes_in_a_batch_do_not_mix_in_eval_mode() -> None:
    a, b = random_scene(5), random_scene(6)
    model = make_model().eval()
    x = batch_of([a, b])
    with torch.no_grad():
        both = model(x)
        alone = model(SparseTensor(x.F[: len(a)], x.C[: len(a)]))
    torch.testing.assert_close(both[: len(a)], alone, rtol=1e-5, atol=1e-5)


def test_overfits_a_two_class_toy_scene() -> None:
    """Floor (class 0) versus a box standing on it (class 1). Constant input features, so
    the labelling must be learned from the sparse geometry alone."""
    floor = box_shell((0, 0, 0), (31, 31, 0))  # 2 x 2 sites at the deepest level (stride 16)
    box = box_shell((12, 12, 1), (19, 19, 7))
    coords = torch.cat([floor, box])
    labels = torch.cat([torch.zeros(len(floor)), torch.ones(len(box))]).long()
    x = sparse_collate([(coords, torch.ones(len(coords), 3))])
    model = make_model(in_channels=3, num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
    with torch.no_grad():  # batch statistics, as trained: 20 steps are too few for running stats
        accuracy = (model(x).argmax(dim=1) == labels).float().mean().item()
    assert accuracy > 0.95, accuracy


def test_text_head_cosine_logits_with_clip_temperature() -> None:
    torch.manual_seed(0)
    text = torch.randn(4, 16)
    head = TextHead(24, text)
    logits = head(torch.randn(50, 24))
    assert logits.shape == (50, 4)
    assert "text_embeddings" in dict(head.named_buffers()) and "text_embeddings" not in dict(head.named_parameters())
    assert math.isclose(head.logit_scale.exp().item(), 1 / 0.07, rel_tol=1e-6)
    assert logits.abs().max() <= 1 / 0.07 + 1e-4  # cosine in [-1, 1] times the scale
    torch.testing.assert_close(head.text_embeddings.norm(dim=1), torch.ones(4))


def test_text_head_equals_the_direct_cosine_in_value_and_gradient() -> None:
    torch.manual_seed(1)
    head = TextHead(24, torch.randn(5, 512)).double()
    feats = torch.randn(40, 24, dtype=torch.float64, requires_grad=True)
    direct = head.logit_scale.exp() * F.normalize(head.proj(feats), dim=1) @ head.text_embeddings.t()
    fast = head(feats)
    torch.testing.assert_close(fast, direct, rtol=1e-10, atol=1e-10)
    g_direct = torch.autograd.grad(direct.sum(), [feats, head.proj.weight, head.proj.bias])
    g_fast = torch.autograd.grad(fast.sum(), [feats, head.proj.weight, head.proj.bias])
    for a, b in zip(g_fast, g_direct):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_projection_and_linear_heads() -> None:
    feats = torch.randn(30, 24)
    emb = ProjectionHead(24)(feats)
    assert emb.shape == (30, 128)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(30))
    assert LinearHead(24, 7)(feats).shape == (30, 7)


def test_dot_text_head_is_the_plain_dot_product_with_the_text() -> None:
    """CLIP2Scene's logits: proj(f) · t, so scaling the projected feature scales the logits."""
    torch.manual_seed(2)
    text = torch.randn(5, 64)  # used as given, not normalised
    head = DotTextHead(24, text).double()
    feats = torch.randn(40, 24, dtype=torch.float64, requires_grad=True)
    logits = head(feats)
    torch.testing.assert_close(logits, head.proj(feats) @ text.double().t(), rtol=1e-10, atol=1e-10)
    g_fast = torch.autograd.grad(logits.square().sum(), [feats, head.proj.weight, head.proj.bias])
    g_direct = torch.autograd.grad((head.proj(feats) @ text.double().t()).square().sum(),
                                   [feats, head.proj.weight, head.proj.bias])
    for a, b in zip(g_fast, g_direct):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    with torch.no_grad():
        head.proj.weight.mul_(3.0)
        head.proj.bias.mul_(3.0)
    torch.testing.assert_close(head(feats), 3.0 * logits, rtol=1e-10, atol=1e-10)
    cosine = TextHead(24, text).double()
    before = cosine(feats)
    with torch.no_grad():
        cosine.proj.weight.mul_(3.0)
        cosine.proj.bias.mul_(3.0)
    torch.testing.assert_close(cosine(feats), before)  # the cosine head is scale-free: not CLIP2Scene's
    assert "text_embeddings" in dict(head.named_buffers()) and "text_embeddings" not in dict(head.named_parameters())


@pytest.mark.parametrize("kind, cls", [("linear", LinearHead), ("text", TextHead), ("dot-text", DotTextHead)])
def test_build_classifier_by_name(kind, cls) -> None:
    """`train.head` names the classifier (every name the config takes, and no other); the text
    heads take the class embeddings as given."""
    assert set(CLASSIFIERS) == set(CLASSIFIER_HEADS)
    text = torch.randn(7, 16)
    head = build_classifier(kind, 24, 7, text)
    assert type(head) is cls and head(torch.randn(30, 24)).shape == (30, 7)
    if kind != "linear":
        torch.testing.assert_close(head.text_embeddings, text if kind == "dot-text" else F.normalize(text, dim=1))
        with pytest.raises(ValueError, match=f"a '{kind}' classifier needs \\(7, D\\) class text embeddings"):
            build_classifier(kind, 24, 7, None)
