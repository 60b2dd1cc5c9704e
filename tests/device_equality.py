"""A sparse backend on a device against the pure-PyTorch backend on CPU, in value and gradient,
on a MinkUNet (every conv the network has: 3x3x3 and 1x1x1 submanifold, k2/s2 down, transposed
up, plus BatchNorm, ReLU and concat) over a small two-scene batch.

Used by tests/test_backends.py and by benchmarks/gpu_check.py, which needs no pytest.
"""

from __future__ import annotations

import torch

from train.models import MinkUNet
from train.sparse import select_backend
from train.sparse.nn import conv_algorithm


def box_shell(lo: tuple[int, int, int], hi: tuple[int, int, int]) -> torch.Tensor:
    """Integer sites on the surface of the box [lo, hi] (inclusive), (N, 3)."""
    axes = [torch.arange(a, b + 1) for a, b in zip(lo, hi)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    return grid[((grid == torch.tensor(lo)) | (grid == torch.tensor(hi))).any(dim=1)]


def small_rooms() -> list[torch.Tensor]:
    """Two rooms of a few thousand surface voxels each (non-negative coordinates: torchsparse wants them)."""
    first = torch.unique(torch.cat([box_shell((0, 0, 0), (39, 29, 11)), box_shell((5, 5, 1), (14, 12, 6))]), dim=0)
    second = torch.unique(torch.cat([box_shell((0, 0, 0), (29, 35, 9)), box_shell((18, 20, 1), (25, 30, 8))]), dim=0)
    return [first, second + torch.tensor([21, 6, 3])]


def _run(model: MinkUNet, backend, feats: torch.Tensor, rooms: list[torch.Tensor], weight: torch.Tensor, grads: bool):
    x = backend.sparse_collate([(c, f) for c, f in zip(rooms, feats.split([len(c) for c in rooms]))])
    x.F.requires_grad_(grads)  # the collated features are a fresh leaf
    with torch.set_grad_enabled(grads):
        out = model(x)
        if not grads:
            return out, {}
        (out * weight).sum().backward()
    named = {"input": x.F.grad, **{name: p.grad for name, p in model.named_parameters()}}
    return out, named


def _relative(out: torch.Tensor, grads: dict, ref_out: torch.Tensor, ref_grads: dict) -> dict[str, float]:
    """Largest |difference| relative to the largest |reference value|: of the logits ("output"),
    of the input features' gradient ("input grad") and over all parameter gradients, each
    relative to its own tensor ("weight grads")."""

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.detach().cpu().double(), b.detach().cpu().double()
        return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))

    errors = {"output": rel(out, ref_out)}
    if ref_grads:
        errors["input grad"] = rel(grads["input"], ref_grads["input"])
        errors["weight grads"] = max(rel(grads[k], ref_grads[k]) for k in ref_grads if k != "input")
    return errors


def _inputs(dtype: torch.dtype) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    rooms = small_rooms()
    n = sum(len(c) for c in rooms)
    g = torch.Generator().manual_seed(0)
    return rooms, torch.randn(n, 4, generator=g, dtype=dtype), torch.randn(n, 5, generator=g, dtype=dtype)


def max_errors(backend: str, device: str, dtype: torch.dtype = torch.float64, grads: bool = True,
               width: float = 0.25, algorithm: str = "auto") -> dict[str, float]:
    """`_relative` errors of `backend` on `device` against the pure-PyTorch backend on CPU with
    the pairs algorithm; `algorithm` is the one the pure-PyTorch convolutions of `backend` use
    (auto: gather on a GPU)."""
    rooms, feats, weight = _inputs(dtype)
    torch.manual_seed(0)
    reference = MinkUNet(4, num_classes=5, width=width, backend="torch").to(dtype)
    ops = select_backend(backend, device)
    other = MinkUNet(4, num_classes=5, width=width, backend=ops).to(device, dtype)
    other.load_state_dict(reference.state_dict())
    with conv_algorithm("pairs"):
        ref_out, ref_grads = _run(reference, select_backend("torch"), feats, rooms, weight, grads)
    with conv_algorithm(algorithm):
        out, other_grads = _run(other, ops, feats.to(device), rooms, weight.to(device), grads)
    return _relative(out, other_grads, ref_out, ref_grads)


def amp_errors(backend: str, device: str, amp: torch.dtype, width: float = 1.0) -> dict[str, float]:
    """Relative L2 errors (|a - b| / |b| over the whole tensor) of a MinkUNet under `amp` autocast
    against the same network in full float32 (TF32 off), same device and backend: of the logits
    ("output"), the input gradient ("input grad") and all parameter gradients together ("weight
    grads"), for a cross-entropy loss. BatchNorm uses its running statistics: on random data,
    train-mode BatchNorm's backward magnifies rounding ~1000x (float32 against float64 too), which
    would hide what the convolutions' precision does."""
    rooms, feats, weight = _inputs(torch.float32)
    labels = weight.argmax(dim=1).to(device)
    torch.manual_seed(0)
    ops = select_backend(backend, device)
    model = MinkUNet(4, num_classes=5, width=width, backend=ops).to(device).eval()

    def run(enabled: bool) -> list[torch.Tensor]:
        model.zero_grad()
        x = ops.sparse_collate([(c, f) for c, f in zip(rooms, feats.to(device).split([len(c) for c in rooms]))])
        x.F.requires_grad_()
        with torch.autocast(torch.device(device).type, dtype=amp, enabled=enabled):
            out = model(x)
        torch.nn.functional.cross_entropy(out.float(), labels).backward()
        return [out.detach().double(), x.F.grad.double(), torch.cat([p.grad.flatten() for p in model.parameters()]).double()]

    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        reference, mixed = run(False), run(True)
    finally:
        torch.set_float32_matmul_precision(precision)
    return {name: float((a - b).norm() / b.norm()) for name, a, b in zip(("output", "input grad", "weight grads"), mixed, reference)}
