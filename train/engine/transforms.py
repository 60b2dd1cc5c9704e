"""What turns a scene's points into a sample, as pure functions of their inputs and a generator.

- `augment`: rotation about z, uniform scaling in [0.9, 1.1], random flips of x and y, small
  Gaussian jitter (CLIP2Scene / Pointcept settings). Only coordinates and normals change, so every
  per-point label stays attached to its point.
- `voxelize`, `crop`: one point per voxel, the voxels nearest a random one (any voxel alike, or
  drawn by per-voxel weights: train.crop_centre).
- `input_features`: the network's per-voxel input channels.
- `compact_sets`, `sample_pairs`: set ids and pixel-point pairs re-pointed at the sample's voxels.
The generator is passed in, so a sample is a pure function of its seed (exact resume).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from shared.schema import PAIRS_LABEL, PAIRS_PATCH, PAIRS_POINT, PAIRS_VIEW, PATCH_FEAT
from train.sparse import sparse_quantize


def augment(
    xyz: np.ndarray,
    normal: np.ndarray | None,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.9, 1.1),
    jitter: float = 0.005,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Randomly rotated (about z), scaled, flipped and jittered copies of `xyz` and `normal`.

    Normals get the rotation and flips (not the uniform scale or the jitter), so they stay unit
    vectors pointing the same way relative to the surface. `jitter` is the std in metres.
    """
    theta = rng.uniform(0.0, 2.0 * np.pi)
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    flip = np.where(rng.random(2) < 0.5, -1.0, 1.0)
    linear = rot @ np.diag([flip[0], flip[1], 1.0])  # flip first, then rotate
    factor = rng.uniform(*scale)
    out = (xyz.astype(np.float64) @ (linear.T * factor)).astype(np.float32)
    if jitter > 0:
        out += rng.normal(0.0, jitter, size=out.shape).astype(np.float32)
    turned = None if normal is None else (normal.astype(np.float64) @ linear.T).astype(np.float32)
    return out, turned


def voxelize(
    xyz: np.ndarray, voxel_size: float, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coords (M,3) int32 >= 0, index (M,) of the point kept per voxel, inverse (N,) voxel per point).

    Like Pointcept's GridSample: with `rng` the kept point is random (train), else the first (eval).
    """
    order = rng.permutation(len(xyz)) if rng is not None else np.arange(len(xyz))
    voxels, first, inverse = sparse_quantize(xyz[order], voxel_size, return_index=True, return_inverse=True)
    index = order[first]
    inv = np.empty(len(xyz), dtype=np.int64)
    inv[order] = inverse
    return (voxels - voxels.min(axis=0)).astype(np.int32), index, inv


def crop(coords: np.ndarray, max_points: int, rng: np.random.Generator,
         weight: np.ndarray | None = None) -> np.ndarray:
    """Indices of the `max_points` voxels nearest a random voxel (Pointcept's SphereCrop), in
    order; the centre drawn uniformly, or with probability proportional to `weight` (M,) >= 0."""
    if max_points <= 0 or len(coords) <= max_points:
        return np.arange(len(coords))
    pick = rng.integers(len(coords)) if weight is None else rng.choice(len(coords), p=weight / weight.sum())
    centre = coords[pick]
    dist = ((coords - centre).astype(np.int64) ** 2).sum(axis=1)
    return np.sort(np.argpartition(dist, max_points - 1)[:max_points])


def sample_pairs(
    pairs: dict[str, np.ndarray], voxel_of_point: np.ndarray, kept: np.ndarray, num_voxels: int,
    max_views: int, rng: np.random.Generator | None,
) -> dict[str, np.ndarray]:
    """The pairs of a sample: those of up to `max_views` views (0 = all; drawn with `rng`, all
    when it is None) whose point's voxel survived the crop, re-pointed at the sample's voxel rows.

    pairs: stored arrays (PAIRS_POINT, PAIRS_VIEW, PAIRS_LABEL[, PAIRS_PATCH, PATCH_FEAT]).
    voxel_of_point: (N,) voxel of every point (voxelize's inverse); kept: the voxels the sample
    keeps, in row order (crop's indices); num_voxels: voxels before the crop.
    Returns {"voxel" (P,), "label" (P,)[, "patch" (P,) rows of "patch_feat" (R,D) f32]}, the patch
    rows reduced to those the kept pairs use.
    """
    views = np.unique(pairs[PAIRS_VIEW])
    if rng is not None and 0 < max_views < len(views):
        views = rng.choice(views, max_views, replace=False)
    chosen = np.zeros(int(pairs[PAIRS_VIEW].max(initial=0)) + 1, bool)
    chosen[views] = True
    row = np.full(num_voxels, -1, np.int64)
    row[kept] = np.arange(len(kept))
    voxel = row[voxel_of_point[pairs[PAIRS_POINT]]]
    keep = chosen[pairs[PAIRS_VIEW]] & (voxel >= 0)
    out = {"voxel": voxel[keep], "label": pairs[PAIRS_LABEL][keep].astype(np.int64)}
    if PAIRS_PATCH in pairs:
        used, patch = np.unique(pairs[PAIRS_PATCH][keep], return_inverse=True)
        out["patch"] = patch.ravel().astype(np.int64)
        out["patch_feat"] = pairs[PATCH_FEAT][used].astype(np.float32)
    return out


def input_features(names: Sequence[str], index: np.ndarray, rgb: np.ndarray, xyz: np.ndarray,
                   normal: np.ndarray | None = None) -> np.ndarray:
    """(M, C) f32 network input of the points `index` of a scene, channels in the order of `names`
    (train.input_features): rgb scaled to [0, 1], unit normals, height in metres above the
    scene's lowest point (the minimum over all points, so a crop does not move the floor)."""
    parts = {"rgb": lambda: rgb[index].astype(np.float32) / 255.0,
             "normal": lambda: normal[index].astype(np.float32),
             "height": lambda: (xyz[index, 2:3] - xyz[:, 2].min()).astype(np.float32)}
    return np.concatenate([parts[name]() for name in names], axis=1)


def compact_sets(segment: np.ndarray) -> np.ndarray:
    """Set ids 0..k-1 for the k sets a sample's voxels keep (of the scene's sets), -1 (in no set)
    staying -1; k = compact.max() + 1."""
    uniq, compact = np.unique(segment, return_inverse=True)
    return compact.ravel() - int(uniq[0] < 0)
