"""Backend selection: the same network code on torchsparse, spconv or the pure-PyTorch ops.

A Backend is a plain record of the six names a network uses (plus its version and the dtype
its kernels compute in under autocast). Models take one (or its name)
and build from it, `ops.Conv3d(...)`, `ops.cat([a, b])`, so nothing is patched at import
time and two backends can live in one process (the equivalence test needs both).
Every backend takes coords batch-first (b, x, y, z) int32 (tensor.py); the torchsparse
adapter converts to the column order of the installed version at this boundary only, the
spconv adapter (spconv_adapter.py) to its non-negative indices.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from shared.config import SPARSE_BACKENDS
from train.sparse import nn as spnn
from train.sparse.quantize import sparse_collate
from train.sparse.tensor import SparseTensor, check_devices

SPCONV_INSTALL = (
    "install the spconv wheel built for your CUDA from PyPI, e.g. `pip install spconv-cu126` (CUDA 12.6; "
    "cu118, cu121, cu124 exist too; plain `spconv` is the CPU build, which has no backward); or use --backend torch."
)
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
    version: str = ""
    amp_dtype: torch.dtype | None = None  # what its kernels cast to under autocast; None: autocast's dtype

    def describe(self, device: torch.device | str) -> str:
        """What a run log and an eval report say about the backend on `device`."""
        if self is TORCH:
            return f"torch (pure PyTorch, {spnn.algorithm_for(torch.device(device))} algorithm)"
        return f"{self.name} {self.version}"


TORCH = Backend("torch", SparseTensor, spnn.Conv3d, spnn.BatchNorm, spnn.ReLU, spnn.cat, sparse_collate,
                version=torch.__version__)


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
        check_devices(feats, coords)
        native = coords if batch_first else coords[:, [1, 2, 3, 0]]
        return ts.SparseTensor(feats, native.contiguous(), stride)

    # torchsparse's convolutions cast to float16 under autocast (1.4/2.0); 2.1 has float16 kernels.
    return Backend(
        "torchsparse", make_tensor, ts.nn.Conv3d, ts.nn.BatchNorm, ts.nn.ReLU, ts.cat,
        partial(sparse_collate, tensor=make_tensor), version=ts.__version__, amp_dtype=torch.float16,
    )


def _import_spconv() -> tuple[Any | None, str]:
    """(spconv, "") or (None, why it does not import); its CUDA libraries can fail in many ways."""
    try:
        import spconv
        import spconv.pytorch  # noqa: F401
    except Exception as e:  # noqa: BLE001 -- ImportError, OSError, RuntimeError from cumm's CUDA setup
        return None, f"{type(e).__name__}: {e}"
    return spconv, ""


def _spconv_backend(spconv: Any) -> Backend:
    from train.sparse import spconv_adapter as adapter

    return Backend(
        "spconv", adapter.SpconvTensor, adapter.Conv3d, spnn.BatchNorm, spnn.ReLU, spnn.cat,
        partial(sparse_collate, tensor=adapter.SpconvTensor), version=spconv.__version__, amp_dtype=torch.float16,
    )


def select_backend(name: str = "auto", device: torch.device | str | None = None) -> Backend:
    """"torch": the pure-PyTorch ops; "torchsparse" / "spconv": those libraries (ImportError with
    install hints when they do not import); "auto": on CUDA (`device`, default: CUDA if
    available) torchsparse, else spconv, else torch; on CPU torch -- torchsparse >= 2.1 has no
    CPU kernel maps and spconv's CPU build no backward."""
    if name == "torch":
        return TORCH
    if name not in SPARSE_BACKENDS:
        raise ValueError(f"unknown sparse backend {name!r}; choose one of {', '.join(SPARSE_BACKENDS)}")
    on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if name in ("torchsparse", "auto") and (name == "torchsparse" or on_cuda):
        ts = _import_torchsparse()
        if ts is not None:
            return _torchsparse_backend(ts)
        if name == "torchsparse":
            raise ImportError(f"--backend torchsparse was requested but torchsparse does not import. {TORCHSPARSE_INSTALL}")
    if name == "spconv" or on_cuda:
        sp, why = _import_spconv()
        if sp is not None:
            return _spconv_backend(sp)
        if name == "spconv":
            raise ImportError(f"--backend spconv was requested but spconv does not import ({why}). {SPCONV_INSTALL}")
    return TORCH
