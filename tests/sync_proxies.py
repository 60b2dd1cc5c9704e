"""Counting the operations that stop the host until a GPU catches up, on a CPU.

On a GPU each of these waits for the device: reading a value on the host (`.item()`, `int()`,
`bool()`, `.tolist()`), and every operator whose output size depends on the data (`nonzero`,
`unique`, `masked_select`, boolean-mask indexing, CUDA's `bincount` and `repeat_interleave`
without an output size). On a CPU they cost nothing, but they run through the same dispatcher,
so a TorchDispatchMode can count them: a test that counts them per training step catches a sync
creeping back into the GPU path without a GPU. Copies between devices are not seen on a CPU
(nothing moves); `make gpu-check` counts the real synchronisations with CUDA's sync debug mode.

Used by tests/test_gpu_path.py and benchmarks/gpu_check.py (no pytest needed).
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
# Operators whose output size depends on the data (or that read a value on the host).
_DATA_DEPENDENT = {
    _aten._local_scalar_dense.default: "item",
    _aten.nonzero.default: "nonzero",
    _aten.masked_select.default: "masked_select",
    _aten._unique2.default: "unique",
    _aten.unique_dim.default: "unique",
    _aten.unique_consecutive.default: "unique",
    _aten.bincount.default: "bincount",
    _aten.repeat_interleave.Tensor: "repeat_interleave",
    _aten.equal.default: "equal",
}


def _has_bool_index(indices) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices if i is not None)


class SyncProxies(TorchDispatchMode):
    """Counts, by kind, the operations that would synchronise a GPU (see the module docstring);
    nothing while `_paused` > 0."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self._paused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self._paused:
            kind = _DATA_DEPENDENT.get(func)
            if func is _aten.repeat_interleave.Tensor and kwargs.get("output_size") is not None:
                kind = None
            if func in (_aten.index.Tensor, _aten.index_put.default, _aten.index_put_.default) and _has_bool_index(args[1]):
                kind = "boolean index"
            if kind is not None:
                self.counts[kind] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@contextmanager
def counting_tolist(mode: SyncProxies) -> Iterator[None]:
    """Count `Tensor.tolist()` too: it reads the values on the host without an operator."""
    original = torch.Tensor.tolist

    def tolist(self):
        if not mode._paused:
            mode.counts["tolist"] += 1
        return original(self)

    torch.Tensor.tolist = tolist
    try:
        yield
    finally:
        torch.Tensor.tolist = original


def count_step(step, optimizer: torch.optim.Optimizer, *args):
    """(step(*args), the sync proxies it made), the optimiser's own step left out (its step
    counters are host tensors where it is not fused)."""
    mode = SyncProxies()

    def pause(*_: object) -> None:
        mode._paused += 1

    def resume(*_: object) -> None:
        mode._paused -= 1

    handles = [optimizer.register_step_pre_hook(pause), optimizer.register_step_post_hook(resume)]
    try:
        with counting_tolist(mode), mode:
            result = step(*args)
    finally:
        for handle in handles:
            handle.remove()
    return result, mode
