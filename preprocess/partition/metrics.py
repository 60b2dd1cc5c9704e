"""How good a partition is as a set of "consistency sets": measured against ground truth.

Used to compare partition methods and parameters (Felzenszwalb, VCCS, superpoints) on
annotated scenes before they feed the training losses. Segment ids may be any integers (union-
find roots, 0..S-1, PCL labels); ground-truth labels and instance ids below 0 mean "ignore" and
those points are left out of every score.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def _ids(name: str, array: np.ndarray, n: int | None = None) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array, got shape {array.shape} dtype {array.dtype}")
    if n is not None and len(array) != n:
        raise ValueError(f"{name} has {len(array)} entries, the segment array {n}")
    return array


def _labelled(segment: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Compact segment and label ids (0..S-1, 0..L-1) of the points whose label is not ignored."""
    segment = _ids("segment", segment)
    labels = _ids(name, labels, len(segment))
    keep = labels >= 0
    return np.unique(segment[keep], return_inverse=True)[1], np.unique(labels[keep], return_inverse=True)[1]


def _overlaps(seg: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (segment, label) pair that shares points, sorted by segment, with its point count."""
    n_labels = int(lab.max()) + 1
    keys, counts = np.unique(seg.astype(np.int64) * n_labels + lab, return_counts=True)
    return keys // n_labels, keys % n_labels, counts


def purity(segment: np.ndarray, labels: np.ndarray) -> float:
    """Share of labelled points whose segment's majority label is their own label.

    1.0 means no segment mixes labels. With `labels` = another partition, this is the best-match
    agreement of the two (each segment of `segment` matched to its majority segment of `labels`).
    NaN when no point is labelled.
    """
    seg, lab = _labelled(segment, labels, "labels")
    if len(seg) == 0:
        return float("nan")
    pair_seg, _, counts = _overlaps(seg, lab)
    starts = np.flatnonzero(np.r_[True, pair_seg[1:] != pair_seg[:-1]])
    return float(np.maximum.reduceat(counts, starts).sum() / len(seg))


def undersegmentation_error(segment: np.ndarray, instances: np.ndarray) -> float:
    """Leakage of segments across ground-truth regions (Levinshtein et al.'s TurboPixels UE).

    UE = (1/N) * sum over GT regions G of sum over segments S touching G of |S \\ G|,
    i.e. every point of a segment that lies outside a region the segment touches counts once per
    such region. Computed on the N labelled points only (instances >= 0), so segment sizes count
    labelled points. 0 means every segment lies inside one region. NaN when nothing is labelled.
    """
    seg, inst = _labelled(segment, instances, "instances")
    if len(seg) == 0:
        return float("nan")
    pair_seg, _, counts = _overlaps(seg, inst)
    sizes = np.bincount(seg)
    return float((sizes[pair_seg] - counts).sum() / len(seg))


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """Unique undirected edges (E,2), smaller id first, of a triangle mesh: for `boundary_recall`."""
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must be an integer (F,3) array, got shape {faces.shape} dtype {faces.dtype}")
    pairs = np.sort(faces[:, [0, 1, 0, 2, 1, 2]].reshape(-1, 2).astype(np.int64), axis=1)
    return _unique_pairs(pairs)


def knn_edges(points: np.ndarray, k: int = 10) -> np.ndarray:
    """Unique undirected edges (E,2), smaller id first, joining each point to its k nearest
    neighbours: the neighbourhood for `boundary_recall` on point clouds."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or not np.isfinite(points).all():
        raise ValueError(f"points must be a finite (N,3) array, got shape {points.shape}")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")
    n = len(points)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    _, idx = cKDTree(points).query(points, k=min(int(k) + 1, n))
    pairs = np.stack([np.repeat(np.arange(n), idx.shape[1]), idx.ravel()], axis=1)
    pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1)
    return _unique_pairs(pairs)


def _unique_pairs(pairs: np.ndarray) -> np.ndarray:
    n = int(pairs.max(initial=0)) + 1
    keys = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack([keys // n, keys % n], axis=1)


def boundary_recall(segment: np.ndarray, labels: np.ndarray, edges: np.ndarray) -> float:
    """Share of ground-truth boundary edges that are also segment boundaries.

    A GT boundary edge is an edge of `edges` ((E,2) point ids: mesh edges from `mesh_edges` or
    neighbour pairs from `knn_edges`) whose two ends carry different labels, both >= 0. Each
    listed edge counts once, so pass unique edges. NaN when there is no GT boundary edge.
    """
    segment = _ids("segment", segment)
    labels = _ids("labels", labels, len(segment))
    edges = np.asarray(edges)
    if edges.ndim != 2 or edges.shape[1] != 2 or not np.issubdtype(edges.dtype, np.integer):
        raise ValueError(f"edges must be an integer (E,2) array, got shape {edges.shape} dtype {edges.dtype}")
    if edges.size and (edges.min() < 0 or edges.max() >= len(segment)):
        raise ValueError(f"edges hold point ids outside 0..{len(segment) - 1}")
    la, lb = labels[edges[:, 0]], labels[edges[:, 1]]
    gt_boundary = (la >= 0) & (lb >= 0) & (la != lb)
    if not gt_boundary.any():
        return float("nan")
    a, b = edges[gt_boundary, 0], edges[gt_boundary, 1]
    return float(np.mean(segment[a] != segment[b]))


def size_stats(segment: np.ndarray) -> dict[str, float]:
    """Number of segments and the min, median, mean and max segment size in points."""
    segment = _ids("segment", segment)
    if len(segment) == 0:
        raise ValueError("segment is empty")
    sizes = np.unique(segment, return_counts=True)[1]
    return {
        "count": int(len(sizes)),
        "min": int(sizes.min()),
        "median": float(np.median(sizes)),
        "mean": float(sizes.mean()),
        "max": int(sizes.max()),
    }


def partition_report(
    segment: np.ndarray,
    labels: np.ndarray,
    instances: np.ndarray | None = None,
    edges: np.ndarray | None = None,
) -> dict[str, float]:
    """All of the above in one flat, JSON-ready dict: size stats, `purity` against `labels`,
    `undersegmentation_error` against `instances` and `boundary_recall` of `labels` over `edges`
    (each of the last two only when its input is given)."""
    report: dict[str, float] = {**size_stats(segment), "purity": purity(segment, labels)}
    if instances is not None:
        report["undersegmentation_error"] = undersegmentation_error(segment, instances)
    if edges is not None:
        report["boundary_recall"] = boundary_recall(segment, labels, edges)
    return report
