"""Kernel maps from sorted int64 coordinate keys: which input feeds which output per offset.

A coordinate (b, x, y, z) packs into one int64 key, (b << 51) | (x' << 34) | (y' << 17) | z'
with x' = x + 2**16 etc. (layout and ranges: tensor.py). Keys sort like (b, x, y, z) and,
because the coordinate range leaves one spare bit per axis, key(c + d) = key(c) + key_delta(d)
for any kernel offset d: a neighbour query is one int64 add, a lookup one `searchsorted` into
the sorted input keys plus an equality test. No hash table, runs on any device.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from train.sparse.tensor import COORD_LIMIT, TensorCache

_AXIS_BITS = 17
_AXIS_BIAS = 1 << 16
_AXIS_MASK = (1 << _AXIS_BITS) - 1
_SHIFTS = (3 * _AXIS_BITS, 2 * _AXIS_BITS, _AXIS_BITS, 0)


def pack_coords(coords: torch.Tensor) -> torch.Tensor:
    """(M, 4) (b, x, y, z) → (M,) int64 keys, ordered like the coordinate tuples."""
    c = coords.long()
    keys = c[:, 0] << _SHIFTS[0]
    for axis in (1, 2, 3):
        keys = keys | ((c[:, axis] + _AXIS_BIAS) << _SHIFTS[axis])
    return keys


def unpack_keys(keys: torch.Tensor) -> torch.Tensor:
    """Inverse of pack_coords: (M,) int64 → (M, 4) int32."""
    cols = [keys >> _SHIFTS[0]] + [((keys >> _SHIFTS[a]) & _AXIS_MASK) - _AXIS_BIAS for a in (1, 2, 3)]
    return torch.stack(cols, dim=1).int()


def kernel_offsets(kernel_size: int, dilation: int = 1) -> torch.Tensor:
    """(K, 3) int64 offsets in units of the tensor stride, in torchsparse's order.

    Per axis the range is [-(k // 2) .. k // 2] for odd k and [0 .. k - 1] for k = 2 (in
    general ceil-centred: range((-k) // 2 + 1, k // 2 + 1)); odd kernels enumerate z-outer,
    x-inner (MinkowskiEngine's layout), even ones x-outer, so (K, Cin, Cout) weights exchange
    with torchsparse as they are.
    """
    r = torch.arange((-kernel_size) // 2 + 1, kernel_size // 2 + 1) * dilation
    a, b, c = torch.meshgrid(r, r, r, indexing="ij")
    xyz = (c, b, a) if kernel_size % 2 == 1 else (a, b, c)
    return torch.stack(xyz, dim=-1).reshape(-1, 3)


@functools.lru_cache(maxsize=None)
def key_deltas(kernel_size: int, dilation: int, stride: int, device: torch.device) -> torch.Tensor:
    """(K,) int64 key offsets of a kernel's offsets at a tensor stride, made once per device: a
    copy from host memory in the middle of a forward pass would stall a GPU's queue."""
    offsets = kernel_offsets(kernel_size, dilation) * stride
    reach = int(offsets.abs().max())
    if reach >= COORD_LIMIT:
        raise ValueError(f"kernel offsets reach {reach} voxels, beyond the packed range {COORD_LIMIT}")
    return (offsets[:, 0] * (1 << _SHIFTS[1]) + offsets[:, 1] * (1 << _SHIFTS[2]) + offsets[:, 2]).to(device)


@dataclass(frozen=True)
class CoordIndex:
    """Packed keys of one coordinate set: keys in row order, sorted, and the sorting order."""

    keys: torch.Tensor
    sorted_keys: torch.Tensor
    order: torch.Tensor


@dataclass(eq=False)
class KernelMap:
    """Which input row feeds each output row through each kernel offset.

    Stored as `searched` (S, num_out), offset-major: for offset k, the input row at each output
    site plus offset k, or `num_in` where that site is empty. A submanifold map (`identity`, the
    centre offset whose pairs are (j, j) for every row, is set) holds only the S = K // 2 offsets
    before the centre; the others are their mirror images. Convolutions read the forms they
    need, each derived on first use and kept with the map: the (num_out, K) table `neighbours`
    (num_in where none: one past the last row, gathered from an appended zero row, nn.py), its
    transpose `feeds`, or per-offset `pairs` (CPU).
    """

    searched: torch.Tensor  # (S, num_out) int64
    num_in: int
    num_out: int
    identity: int | None

    @cached_property
    def neighbours(self) -> torch.Tensor:
        """(num_out, K) int64: the input row at output o's site plus offset k, or num_in."""
        first = self.searched.t()
        if self.identity is None:
            return first.contiguous()
        rows = torch.arange(self.num_out, device=first.device)
        return torch.cat([first, rows[:, None], _invert(first, self.num_in).flip(1)], dim=1)

    @cached_property
    def feeds(self) -> torch.Tensor:
        """(num_in, K) int64: the output row input i feeds through offset k, or num_out."""
        if self.identity is not None:  # submanifold: offset K-1-k is the negation of offset k
            return self.neighbours.flip(1)
        return _invert(self.neighbours, self.num_in)

    @cached_property
    def pairs(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """(in_idx, out_idx) per offset: rows in_idx[k] of the input feed rows out_idx[k] of the output."""
        valid = self.searched < self.num_in
        counts = valid.sum(dim=1).tolist()
        ins, outs = self.searched[valid].split(counts), valid.nonzero()[:, 1].split(counts)
        if self.identity is None:
            return ins, outs
        # Submanifold: the offsets past the centre are those before it with in and out swapped.
        rows = torch.arange(self.num_in, device=self.searched.device)
        return ins + (rows,) + outs[::-1], outs + (rows,) + ins[::-1]


def _invert(table: torch.Tensor, num_rows: int) -> torch.Tensor:
    """The transpose of an (M, K) map into rows [0, num_rows) (num_rows: none): the
    (num_rows, K) map back into [0, M) (M: none). A value occurs at most once per column (an
    input feeds one output per offset), so one scatter does it; the 'none' entries land in a
    spare column that is dropped."""
    m, k = table.shape
    out = table.new_full((k, num_rows + 1), m)
    out.scatter_(1, table.t(), torch.arange(m, device=table.device).expand(k, -1))
    return out[:, :num_rows].t().contiguous()


def index_coords(coords: torch.Tensor) -> CoordIndex:
    """Sort the packed keys; duplicate sites are an input error (quantize first), checked where
    the keys are on the CPU (on a GPU the check would stop the host; voxelised input has none)."""
    keys = pack_coords(coords)
    sorted_keys, order = torch.sort(keys)
    if sorted_keys.device.type == "cpu" and (np.diff(sorted_keys.numpy()) == 0).any():
        raise ValueError("duplicate coordinates in a SparseTensor; run sparse_quantize before building it")
    return CoordIndex(keys, sorted_keys, order)


def downsample_coords(coords: torch.Tensor, factor: int) -> tuple[torch.Tensor, CoordIndex]:
    """Output sites of a stride conv: unique floor(c / factor) * factor (torchsparse 1.4/2.0,
    and 2.1 whenever kernel_size == stride), sorted by key."""
    c = coords.long().clone()
    c[:, 1:] = torch.div(c[:, 1:], factor, rounding_mode="floor") * factor
    keys = torch.unique(pack_coords(c))
    return unpack_keys(keys), CoordIndex(keys, keys, torch.arange(keys.numel(), device=keys.device))


def _index(cache: TensorCache, stride: int) -> CoordIndex:
    if stride not in cache.indexes:
        cache.indexes[stride] = index_coords(cache.coords[stride])
    return cache.indexes[stride]


def _lookup(inputs: CoordIndex, out_keys: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """(K, N_out) input row at each output site plus each offset, len(inputs) where none:
    one searchsorted over all queries, no host synchronisation."""
    queries = out_keys.unsqueeze(0) + deltas.unsqueeze(1)
    n = inputs.sorted_keys.numel()
    if n == 0:
        return torch.zeros_like(queries)
    pos = torch.searchsorted(inputs.sorted_keys, queries).clamp_(max=n - 1)
    hit = inputs.sorted_keys[pos] == queries
    return torch.where(hit, inputs.order[pos], n)


def get_kernel_map(cache: TensorCache, in_stride: int, kernel_size: int, stride: int, dilation: int) -> KernelMap:
    """The map of a conv reading coords at `in_stride` and writing at `in_stride * stride`,
    built once per (in_stride, kernel_size, stride, dilation) and cached, so the transposed
    conv of a decoder reuses its encoder's map with in/out swapped."""
    key = (in_stride, kernel_size, stride, dilation)
    if key in cache.kernel_maps:
        return cache.kernel_maps[key]
    inputs = _index(cache, in_stride)
    out_stride = in_stride * stride
    if out_stride not in cache.coords:
        cache.coords[out_stride], cache.indexes[out_stride] = downsample_coords(cache.coords[in_stride], out_stride)
    outputs = _index(cache, out_stride)
    deltas = key_deltas(kernel_size, dilation, in_stride, outputs.keys.device)
    volume = deltas.numel()
    # Submanifold: offset K-1-k is the negation of offset k and the centre maps every row to
    # itself, so searching the offsets before the centre is enough.
    identity = volume // 2 if stride == 1 and volume % 2 == 1 else None
    searched = _lookup(inputs, outputs.keys, deltas[:identity] if identity is not None else deltas)
    kmap = KernelMap(searched, inputs.keys.numel(), outputs.keys.numel(), identity)
    cache.kernel_maps[key] = kmap
    return kmap
