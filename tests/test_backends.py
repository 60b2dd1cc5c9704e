"""Sparse backends: the gather algorithm and other devices against the CPU pairs algorithm,
spconv against the pure-PyTorch backend, and the one backend path through training and evaluation.

spconv's tests run where it imports (its CPU build has no backward, so on CPU only values are
compared); the CUDA test runs where a GPU is present.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import train.engine.methods
from device_equality import max_errors
from shared.config import load_pipeline
from test_sparse import random_scene
from toy_store import make_toy_store
from train.cli import main
from train.engine.loop import Trainer
from train.sparse import TORCH, SparseTensor, nn as spnn, select_backend
from train.sparse.backend import _import_spconv, _import_torchsparse
from train.sparse.kernel_map import pack_coords

HAS_CUDA = torch.cuda.is_available()
HAS_SPCONV = _import_spconv()[0] is not None
needs_spconv = pytest.mark.skipif(not HAS_SPCONV, reason="spconv does not import (pip install spconv-cu126)")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_gather_algorithm_equals_pairs_on_minkunet() -> None:
    errors = max_errors("torch", "cpu", algorithm="gather")
    assert max(errors.values()) < 1e-12, errors


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_cuda_equals_cpu_in_float64() -> None:
    errors = max_errors("torch", "cuda")  # the gather algorithm on the GPU, pairs on the CPU
    assert max(errors.values()) < 1e-10, errors


def test_spconv_selection_and_what_runs_are_told() -> None:
    if not HAS_SPCONV:
        with pytest.raises(ImportError, match="pip install spconv-cu126"):
            select_backend("spconv")
        if _import_torchsparse() is None:  # auto on CUDA: torchsparse, else spconv, else torch
            assert select_backend("auto", device="cuda") is TORCH
    assert TORCH.describe("cpu") == "torch (pure PyTorch, pairs algorithm)"
    assert TORCH.describe("cuda") == "torch (pure PyTorch, gather algorithm)"


# ------------------------------------------------------------------------------------ spconv
@needs_spconv
@pytest.mark.parametrize(("k", "stride", "dilation"), [(3, 1, 1), (3, 1, 2), (1, 1, 1), (2, 2, 1)])
def test_spconv_convs_equal_pure_pytorch(k: int, stride: int, dilation: int) -> None:
    device = "cuda" if HAS_CUDA else "cpu"
    grads = HAS_CUDA  # spconv's CPU build has no backward
    dtype = torch.float32 if HAS_CUDA else torch.float64
    sp = select_backend("spconv", device)
    feats, coords = random_scene(seed=k + 10 * stride + 100 * dilation)  # negative coordinates too
    feats = feats.detach().to(dtype)
    ours = spnn.Conv3d(3, 4, k, stride=stride, dilation=dilation).to(dtype)
    theirs = sp.Conv3d(3, 4, k, stride=stride, dilation=dilation).to(device, dtype)
    theirs.load_state_dict(ours.state_dict())  # same parameter names and layout
    up_ours = spnn.Conv3d(4, 2, 2, stride=2, transposed=True).to(dtype)
    up_theirs = sp.Conv3d(4, 2, 2, stride=2, transposed=True).to(device, dtype)
    up_theirs.load_state_dict(up_ours.state_dict())
    results = []
    for conv, up, tensor, dev in ((ours, up_ours, SparseTensor, "cpu"), (theirs, up_theirs, sp.SparseTensor, device)):
        x = tensor(feats.to(dev).requires_grad_(grads), coords.to(dev))
        with torch.set_grad_enabled(grads):
            y = conv(x)
            order = torch.argsort(pack_coords(y.C.cpu()))  # spconv orders strided outputs its own way
            outs = [y.C.cpu()[order], y.F.cpu()[order]]
            if stride == 2:  # and back up: the sites of the input, in its order
                z = up(y)
                outs += [z.C.cpu(), z.F.cpu()]
            if grads:
                outs.append(torch.autograd.grad(sum(o.square().sum() for o in outs[1::2]), [x.F, conv.kernel])[0].cpu())
        results.append(outs)
    tol = dict(rtol=1e-2, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)  # TF32 on GPUs
    for a, b in zip(*results):
        if a.dtype == torch.int32:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(b, a, **tol)


@needs_spconv
def test_spconv_minkunet_equals_pure_pytorch() -> None:
    if HAS_CUDA:
        errors = max_errors("spconv", "cuda", dtype=torch.float32)
        assert max(errors.values()) < 1e-2, errors  # its float32 kernels may multiply in TF32
    else:
        errors = max_errors("spconv", "cpu", grads=False)
        assert errors["output"] < 1e-12, errors


@needs_spconv
def test_spconv_refuses_convs_it_would_place_differently() -> None:
    sp = select_backend("spconv", "cpu")
    with pytest.raises(ValueError, match="kernel_size == stride"):
        sp.Conv3d(2, 2, 3, stride=2)
    with pytest.raises(ValueError, match="kernel size 1 or 3"):
        sp.Conv3d(2, 2, 5)
    assert sp.describe("cuda").startswith("spconv 2.")


# ------------------------------------------------------------------------------- one path
class SpyTensor(SparseTensor):
    """A backend's own tensor type, recognisable at the network's input."""


def test_training_evaluation_and_attention_build_the_backends_tensor(tmp_path, monkeypatch) -> None:
    """Every network input is built by the selected backend: with a backend whose tensor is
    SpyTensor, the stem sees SpyTensors in fit, in validation during fit, and in eval."""
    spy = dataclasses.replace(TORCH, name="spy", SparseTensor=SpyTensor)
    monkeypatch.setattr(train.engine.methods, "select_backend", lambda name, device=None: spy)
    seen: list[type] = []
    overrides = {"train.epochs": 1, "train.batch_size": 1, "train.eval_every_epochs": 1}
    path = make_toy_store(tmp_path, method="hicl")
    trainer = Trainer(load_pipeline(path, overrides))
    trainer.model.backbone.stem.register_forward_pre_hook(lambda module, args: seen.append(type(args[0])))
    trainer.run()
    assert seen == [SpyTensor] * 3  # two training steps, one validation scene

    original = train.engine.methods.Method.__init__

    def hooked(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.backbone.stem.register_forward_pre_hook(lambda module, args: seen.append(type(args[0])))

    monkeypatch.setattr(train.engine.methods.Method, "__init__", hooked)
    seen.clear()
    assert main(["eval", str(path), "--render", "0", "--set", "train.epochs=1"]) == 0
    assert seen == [SpyTensor]
    report = (tmp_path / "run" / "eval" / "results.md").read_text()
    assert "sparse backend: spy" in report and "precision: fp32" in report
