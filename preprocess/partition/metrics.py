"""How good a partition is as a set of "consistency sets": measured against ground truth.

Used to compare partition methods and parameters (Felzenszwalb, VCCS, superpoints) on
annotated scenes before they feed the training losses (`python -m preprocess partition-quality`).
Segment ids may be any integers (union-find roots, 0..S-1, PCL labels); ground-truth labels and
instance ids below 0 mean "ignore" and those points are left out of every score, except in
`partition_report(..., background=True)`, where they are LiDAR points outside every annotated
box and count as one more instance, the background.

Definitions (N = the points scored; a partition's pieces are its "segments"):
- purity: share of points whose segment's majority instance is their own instance.
- in-box purity (boxes only): the same, the majority still taken over all of a segment's points
  (background included), scored on the points inside boxes only. A car merged with the road
  around it fails here although purity, dominated by background points, barely moves.
- spanning share: share of segments whose points belong to more than one instance (or whose
  points outside their majority instance are more than a given share).
- under-segmentation error (Levinshtein et al.'s "leakage"): (1/N) sum over instances G of
  sum over segments S touching G of |S \\ G|.
- boundary recall: over a neighbour graph (mesh edges, or each point's k nearest neighbours),
  the share of ground-truth boundary points (points with a neighbour of another instance) that
  are partition boundary points (points with a neighbour in another segment), i.e. have a
  partition boundary within their neighbourhood.
"""

from __future__ import annotations

import numpy as np


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


def purity(segment: np.ndarray, labels: np.ndarray, scored: np.ndarray | None = None) -> float:
    """Share of labelled points whose segment's majority label is their own label.

    A segment's majority label is the label most of its labelled points carry (the smallest
    label id among ties), taken over all its labelled points. `scored` (a boolean mask over the
    points) restricts which points are counted: on LiDAR, in-box purity is the majority over a
    segment's points with background counted as a label, scored on the points inside boxes.
    1.0 means no segment mixes labels. With `labels` = another partition, this is the
    best-match agreement of the two (each segment of `segment` matched to its majority segment
    of `labels`). NaN when no labelled point is scored.
    """
    seg, lab = _labelled(segment, labels, "labels")
    keep = np.asarray(labels) >= 0
    if scored is not None:
        scored = np.asarray(scored)
        if scored.shape != keep.shape or scored.dtype != bool:
            raise ValueError(
                f"scored must be a boolean mask of the {len(keep)} points, got shape {scored.shape} dtype {scored.dtype}"
            )
        scored = scored[keep]
    if len(seg) == 0 or (scored is not None and not scored.any()):
        return float("nan")
    pair_seg, pair_lab, counts = _overlaps(seg, lab)
    starts = np.flatnonzero(np.r_[True, pair_seg[1:] != pair_seg[:-1]])
    most = np.repeat(np.maximum.reduceat(counts, starts), np.diff(np.r_[starts, len(counts)]))
    first_max = np.flatnonzero(counts == most)  # pairs are sorted by label within a segment
    _, first = np.unique(pair_seg[first_max], return_index=True)
    majority = pair_lab[first_max[first]]  # per segment 0..S-1
    good = lab == majority[seg]
    return float(good.mean() if scored is None else good[scored].mean())


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


def spanning_share(segment: np.ndarray, instances: np.ndarray, minority: float = 0.0) -> float:
    """Share of segments whose labelled points (instances >= 0) belong to more than one
    instance: the consistency sets that join two objects. With `minority` > 0, only segments
    where more than that share of their labelled points lie outside their majority instance
    count (a real join rather than a few points at a boundary). Segments without a labelled
    point are not counted; NaN when no point is labelled."""
    seg, inst = _labelled(segment, instances, "instances")
    if len(seg) == 0:
        return float("nan")
    pair_seg, _, counts = _overlaps(seg, inst)
    starts = np.flatnonzero(np.r_[True, pair_seg[1:] != pair_seg[:-1]])
    outside = 1.0 - np.maximum.reduceat(counts, starts) / np.add.reduceat(counts, starts)
    return float((outside > minority).mean())


