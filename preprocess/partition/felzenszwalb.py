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
spinning LiDAR (`weights="lidar"`, see `_lidar_edge_weights`) on its range image's neighbours
(`rings`, see preprocess/partition/rings.py). Normals alone cannot part the objects of a street:
a car's flank, the wall behind it and the next car all face the sensor alike.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy.spatial import cKDTree

from preprocess.partition.checks import finite_points
from preprocess.partition.rings import ring_neighbours

_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)


# error_model="numpy": x/0 gives inf/NaN as in C++, instead of raising ZeroDivisionError.
@njit(cache=True, nogil=True, error_model="numpy")
def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Running mean of unit face normals per vertex, in face order, float32 (segmentator.cpp)."""
    normals = np.zeros((vertices.shape[0], 3), dtype=np.float32)
    counts = np.zeros(vertices.shape[0], dtype=np.int64)
    for f in range(faces.shape[0]):
        i1, i2, i3 = faces[f, 0], faces[f, 1], faces[f, 2]
        ux = vertices[i2, 0] - vertices[i1, 0]
        uy = vertices[i2, 1] - vertices[i1, 1]
        uz = vertices[i2, 2] - vertices[i1, 2]
        vx = vertices[i3, 0] - vertices[i1, 0]
        vy = vertices[i3, 1] - vertices[i1, 1]
        vz = vertices[i3, 2] - vertices[i1, 2]
        cx = uy * vz - uz * vy
        cy = uz * vx - ux * vz
        cz = ux * vy - uy * vx
        norm = np.sqrt(cx * cx + cy * cy + cz * cz)
        cx /= norm
        cy /= norm
        cz /= norm
        for v in (i1, i2, i3):
            t = _ONE / (np.float32(counts[v]) + _ONE)
            s = _ONE - t
            normals[v, 0] = t * cx + s * normals[v, 0]
            normals[v, 1] = t * cy + s * normals[v, 1]
            normals[v, 2] = t * cz + s * normals[v, 2]
            counts[v] += 1
    return normals


@njit(cache=True, nogil=True, inline="always")
def _offset(points: np.ndarray, i: int, j: int) -> tuple:
    """p_j - p_i, component by component, in the points' float32."""
    return points[j, 0] - points[i, 0], points[j, 1] - points[i, 1], points[j, 2] - points[i, 2]


