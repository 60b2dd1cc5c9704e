"""Kernel maps from sorted int64 coordinate keys: which input feeds which output per offset.

A coordinate (b, x, y, z) packs into one int64 key, (b << 51) | (x' << 34) | (y' << 17) | z'
with x' = x + 2**16 etc. (layout and ranges: tensor.py). Keys sort like (b, x, y, z) and,
because the coordinate range leaves one spare bit per axis, key(c + d) = key(c) + key_delta(d)
for any kernel offset d: a neighbour query is one int64 add, a lookup one `searchsorted` into
the sorted input keys plus an equality test. No hash table, runs on any device.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _key_deltas(offsets: torch.Tensor) -> torch.Tensor:
    if int(offsets.abs().max()) >= COORD_LIMIT:
        raise ValueError(f"kernel offsets reach {int(offsets.abs().max())} voxels, beyond the packed range {COORD_LIMIT}")
    return offsets[:, 0] * (1 << _SHIFTS[1]) + offsets[:, 1] * (1 << _SHIFTS[2]) + offsets[:, 2]


@dataclass(frozen=True)
class CoordIndex:
    """Packed keys of one coordinate set: keys in row order, sorted, and the sorting order."""

    keys: torch.Tensor
    sorted_keys: torch.Tensor
    order: torch.Tensor


@dataclass(frozen=True)
class KernelMap:
    """Per kernel offset k, rows in_idx[k] of the input feed rows out_idx[k] of the output.

    `identity` names the offset whose pairs are (j, j) for every row (the centre of a
    submanifold conv), which the conv applies as one dense matrix product.
    """

    in_idx: tuple[torch.Tensor, ...]
    out_idx: tuple[torch.Tensor, ...]
    num_in: int
    num_out: int
    identity: int | None


def index_coords(coords: torch.Tensor) -> CoordIndex:
    """Sort the packed keys; duplicate sites are an input error (quantize first)."""
    keys = pack_coords(coords)
    sorted_keys, order = torch.sort(keys)
    if sorted_keys.numel() > 1 and bool((sorted_keys[1:] == sorted_keys[:-1]).any()):
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


def _match(
    inputs: CoordIndex, out_keys: torch.Tensor, deltas: torch.Tensor
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """All offsets at once: one searchsorted over (K, N_out) queries, pairs grouped by offset."""
    queries = out_keys.unsqueeze(0) + deltas.to(out_keys.device).unsqueeze(1)
    n = inputs.sorted_keys.numel()
    pos = torch.searchsorted(inputs.sorted_keys, queries).clamp_(max=max(n - 1, 0))
    hit = inputs.sorted_keys[pos] == queries if n else torch.zeros_like(queries, dtype=torch.bool)
    k_idx, out_idx = hit.nonzero(as_tuple=True)
    in_idx = inputs.order[pos[k_idx, out_idx]]
    counts = hit.sum(dim=1).tolist()
    return in_idx.split(counts), out_idx.split(counts)


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
    deltas = _key_deltas(kernel_offsets(kernel_size, dilation) * in_stride)
    volume = deltas.numel()
    if stride == 1 and volume % 2 == 1:
        # Submanifold: offset K-1-k is the negation of offset k, so its pairs are k's swapped,
        # and the centre maps every row to itself. Searching half the offsets is enough.
        half = volume // 2
        ins, outs = _match(inputs, outputs.keys, deltas[:half])
        rows = torch.arange(inputs.keys.numel(), device=inputs.keys.device)
        in_idx = ins + (rows,) + outs[::-1]
        out_idx = outs + (rows,) + ins[::-1]
        identity: int | None = half
    else:
        in_idx, out_idx = _match(inputs, outputs.keys, deltas)
        identity = None
    kmap = KernelMap(tuple(in_idx), tuple(out_idx), inputs.keys.numel(), outputs.keys.numel(), identity)
    cache.kernel_maps[key] = kmap
    return kmap
