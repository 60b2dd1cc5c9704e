"""Superpoints: Landrieu & Simonovsky's geometric partition (SPG, CVPR 2018) of a point cloud.

Points are described by the shape of their neighbourhood (linearity, planarity, scattering,
2 x verticality, optionally colour or LiDAR intensity), linked to their nearest neighbours, and partitioned by
cut pursuit into pieces of near-constant description: walls, table tops, chair legs. The steps
and their defaults follow SPG's `partition.py` (see docs/oversegmentation.md (c)).
"""

from __future__ import annotations

from typing import Literal, overload

import numpy as np
import pgeof
from scipy.spatial import cKDTree

from preprocess.partition.checks import finite_points
from preprocess.partition.cut_pursuit import cut_pursuit


def spg_graph(
    points: np.ndarray,
    colors: np.ndarray | None = None,
    k_nn: int = 45,
    k_graph: int = 10,
    lambda_edge_weight: float = 1.0,
    intensity: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SPG's partition problem for a cloud: (features (N, 4 + appearance) f32, source, target, weight).

    points: (N, 3) coordinates, N >= 2.
    colors: optional (N, 3) RGB in 0..255, appended to the features as rgb / 255 (SPG's own).
    intensity: optional (N,) LiDAR intensity in 0..255, appended likewise as intensity / 255.
    k_nn: neighbours (besides the point itself) whose covariance gives the shape features.
    k_graph: nearest neighbours each point links to (directed edges i -> nn_j, sorted by i).
    lambda_edge_weight: w = 1 / (lambda_edge_weight + d / mean(d)); it bounds the weight of
        the shortest edges and so how much closeness alone holds points together.
    Neighbourhoods shrink to all other points where the cloud has no more than k_nn of them.
    """
    return _graph(*_checked(points, colors, intensity), k_nn, k_graph, lambda_edge_weight)


def _graph(
    xyz: np.ndarray, appearance: np.ndarray | None, k_nn: int, k_graph: int, lambda_edge_weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """spg_graph on checked float32 points and their (N, C) appearance columns in 0..255."""
    if k_nn < 1 or k_graph < 1 or k_graph > k_nn:
        raise ValueError(f"need 1 <= k_graph <= k_nn, got k_graph={k_graph}, k_nn={k_nn}")
    if not lambda_edge_weight > 0:
        raise ValueError(f"lambda_edge_weight must be > 0, got {lambda_edge_weight}")
    n = xyz.shape[0]
    if n < 2:
        raise ValueError(f"a graph needs at least 2 points, got {n}")
    k = min(k_nn, n - 1)
    distance, neighbour = cKDTree(xyz).query(xyz, k=k + 1)
    # Like SPG, column 0 is taken to be the point itself (it is, up to duplicate points).
    geof = pgeof.compute_features(
        xyz,
        neighbour.astype(np.uint32).ravel(),
        np.arange(0, n * (k + 1) + 1, k + 1, dtype=np.uint32),
        k_min=1,
    )
    features = [geof[:, :3], 2.0 * geof[:, 3:4]]  # SPG doubles verticality's importance
    if appearance is not None:
        features.append(appearance / np.float32(255.0))
    kg = min(k_graph, k)
    source = np.repeat(np.arange(n, dtype=np.int64), kg)
    target = neighbour[:, 1 : kg + 1].ravel().astype(np.int64)
    d = distance[:, 1 : kg + 1].ravel()
    weight = 1.0 / (lambda_edge_weight + d / max(d.mean(), np.finfo(np.float64).tiny))
    return np.concatenate(features, axis=1).astype(np.float32), source, target, weight


@overload
def superpoints(
    points: np.ndarray, colors: np.ndarray | None = ..., k_nn: int = ..., k_graph: int = ..., reg: float = ...,
    voxel: float = ..., lambda_edge_weight: float = ..., return_energy: Literal[False] = ...,
    intensity: np.ndarray | None = ...,
) -> np.ndarray: ...
@overload
def superpoints(
    points: np.ndarray, colors: np.ndarray | None = ..., k_nn: int = ..., k_graph: int = ..., reg: float = ...,
    voxel: float = ..., lambda_edge_weight: float = ..., *, return_energy: Literal[True],
    intensity: np.ndarray | None = ...,
) -> tuple[np.ndarray, float]: ...


def superpoints(
    points: np.ndarray,
    colors: np.ndarray | None = None,
    k_nn: int = 45,
    k_graph: int = 10,
    reg: float = 0.1,
    voxel: float = 0.0,
    lambda_edge_weight: float = 1.0,
    return_energy: bool = False,
    intensity: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, float]:
    """Superpoint id (int32, 0..S-1) of every point; with return_energy also the partition's energy.

    points: (N, 3) coordinates; colors: optional (N, 3) RGB 0..255 and intensity: optional (N,)
    LiDAR intensity 0..255, each used as features too (see spg_graph).
    k_nn, k_graph, lambda_edge_weight: see spg_graph (SPG's defaults 45, 10, 1).
    reg: cut pursuit's regularisation; larger gives fewer, larger superpoints.
    voxel: if > 0, partition the means of occupied voxels of this size (grid from the minimum
        corner, as SPG's pruning) and give every point its voxel's superpoint.
    return_energy: also return E = 1/2 sum ||x_i - f_i||^2 + reg sum w [x_s != x_t] of the
        partition of the (voxel) graph.
    """
    xyz, appearance = _checked(points, colors, intensity)
    if not (np.isfinite(voxel) and voxel >= 0):
        raise ValueError(f"voxel must be a finite size >= 0, got {voxel}")
    inverse = None
    if voxel > 0:
        xyz, appearance, inverse = _voxel_means(xyz, appearance, voxel)
    if xyz.shape[0] == 1:
        segment, energy = np.zeros(1, np.int32), 0.0
    else:
        segment, energy = cut_pursuit(*_graph(xyz, appearance, k_nn, k_graph, lambda_edge_weight), reg=reg)
    if inverse is not None:
        segment = segment[inverse]
    return (segment, energy) if return_energy else segment


def _checked(
    points: np.ndarray, colors: np.ndarray | None, intensity: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 points and the (N, C) appearance columns in 0..255 (colour, then intensity)."""
    xyz = finite_points("points", points)
    columns = [] if colors is None else [finite_points("colors", colors, like=xyz)]
    if intensity is not None:
        values = np.asarray(intensity)
        if values.shape != (len(xyz),) or not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all():
            raise ValueError(f"intensity must be {len(xyz)} finite numbers, one per point, got shape {values.shape}")
        columns.append(values.astype(np.float32)[:, None])
    return xyz, np.concatenate(columns, axis=1) if columns else None


def _voxel_means(
    xyz: np.ndarray, appearance: np.ndarray | None, voxel: float
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Mean position (and colour or intensity) per occupied voxel, and each point's voxel."""
    cell = np.floor((xyz - xyz.min(axis=0)) / np.float32(voxel)).astype(np.int64)
    extent = cell.max(axis=0) + 1
    key = (cell[:, 0] * extent[1] + cell[:, 1]) * extent[2] + cell[:, 2]
    _, inverse = np.unique(key, return_inverse=True)
    count = np.bincount(inverse).astype(np.float64)

    def mean(values: np.ndarray) -> np.ndarray:
        sums = [np.bincount(inverse, weights=values[:, j]) for j in range(values.shape[1])]
        return (np.stack(sums, axis=1) / count[:, None]).astype(np.float32)

    return mean(xyz), None if appearance is None else mean(appearance), inverse