@njit(cache=True, nogil=True, error_model="numpy")
def _edge_weights(points: np.ndarray, normals: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Segmentator's asymmetric weight of each directed edge (a,b), float32."""
    w = np.empty(a.shape[0], dtype=np.float32)
    for e in range(a.shape[0]):
        i, j = a[e], b[e]
        dx, dy, dz = _offset(points, i, j)
        dd = np.sqrt(dx * dx + dy * dy + dz * dz)
        dx /= dd
        dy /= dd
        dz /= dd
        dot = normals[i, 0] * normals[j, 0] + normals[i, 1] * normals[j, 1] + normals[i, 2] * normals[j, 2]
        dot2 = normals[j, 0] * dx + normals[j, 1] * dy + normals[j, 2] * dz
        ww = _ONE - dot
        if dot2 > _ZERO:
            ww = ww * ww
        w[e] = ww
    return w


@njit(cache=True, nogil=True)
def _lidar_edge_weights(
    points: np.ndarray, normals: np.ndarray, intensity: np.ndarray, a: np.ndarray, b: np.ndarray,
    distance_weight: np.float32, intensity_weight: np.float32,
) -> np.ndarray:
    """Weight of each edge (a,b) of a LiDAR sweep, float32, symmetric in a and b:

        w = sqrt((plane / r)^2 + (distance_weight * |d| / r)^2 + (intensity_weight * |I_a - I_b| / 255)^2)

    with d = p_b - p_a, plane = max(|n_a . d|, |n_b . d|) (how far each point lies off the other's
    tangent plane: ~0 along a smooth surface however sparsely it is sampled, large across a depth
    jump or the step from the road up a car's side), and r = max(min(|p_a|, |p_b|), 1 m), the
    range of the nearer point, so that the weight is an angle seen from the sensor and objects
    far away part as readily as near ones although their points lie farther apart. The intensity
    term is Felzenszwalb and Huttenlocher's colour weight with LiDAR intensity (0..255) as the
    colour; the distance term parts coplanar pieces separated by a gap.
    """
    w = np.empty(a.shape[0], dtype=np.float32)
    for e in range(a.shape[0]):
        i, j = a[e], b[e]
        dx, dy, dz = _offset(points, i, j)
        ri = np.sqrt(points[i, 0] ** 2 + points[i, 1] ** 2 + points[i, 2] ** 2)
        rj = np.sqrt(points[j, 0] ** 2 + points[j, 1] ** 2 + points[j, 2] ** 2)
        r = max(min(ri, rj), _ONE)
        plane = max(abs(normals[i, 0] * dx + normals[i, 1] * dy + normals[i, 2] * dz),
                    abs(normals[j, 0] * dx + normals[j, 1] * dy + normals[j, 2] * dz)) / r
        gap = distance_weight * np.sqrt(dx * dx + dy * dy + dz * dz) / r
        shade = intensity_weight * abs(intensity[j] - intensity[i]) / np.float32(255.0)
        w[e] = np.sqrt(plane * plane + gap * gap + shade * shade)
    return w


@njit(cache=True, nogil=True)
def _radix_pass(
    keys: np.ndarray, a: np.ndarray, b: np.ndarray,
    out_keys: np.ndarray, out_a: np.ndarray, out_b: np.ndarray,
    starts: np.ndarray, shift: int,
) -> None:
    """One stable counting-sort pass on the 11-bit digit at `shift`; `starts` are the bucket
    offsets (prefix sums of the digit's histogram) and are consumed."""
    s = np.uint32(shift)
    for i in range(keys.shape[0]):
        d = (keys[i] >> s) & np.uint32(0x7FF)
        j = starts[d]
        starts[d] = j + 1
        out_keys[j] = keys[i]
        out_a[j] = a[i]
        out_b[j] = b[i]


@njit(cache=True, nogil=True)
def _sort_edges(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The edges stably sorted by ascending weight, NaN last (LSD radix sort, 3 x 11 bits).

    The sort is most of the run time; this is several times faster than np.argsort(kind=
    "stable") plus gathers, in the same order. Keys are the float bits made order-preserving,
    with -0 tied to +0 and every NaN after +inf (where C++ comparisons, false for NaN, leave
    them is unspecified). The ends travel with their keys, so every read is sequential.
    """
    n = w.shape[0]
    bits = w.view(np.uint32)
    keys = np.empty(n, dtype=np.uint32)
    starts = np.zeros((3, 2049), dtype=np.int64)
    for i in range(n):
        if np.isnan(w[i]):
            key = np.uint32(0xFFFFFFFF)
        elif bits[i] == np.uint32(0x80000000):  # -0.0 ties with +0.0
            key = np.uint32(0x80000000)
        elif bits[i] >> np.uint32(31):
            key = ~bits[i]
        else:
            key = bits[i] | np.uint32(0x80000000)
        keys[i] = key
        for p in range(3):
            starts[p, ((key >> np.uint32(11 * p)) & np.uint32(0x7FF)) + 1] += 1
    for p in range(3):
        for d in range(2048):
            starts[p, d + 1] += starts[p, d]
    k1, a1, b1 = np.empty_like(keys), np.empty_like(a), np.empty_like(b)
    k2, a2, b2 = np.empty_like(keys), np.empty_like(a), np.empty_like(b)
    _radix_pass(keys, a, b, k1, a1, b1, starts[0], 0)
    _radix_pass(k1, a1, b1, k2, a2, b2, starts[1], 11)
    _radix_pass(k2, a2, b2, k1, a1, b1, starts[2], 22)
    sorted_bits = np.empty(n, dtype=np.uint32)
    for i in range(n):
        key = k1[i]
        sorted_bits[i] = key & np.uint32(0x7FFFFFFF) if key >> np.uint32(31) else ~key
    return a1, b1, sorted_bits.view(np.float32)


@njit(cache=True, nogil=True)
def _find(parent: np.ndarray, x: int) -> int:
    """pff's find: walk to the root and re-point only x to it."""
    y = x
    while y != parent[y]:
        y = parent[y]
    parent[x] = y
    return y


@njit(cache=True, nogil=True)
def _join(parent: np.ndarray, rank: np.ndarray, size: np.ndarray, x: int, y: int) -> None:
    """pff's join by rank: on a tie x goes under y."""
    if rank[x] > rank[y]:
        parent[y] = x
        size[x] += size[y]
    else:
        parent[x] = y
        size[y] += size[x]
        if rank[x] == rank[y]:
            rank[y] += 1


@njit(cache=True, nogil=True)
def _segment(
    n: int, a: np.ndarray, b: np.ndarray, w: np.ndarray, c: np.float32, min_verts: int
) -> np.ndarray:
    """Threshold pass then min-size pass over edges already sorted by weight; contiguous labels."""
    parent = np.arange(n, dtype=np.int32)
    rank = np.zeros(n, dtype=np.int32)
    size = np.ones(n, dtype=np.int32)
    threshold = np.full(n, c, dtype=np.float32)
    for e in range(a.shape[0]):
        ra = _find(parent, a[e])
        rb = _find(parent, b[e])
        if ra != rb and w[e] <= threshold[ra] and w[e] <= threshold[rb]:
            _join(parent, rank, size, ra, rb)
            ra = _find(parent, ra)
            threshold[ra] = w[e] + c / np.float32(size[ra])
    for e in range(a.shape[0]):
        ra = _find(parent, a[e])
        rb = _find(parent, b[e])
        if ra != rb and (size[ra] < min_verts or size[rb] < min_verts):
            _join(parent, rank, size, ra, rb)
    root_label = np.full(n, -1, dtype=np.int32)
    labels = np.empty(n, dtype=np.int32)
    count = 0
    for v in range(n):
        r = _find(parent, v)
        if root_label[r] < 0:
            root_label[r] = count
            count += 1
        labels[v] = root_label[r]
    return labels


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
    a, b, w = _sort_edges(a, b, w)
    return _segment(n, a, b, w, c, int(min_verts))


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
    normals = _vertex_normals(vertices, faces)
    a = faces[:, [0, 0, 2]].ravel()
    b = faces[:, [1, 2, 1]].ravel()
    w = _edge_weights(vertices, normals, a, b)
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
        test uses the normal of the edge's second point). "lidar": `_lidar_edge_weights`, the
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
    a, b = _knn_edges(points, int(knn))
    if rings is not None:
        ring_a, ring_b = ring_neighbours(points, rings)
        a, b = np.concatenate([ring_a, a]), np.concatenate([ring_b, b])
    if weights == "normal":
        w = _edge_weights(points, normals, a, b)
    else:
        w = _lidar_edge_weights(points, normals, intensity, a, b, np.float32(distance_weight), np.float32(intensity_weight))
    return _sort_and_segment(n, a, b, w, c, min_verts)


def _knn_edges(points: np.ndarray, knn: int) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges from each point to its `knn` nearest other points, nearest first."""
    n = len(points)
    query = min(knn + 1, n)
    if query < 2:
        return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int32)
    _, idx = cKDTree(points).query(points, k=query)
    # Coincident points can push a point's own index out of first place: drop it wherever it is.
    not_self = idx != np.arange(n)[:, None]
    keep = np.argsort(~not_self, axis=1, kind="stable")[:, : query - 1]
    b = np.ascontiguousarray(np.take_along_axis(idx, keep, axis=1).ravel(), dtype=np.int32)
    a = np.repeat(np.arange(n, dtype=np.int32), query - 1)
    return a, b
