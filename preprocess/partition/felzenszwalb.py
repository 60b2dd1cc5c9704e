"""Felzenszwalb–Huttenlocher graph segmentation with normal-based weights: ScanNet's Segmentator.

A faithful transcription of ScanNet's `Segmentator/segmentator.cpp` (the tool that made every
`*_vh_clean_2.0.010000.segs.json`), so our consistency sets are the ones the field uses. It
reproduces the C++ program's partitions of real ScanNet meshes exactly, which is why every
step below keeps the original's float32 arithmetic and quirks:

* vertex normals are the running, unweighted mean of incident unit face normals, in face order,
  and are NOT renormalised;
* every face gives three directed edges (i1,i2), (i1,i3), (i3,i2); shared edges appear twice;
* weight of edge (a,b): w = 1 - n_a.n_b, squared when n_b.(p_b - p_a) > 0 ("convex");
* edges are sorted by weight (stable here; the C++ uses std::sort, whose different tie order
  changes root ids but not the partition: scene0000_00 at k = 0.01..0.05 is identical), merged with pff's rule w <= Int(C) + k/|C|, then a
  min-size pass over the same sorted edges joins any edge whose side is still too small;
* union-find with pff's join-by-rank and its "sort of" path compression (only the queried
  element is re-pointed to the root).

Degenerate input, as in the C++: a zero-area face has a NaN normal, which makes the normals of
its three vertices, and so the weights of all their edges, NaN for good. `NaN <= threshold` is
false, so such edges never merge in the threshold pass; the min-size pass checks no weight and
does join across them. std::sort leaves NaN edges at unspecified places; we sort them last (as
if +inf), so those vertices are absorbed after all finite edges. Coincident edge endpoints give
a NaN direction, hence no "convex" squaring: the weight stays 1 - n_a.n_b.

LiDAR sweeps have no faces: `felzenszwalb_points` runs the same merge rule on a neighbour graph
of the points, either the Segmentator's weights on k nearest neighbours, or weights made for a
spinning LiDAR (`weights="lidar"`, see `felzenszwalb_kernels.lidar_edge_weights`) on its range image's neighbours
(`rings`, see preprocess/partition/rings.py). Normals alone cannot part the objects of a street:
a car's flank, the wall behind it and the next car all face the sensor alike.
"""

from __future__ import annotations

import numpy as np

from preprocess.geometry.graph import knn_pairs
from preprocess.partition.checks import finite_points
from preprocess.partition.felzenszwalb_aot import kernels


def _check_points(name: str, array: np.ndarray) -> np.ndarray:
    """(N,3) finite coordinates as contiguous float32 (the original reads PLY floats)."""
    array = finite_points(name, array)
    if len(array) >= 2**31:
        raise ValueError(f"{name}: at most 2**31 - 1 supported (int32 ids, as in the original)")
    return array


def _check_params(k: float, min_verts: int) -> np.float32:
    """k as the float32 the original computes with; min_verts a non-negative integer."""
    if not np.isfinite(k) or k < 0:
        raise ValueError(f"k must be a finite number >= 0, got {k}")
    if int(min_verts) != min_verts or min_verts < 0:
        raise ValueError(f"min_verts must be an integer >= 0, got {min_verts}")
    return np.float32(k)


def _sort_and_segment(
    n: int, a: np.ndarray, b: np.ndarray, w: np.ndarray, c: np.float32, min_verts: int
) -> np.ndarray:
    """What meshes and point graphs share once their directed edges are weighted."""
    compiled = kernels()
    a, b, w = compiled.sort_edges(a, b, w)
    return compiled.segment(n, a, b, w, c, int(min_verts))


def felzenszwalb(vertices: np.ndarray, faces: np.ndarray, k: float = 0.01, min_verts: int = 20) -> np.ndarray:
    """Over-segment a triangle mesh exactly like ScanNet's Segmentator.

    Parameters
    ----------
    vertices : (N,3) float array
        Vertex coordinates (used in float32, like the original reading a PLY).
    faces : (F,3) integer array
        Triangle vertex ids in file order (the order matters for the normals and edge order).
    k : float, default 0.01
        Segmentator's kThresh: pff's scale constant; larger gives fewer, larger segments.
        Used in float32 like the original.
    min_verts : int, default 20
        Segmentator's segMinVerts: segments smaller than this are merged into a neighbour
        across their lowest-weight edges (vertices with no edge stay alone).

    Returns
    -------
    (N,) int32 segment ids, contiguous 0..S-1 numbered in order of each segment's first vertex.
    """
    vertices = _check_points("vertices", vertices)
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must be an integer (F,3) array, got shape {faces.shape} dtype {faces.dtype}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f"faces hold vertex ids outside 0..{len(vertices) - 1}")
    c = _check_params(k, min_verts)
    faces = np.ascontiguousarray(faces, dtype=np.int32)
    normals = kernels().vertex_normals(vertices, faces)
    a = faces[:, [0, 0, 2]].ravel()
    b = faces[:, [1, 2, 1]].ravel()
    w = kernels().edge_weights(vertices, normals, a, b)
    return _sort_and_segment(len(vertices), a, b, w, c, min_verts)


