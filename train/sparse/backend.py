"""Backend selection: the same network code on torchsparse or on the pure-PyTorch ops.

A Backend is a plain record of the six names a network uses. Models take one (or its name)
and build from it, `ops.Conv3d(...)`, `ops.cat([a, b])`, so nothing is patched at import
time and two backends can live in one process (the equivalence test needs both).
Every backend takes coords batch-first (b, x, y, z) int32 (tensor.py); the torchsparse
adapter converts to the column order of the installed version at this boundary only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from train.sparse import nn as spnn
from train.sparse.quantize import sparse_collate
from train.sparse.tensor import SparseTensor

TORCHSPARSE_INSTALL = (
    "torchsparse is not on PyPI. On a CUDA machine install a matching wheel from the project "
    "(https://github.com/mit-han-lab/torchsparse, `python -c \"$(curl -fsSL "
    "https://raw.githubusercontent.com/mit-han-lab/torchsparse/master/install.py)\"`) or build it "
    "from source (needs libsparsehash-dev and nvcc matching torch's CUDA); or use --backend torch."
)


@dataclass(frozen=True)
class Backend:
    """The sparse vocabulary a network is written against."""

    name: str
    SparseTensor: Callable[..., Any]  # (feats (M, C), coords (M, 4) b-x-y-z int32, stride=1)
    Conv3d: Callable[..., torch.nn.Module]  # (in, out, kernel_size=3, stride=1, dilation=1, bias=False, transposed=False)
    BatchNorm: Callable[..., torch.nn.Module]
    ReLU: Callable[..., torch.nn.Module]
    cat: Callable[[list[Any]], Any]
    sparse_collate: Callable[..., Any]  # [(coords (N_i, 3), feats (N_i, C))] → batched tensor


TORCH = Backend("torch", SparseTensor, spnn.Conv3d, spnn.BatchNorm, spnn.ReLU, spnn.cat, sparse_collate)


def _import_torchsparse() -> Any | None:
    try:
        import torchsparse
        import torchsparse.nn
    except (ImportError, OSError):
        return None
    return torchsparse


def torchsparse_batch_first(version: str) -> bool:
    """torchsparse >= 2.1 orders coords (b, x, y, z); 1.4 and 2.0 put the batch index last."""
    major, minor = (int(v) for v in re.match(r"(\d+)\.(\d+)", version).groups())
    return (major, minor) >= (2, 1)


def _torchsparse_backend(ts: Any) -> Backend:
    batch_first = torchsparse_batch_first(ts.__version__)

    def make_tensor(feats: torch.Tensor, coords: torch.Tensor, stride: int = 1) -> Any:
        native = coords if batch_first else coords[:, [1, 2, 3, 0]]
        return ts.SparseTensor(feats, native.contiguous(), stride)

    return Backend(
        "torchsparse", make_tensor, ts.nn.Conv3d, ts.nn.BatchNorm, ts.nn.ReLU, ts.cat,
        partial(sparse_collate, tensor=make_tensor),
    )


def select_backend(name: str = "auto", device: torch.device | str | None = None) -> Backend:
    """"torch": the pure-PyTorch ops; "torchsparse": the real library (ImportError with install
    hints when it does not import); "auto": torchsparse when it imports and `device` (default:
    CUDA if available) is CUDA, else torch -- torchsparse >= 2.1 has no CPU kernel maps."""
    if name == "torch":
        return TORCH
    if name not in ("auto", "torchsparse"):
        raise ValueError(f"unknown sparse backend {name!r}; choose auto, torch or torchsparse")
    ts = _import_torchsparse()
    if name == "torchsparse":
        if ts is None:
            raise ImportError(f"--backend torchsparse was requested but torchsparse does not import. {TORCHSPARSE_INSTALL}")
        return _torchsparse_backend(ts)
    on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    return _torchsparse_backend(ts) if ts is not None and on_cuda else TORCH
