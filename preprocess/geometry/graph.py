"""Neighbour graphs of a scene's points: a mesh's edges, or each point's nearest neighbours.

Built here for every stage that needs one: Felzenszwalb's merge rule on point clouds
(`knn_pairs`: directed edges, nearest first), the link graph of the sets from 2D masks and the
boundaries of the partition metrics (`neighbour_edges`: undirected edges, each once).

The two k-NN forms differ where more than k points coincide (LiDAR sweeps have such stacks of
identical returns): `knn_pairs` gives every point exactly its k nearest *other* points, as the
Segmentator's port needs; `knn_edges` joins each point to every other point among the k + 1
nearest the tree returns for it (itself included when the tree returns it), so a point inside
a stack may get one edge more. Stored partitions were made with these forms; they stay apart so
that every partition stays what it was.
"""

from __future__ import annotations

import numpy as np


def _nearest(points: np.ndarray, k: int) -> np.ndarray:
    """(N, min(k + 1, N)) indices of each point's nearest points, itself usually first."""
    from scipy.spatial import cKDTree  # here: the mesh-only `segment` command starts faster without it

    return cKDTree(points).query(points, k=min(k + 1, len(points)))[1].reshape(len(points), -1)


def knn_pairs(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges (a, b), int32, from each point to its `k` nearest other points, nearest
    first, point by point (fewer where the cloud has fewer points)."""
    n = len(points)
    if min(k + 1, n) < 2:
        return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int32)
    idx = _nearest(points, k)
    # Coincident points can push a point's own index out of first place: drop it wherever it is.
    not_self = idx != np.arange(n)[:, None]
    keep = np.argsort(~not_self, axis=1, kind="stable")[:, : idx.shape[1] - 1]
    b = np.ascontiguousarray(np.take_along_axis(idx, keep, axis=1).ravel(), dtype=np.int32)
    a = np.repeat(np.arange(n, dtype=np.int32), idx.shape[1] - 1)
    return a, b


def distinct(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and each key's index among them: np.unique by sorting, which is many
    times faster than NumPy 2.4's np.unique on a few hundred thousand int64 keys."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]] if len(ordered) else np.zeros(0, bool)
    inverse = np.empty(len(keys), np.int64)
    inverse[order] = np.cumsum(starts) - 1
    return ordered[starts], inverse


def undirected(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """(E, 2) int64 edges (lo, hi), lo < hi, each once, sorted, of the pairs (a, b) of n points
    (self-pairs dropped)."""
    lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    keys, _ = distinct(lo[lo != hi] * n + hi[lo != hi])
    return np.stack([keys // n, keys % n], axis=1)


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """(E, 2) edges of a triangle mesh, smaller id first, each once, sorted."""
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must be an integer (F,3) array, got shape {faces.shape} dtype {faces.dtype}")
    pairs = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).astype(np.int64)
    return undirected(pairs[:, 0], pairs[:, 1], int(faces.max(initial=-1)) + 1)


def knn_edges(points: np.ndarray, k: int = 10) -> np.ndarray:
    """(E, 2) edges joining each point to the other points among its k + 1 nearest (see the
    module's note on coincident points), smaller id first, each once, sorted."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or not np.isfinite(points).all():
        raise ValueError(f"points must be a finite (N,3) array, got shape {points.shape}")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")
    n = len(points)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    idx = _nearest(points, int(k))
    return undirected(np.repeat(np.arange(n), idx.shape[1]), idx.ravel(), n)


def neighbour_edges(points: np.ndarray, faces: np.ndarray | None = None, knn: int = 10) -> np.ndarray:
    """A scene's neighbourhood as (E, 2) undirected edges: its mesh's edges where it has faces,
    else `knn_edges` of its points."""
    return mesh_edges(faces) if faces is not None and len(faces) else knn_edges(points, knn)
