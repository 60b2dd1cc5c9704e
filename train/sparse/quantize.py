"""Voxelisation and batching with torchsparse.utils' call shapes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from train.sparse.tensor import SparseTensor, check_coords


def sparse_quantize(
    coords: np.ndarray, voxel_size: float | Sequence[float] = 1, return_index: bool = False, return_inverse: bool = False
) -> np.ndarray | tuple[np.ndarray, ...]:
    """One voxel per occupied cell of floor(coords / voxel_size), as torchsparse does.

    Returns the int32 voxel coords (N_vox, D), and optionally `index` (a representative
    input row per voxel: voxels = floor(coords[index] / voxel_size)) and `inverse` (the voxel
    of every input row: voxels[inverse] = floor(coords / voxel_size), which maps voxel
    predictions back to all points). Voxels come in lexicographic order of their coords.
    """
    cells = np.floor(np.asarray(coords) / np.asarray(voxel_size, dtype=np.float64)).astype(np.int64)
    shifted = cells - cells.min(axis=0)
    keys = np.ravel_multi_index(shifted.T, shifted.max(axis=0) + 1)
    _, index, inverse = np.unique(keys, return_index=True, return_inverse=True)
    voxels = cells[index].astype(np.int32)
    outputs = [voxels] + ([index] if return_index else []) + ([inverse.reshape(-1)] if return_inverse else [])
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def sparse_collate(
    samples: Sequence[tuple[Any, Any]], tensor: Callable[[torch.Tensor, torch.Tensor], Any] = SparseTensor
) -> Any:
    """Batch per-sample (coords (N_i, 3) int, feats (N_i, C)) into one tensor whose coords
    are (b, x, y, z) with the sample index b first, checked on the CPU and then moved to the
    features' device; `tensor` builds it (the backend's)."""
    feats = torch.cat([torch.as_tensor(f) for _, f in samples])
    coords = [torch.as_tensor(c, dtype=torch.int32).cpu() for c, _ in samples]
    batch = torch.cat([torch.full((len(c), 1), b, dtype=torch.int32) for b, c in enumerate(coords)])
    coords = torch.cat([batch, torch.cat(coords)], dim=1)
    check_coords(coords, stride=1)
    return tensor(feats, coords.to(feats.device))