def _checked_edges(edges: np.ndarray, n: int) -> np.ndarray:
    edges = np.asarray(edges)
    if edges.ndim != 2 or edges.shape[1] != 2 or not np.issubdtype(edges.dtype, np.integer):
        raise ValueError(f"edges must be an integer (E,2) array, got shape {edges.shape} dtype {edges.dtype}")
    if edges.size and (edges.min() < 0 or edges.max() >= n):
        raise ValueError(f"edges hold point ids outside 0..{n - 1}")
    return edges


def boundary_points(ids: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Boolean mask of the points with a neighbour (over `edges`) of another id, where both
    ids are >= 0 (ids below 0 are ignored points: they neither make nor are boundaries)."""
    ids = _ids("ids", ids)
    edges = _checked_edges(edges, len(ids))
    a, b = edges[:, 0], edges[:, 1]
    cut = (ids[a] >= 0) & (ids[b] >= 0) & (ids[a] != ids[b])
    mask = np.zeros(len(ids), dtype=bool)
    mask[a[cut]] = True
    mask[b[cut]] = True
    return mask


def boundary_recall(segment: np.ndarray, labels: np.ndarray, edges: np.ndarray, tolerance: int = 0) -> float:
    """Share of ground-truth boundary points that lie on a partition boundary.

    Over the neighbour graph `edges` ((E,2) point ids: mesh edges from `mesh_edges`, or the
    neighbour pairs of `knn_edges`), a ground-truth boundary point is a labelled point with a
    neighbour of another label (`boundary_points(labels, edges)`), and a partition boundary
    point one with a neighbour in another segment (`boundary_points(segment, edges)`). A
    ground-truth boundary point is recalled when it is a partition boundary point, or with
    `tolerance` = t > 0 when one lies within t hops of it. So at t = 0 a point is recalled when
    the partition cuts some edge at it: its neighbourhood holds a partition boundary. NaN when
    there is no ground-truth boundary point.
    """
    segment = _ids("segment", segment)
    labels = _ids("labels", labels, len(segment))
    if int(tolerance) != tolerance or tolerance < 0:
        raise ValueError(f"tolerance must be an integer number of hops >= 0, got {tolerance}")
    gt = boundary_points(labels, edges)
    if not gt.any():
        return float("nan")
    found = boundary_points(segment, edges)
    a, b = np.asarray(edges)[:, 0], np.asarray(edges)[:, 1]
    for _ in range(int(tolerance)):
        grown = found.copy()
        grown[a[found[b]]] = True
        grown[b[found[a]]] = True
        found = grown
    return float(found[gt].mean())


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
    segment: np.ndarray, instance: np.ndarray, edges: np.ndarray, background: bool = False
) -> dict[str, float]:
    """A partition against instances, as one flat JSON-ready dict: `size_stats`, `purity`,
    `undersegmentation_error` and `boundary_recall` over `edges` (see the module docstring).

    background=False: points with instance < 0 are unannotated and left out (ScanNet).
    background=True: they are background, outside every annotated box, and count as one more
    instance (nuScenes' boxes); `in_box_purity` (purity scored on the points inside boxes) is
    reported as well.
    """
    instance = _ids("instance", instance, len(_ids("segment", segment)))
    labels = np.where(instance < 0, max(int(instance.max(initial=-1)) + 1, 0), instance) if background else instance
    report: dict[str, float] = {
        **size_stats(segment),
        "purity": purity(segment, labels),
        "undersegmentation_error": undersegmentation_error(segment, labels),
        "boundary_recall": boundary_recall(segment, labels, edges),
    }
    if background:
        report["in_box_purity"] = purity(segment, labels, instance >= 0)
    return report
