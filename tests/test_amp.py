"""Mixed precision on CPU autocast (the GPU's code path): the sparse convolutions sum offsets in
float32, the losses run in float32 under autocast, and every method trains and evaluates under
bfloat16 (and float16 with gradient scaling)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from shared.config import ConfigError, load_pipeline
from test_correlation import _batch, _config
from test_minkunet import batch_of, make_model, random_scene
from toy_store import make_toy_store
from train.amp import resolve_precision
from train.cli import main
from train.losses import HICLLoss, clip2scene_loss, pseudo_ce_loss
from train.engine.loop import Trainer
from train.sparse import TORCH, SparseTensor, nn as spnn
from train.sparse.nn import conv_algorithm

ALGORITHMS = ["pairs", "gather"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_convolution_sums_offsets_in_float32(algorithm: str) -> None:
    """27 products of 1.015625 (exact in bfloat16) into one output: summed in float32 that is
    27.421875, rounded once to bfloat16's 27.375; a bfloat16 running sum would drop the
    fractions once it passes 16 and end at 27.125."""
    axis = torch.arange(3)
    block = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    coords = torch.cat([torch.zeros(27, 1, dtype=torch.int64), block], dim=1).int()
    conv = spnn.Conv3d(1, 1, 3)
    conv.kernel.data.fill_(1.015625)
    with conv_algorithm(algorithm), torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(SparseTensor(torch.ones(27, 1), coords)).F
    centre = int(torch.nonzero((coords[:, 1:] == 1).all(dim=1)))
    assert out.dtype == torch.bfloat16
    assert out[centre].item() == torch.tensor(27.421875).bfloat16().item() == 27.375


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_weight_gradient_sums_rows_in_float32(algorithm: str) -> None:
    """A conv's weight gradient sums over every row: 5000 rows of input 1 and output gradient 16
    give 80000 at the centre offset, past float16's largest value (65504), where a float16 sum
    overflows to inf; summed in float32 it is exact."""
    coords = torch.cat([torch.zeros(5000, 1), torch.arange(5000)[:, None] * 3, torch.zeros(5000, 2)], dim=1).int()
    conv = spnn.Conv3d(1, 1, 3)
    x = torch.ones(5000, 1, dtype=torch.float16, requires_grad=True)
    with conv_algorithm(algorithm):
        out = conv(SparseTensor(x, coords)).F
    out.backward(torch.full_like(out, 16.0))
    centre = len(conv.kernel) // 2
    assert conv.kernel.grad[centre].item() == 80000.0
    assert torch.count_nonzero(conv.kernel.grad) == 1  # no site has a neighbour: spaced 3 apart on x


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_minkunet_trains_under_bfloat16_autocast(algorithm: str) -> None:
    x = batch_of([random_scene(1), random_scene(2)])
    labels = torch.randint(0, 5, (len(x.C),), generator=torch.Generator().manual_seed(0))
    with conv_algorithm(algorithm):
        model = make_model(num_classes=5)
        reference = model(x)
        F.cross_entropy(reference, labels).backward()
        ref_grad = torch.cat([p.grad.flatten() for p in model.parameters()])
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert logits.dtype == torch.bfloat16 and torch.isfinite(grad).all()
    # bfloat16 keeps ~3 significant digits per layer: logits agree to a few percent, and the
    # gradient direction about as well as a plain 20-layer MLP with BatchNorm manages (0.7-0.8).
    assert ((logits.float() - reference).norm() / reference.norm()).item() < 0.1
    assert F.cosine_similarity(grad, ref_grad, dim=0).item() > 0.7


def test_losses_run_in_float32_under_autocast() -> None:
    """Under float16 autocast every loss gives exactly its float32 value: no float16 matmul of
    similarities, no float32-minimum fill overflowing float16 (similar_positives)."""
    emb, labels, segment, scene = _batch(scenes=2)
    looks = (F.normalize(torch.randn(len(emb), 5), dim=1), F.normalize(torch.randn(len(emb), 3), dim=1))
    logits = torch.randn(len(emb), 3)
    cfg = _config(intra_set=True, queries_per_scene=1000, embed_dim=8, similar_positives=True,
                  similar_visual=-1.0, similar_normal=-1.0, feedback_warmup_epochs=0, exclude_own_set=True)

    def losses() -> dict[str, torch.Tensor]:
        terms = HICLLoss(cfg, 3)(emb, labels, scene * 6 + segment, scene, torch.arange(2), 0, num_sets=12,
                                 logits=logits, looks=looks, generator=torch.Generator().manual_seed(0))
        pair_voxel = torch.arange(len(emb))[labels >= 0]
        c2s = clip2scene_loss(logits, looks[0], pair_voxel, labels[pair_voxel], epoch=1, switch_epoch=0,
                              patch_feat=looks[0].flip(0), pair_patch=pair_voxel, text=F.normalize(looks[0][:3], dim=1),
                              pair_group=pair_voxel // 4, generator=torch.Generator().manual_seed(0))
        return {**terms, "ce": pseudo_ce_loss(logits, labels), **{f"c2s {k}": v for k, v in c2s.items()}}

    full = losses()
    assert set(full) >= {"set", "intra", "inter", "feedback"}
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cpu", dtype=dtype):
            mixed = losses()
        for name, value in full.items():
            assert mixed[name].dtype == torch.float32 and torch.equal(mixed[name], value), (dtype, name)


def test_precision_settings() -> None:
    assert resolve_precision("auto", "cpu", TORCH).dtype is None  # off on CPU unless asked
    bf16 = resolve_precision("bf16", "cpu", TORCH)
    assert bf16.dtype == torch.bfloat16 and not bf16.grad_scaler().is_enabled()
    assert resolve_precision("fp16", "cpu", TORCH).grad_scaler().is_enabled()
    assert resolve_precision("off", "cpu", TORCH).name == "fp32"
    half_only = dataclasses.replace(TORCH, name="spconv", amp_dtype=torch.float16)
    with pytest.raises(ConfigError, match="spconv backend computes in fp16"):
        resolve_precision("bf16", "cpu", half_only)


def test_amp_setting_is_checked(tmp_path) -> None:
    with pytest.raises(ConfigError, match="'train.amp' = 'half' must be one of auto, off, fp16, bf16"):
        load_pipeline(make_toy_store(tmp_path), {"train.amp": "half"})


HICL_ALL = {"train.hicl.similar_positives": True, "train.hicl.feedback_warmup_epochs": 0,
            "train.hicl.exclude_own_set": True, "train.head": "text"}


@pytest.mark.parametrize(("method", "amp", "extra"), [
    ("hicl", "bf16", HICL_ALL),
    ("clip2scene", "bf16", {"train.clip2scene.switch_epoch": 0, "train.clip2scene.switch_prob": 1.0}),
    ("pseudo-ce", "bf16", {"train.class_weights": "inverse-sqrt"}),
    ("gt", "bf16", {}),
    ("gt", "fp16", {}),
])
def test_every_method_fits_and_evaluates_under_autocast(tmp_path, method: str, amp: str, extra: dict) -> None:
    overrides = {"train.amp": amp, "train.epochs": 2, "train.batch_size": 2, "train.hicl.queries_per_scene": 64,
                 **extra}
    path = make_toy_store(tmp_path, method=method)
    trainer = Trainer(load_pipeline(path, overrides))
    dtypes = []
    trainer.model.backbone.stem[0].register_forward_hook(lambda module, args, out: dtypes.append(out.F.dtype))
    losses = trainer.run()
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert dtypes == [getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[amp])] * 2
    grads = [p.grad for p in trainer.method.parameters() if p.grad is not None]
    assert len(grads) > 10 and all(torch.isfinite(g).all() for g in grads)
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    if method in ("hicl", "gt"):
        sets = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in overrides.items()]
        assert main(["eval", str(path), "--amp", amp, "--render", "0", *(a for s in sets for a in ("--set", s))]) == 0
        report = (tmp_path / "run" / "eval" / "results.md").read_text()
        assert f"precision: {amp}" in report and "sparse backend: torch (pure PyTorch, pairs algorithm)" in report
