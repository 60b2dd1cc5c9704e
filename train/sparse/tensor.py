"""SparseTensor: features on occupied voxels plus the caches that ops pass along.

Coordinate layout (the one place it is defined and checked):
  coords is an (M, 4) int32 tensor, columns (batch, x, y, z) -- batch FIRST, as in torchsparse
  >= 2.1, spconv, MinkowskiEngine and Pointcept (torchsparse 1.4/2.0 put batch last; the
  torchsparse adapter in backend.py converts). x, y, z are in original voxel units at every
  level, so a tensor of stride s has coordinates that are multiples of s. batch lies in
  [0, 4096) and x, y, z in [-32768, 32768): the kernel map packs a coordinate into one int64
  key with 12 batch bits and 17 bits per axis, the spare axis bit leaving room for kernel
  offsets without overflowing into the next field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from train.sparse.kernel_map import CoordIndex, KernelMap

MAX_BATCH = 1 << 12
COORD_LIMIT = 1 << 15


def check_coords(coords: torch.Tensor, stride: int) -> None:
    """Raise ValueError unless coords follow the layout in this module's docstring.

    The values are checked where coords are on the CPU, read through NumPy at no cost. On an
    accelerator each value check would stop the host until the device catches up, so only
    dtype and shape are checked there: build from CPU coords checked here (the trainer checks
    every batch once in `collate`, train/engine/batch.py; `sparse_collate` before moving them).
    """
    if coords.dtype != torch.int32 or coords.dim() != 2 or coords.shape[1] != 4:
        raise ValueError(
            f"coords must be an (M, 4) int32 tensor (batch, x, y, z), got {tuple(coords.shape)} {coords.dtype}"
        )
    if coords.shape[0] == 0 or coords.device.type != "cpu":
        return
    values = coords.numpy()
    batch, xyz = values[:, 0], values[:, 1:]
    if batch.min() < 0 or batch.max() >= MAX_BATCH:
        raise ValueError(f"batch column (coords[:, 0]) must lie in [0, {MAX_BATCH}); is batch last instead of first?")
    if xyz.min() < -COORD_LIMIT or xyz.max() >= COORD_LIMIT:
        raise ValueError(f"voxel coordinates must lie in [-{COORD_LIMIT}, {COORD_LIMIT}); use a coarser voxel size")
    if stride > 1 and (xyz % stride != 0).any():
        raise ValueError(f"coords of a stride-{stride} tensor must be multiples of {stride} (original voxel units)")


def check_devices(feats: torch.Tensor, coords: torch.Tensor) -> None:
    """Features and coordinates on one device, or one error saying how to get there: ops index
    the features with tensors made from the coordinates, which would fail (or copy) mid-network."""
    if feats.device != coords.device:
        raise ValueError(f"feats are on {feats.device} but coords on {coords.device}: build both on one device "
                         "(coords.to(feats.device); sparse_collate does this)")


@dataclass
class TensorCache:
    """State shared by every tensor derived from one input, so that a U-Net decoder finds
    the kernel maps and coordinates its encoder built (torchsparse's kmaps/cmaps)."""

    coords: dict[int, torch.Tensor] = field(default_factory=dict)
    kernel_maps: dict[tuple[int, int, int, int], KernelMap] = field(default_factory=dict)
    indexes: dict[int, CoordIndex] = field(default_factory=dict)


class SparseTensor:
    """Features (M, C) on coordinates (M, 4) at a tensor stride, torchsparse's call shape.

    A tensor built without `caches` starts a new chain and its coords are checked against the
    layout (`check_coords`: values on the CPU only) and must be on the features' device; ops pass
    their input's caches to the tensors they make, whose coords come from a checked chain, so
    only shapes are checked there.
    """

    def __init__(
        self, feats: torch.Tensor, coords: torch.Tensor, stride: int = 1, *, caches: TensorCache | None = None
    ) -> None:
        if feats.dim() != 2 or feats.shape[0] != coords.shape[0]:
            raise ValueError(f"feats must be (M, C) with M = len(coords), got {tuple(feats.shape)} for M={coords.shape[0]}")
        if caches is None:
            check_devices(feats, coords)
            check_coords(coords, stride)
            caches = TensorCache()
        self.feats = feats
        self.coords = coords
        self.stride = stride
        self.caches = caches
        caches.coords.setdefault(stride, coords)

    @property
    def F(self) -> torch.Tensor:
        return self.feats

    @property
    def C(self) -> torch.Tensor:
        return self.coords

    @property
    def s(self) -> int:
        return self.stride

    def with_feats(self, feats: torch.Tensor) -> SparseTensor:
        """Same sites, stride and caches, new features (what BatchNorm, ReLU, cat, + return)."""
        return SparseTensor(feats, self.coords, self.stride, caches=self.caches)

    def __add__(self, other: SparseTensor) -> SparseTensor:
        return self.with_feats(self.feats + other.feats)

    def to(self, device: torch.device | str) -> SparseTensor:
        """Move to a device; the result starts a new chain (caches are per device)."""
        return SparseTensor(self.feats.to(device), self.coords.to(device), self.stride)

    def __repr__(self) -> str:
        return f"SparseTensor(M={self.coords.shape[0]}, C={self.feats.shape[1]}, stride={self.stride})"