def felzenszwalb_points(
    points: np.ndarray,
    normals: np.ndarray,
    k: float = 0.01,
    min_verts: int = 20,
    knn: int = 10,
    *,
    rings: np.ndarray | None = None,
    weights: str = "normal",
    intensity: np.ndarray | None = None,
    distance_weight: float = 0.4,
    intensity_weight: float = 0.0,
) -> np.ndarray:
    """Felzenszwalb–Huttenlocher's merge rule (as the Segmentator runs it) on a neighbour graph
    of a point cloud without faces (LiDAR sweeps).

    Parameters
    ----------
    points : (N,3) float array
        Point coordinates (used in float32); for `rings` and `weights="lidar"` in the sensor
        frame, the LiDAR at the origin.
    normals : (N,3) float array
        Unit normals per point (e.g. from PCA), finite.
    k : float, default 0.01
        pff's scale constant, as in `felzenszwalb`; in the units of the weights.
    min_verts : int, default 20
        Minimum segment size, as in `felzenszwalb`.
    knn : int, default 10
        Neighbours per point: each point i gives the directed edges (i, j) to its `knn` nearest
        other points, nearest first. 0 (only with `rings`): no k-NN edges.
    rings : (N,) integer array, optional
        The LiDAR ring (laser id) of every point. Given, the edges of the sweep's range image
        (`ring_neighbours`: the next shot along the ring and the nearest shot of the ring above)
        come first, followed by the k-NN edges.
    weights : "normal" or "lidar"
        "normal": the Segmentator's weight 1 - n_a.n_b, squared on convex edges (the convexity
        test uses the normal of the edge's second point). "lidar": `felzenszwalb_kernels.lidar_edge_weights`, the
        angle seen from the sensor by which the points leave each other's tangent plane, plus
        `distance_weight` times the angle between them and `intensity_weight` times their
        intensity difference / 255.
    intensity : (N,) float array, optional
        LiDAR return intensity (0..255); needed when `intensity_weight` > 0.
    distance_weight, intensity_weight : float >= 0
        The weights of the distance and intensity terms of `weights="lidar"`.

    Returns
    -------
    (N,) int32 segment ids, contiguous 0..S-1 in order of each segment's first point.
    """
    points = _check_points("points", points)
    normals = _check_points("normals", normals)
    if len(normals) != len(points):
        raise ValueError(f"normals ({len(normals)}) and points ({len(points)}) differ in length")
    if int(knn) != knn or knn < (0 if rings is not None else 1):
        raise ValueError(f"knn must be an integer >= {0 if rings is not None else 1} "
                         f"({'with' if rings is not None else 'without'} rings), got {knn}")
    if weights not in ("normal", "lidar"):
        raise ValueError(f"weights must be 'normal' or 'lidar', got {weights!r}")
    for name, value in (("distance_weight", distance_weight), ("intensity_weight", intensity_weight)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if weights == "lidar" and intensity_weight > 0:
        intensity = np.asarray(intensity if intensity is not None else [], dtype=np.float32)
        if intensity.shape != (len(points),) or not np.isfinite(intensity).all():
            raise ValueError(
                f"intensity_weight > 0 needs a finite intensity per point ({len(points)}), got shape {intensity.shape}"
            )
    else:
        intensity = np.zeros(len(points), dtype=np.float32)
    c = _check_params(k, min_verts)
    n = len(points)
    if n < 2:
        return np.zeros(n, dtype=np.int32)
    a, b = knn_pairs(points, int(knn))
    if rings is not None:
        from preprocess.partition.rings import ring_neighbours

        ring_a, ring_b = ring_neighbours(points, rings)
        a, b = np.concatenate([ring_a, a]), np.concatenate([ring_b, b])
    if weights == "normal":
        w = kernels().edge_weights(points, normals, a, b)
    else:
        from preprocess.partition.felzenszwalb_kernels import lidar_edge_weights  # JIT only: sweeps need no fast start

        w = lidar_edge_weights(points, normals, intensity, a, b, np.float32(distance_weight), np.float32(intensity_weight))
    return _sort_and_segment(n, a, b, w, c, min_verts)
