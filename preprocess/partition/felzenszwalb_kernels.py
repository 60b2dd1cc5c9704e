"""Felzenszwalb's compiled kernels (see `felzenszwalb.py` for what they reproduce and why).

Kept apart from the public functions so that a program can run them without importing Numba:
`felzenszwalb_aot` compiles exactly this file ahead of time, and `kernels()` there serves the
ahead-of-time build when one matches this file's content, else these JIT-compiled functions.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)


@njit(cache=True, nogil=True, inline="always")
def _offset(points: np.ndarray, i: int, j: int) -> tuple:
    """p_j - p_i, component by component, in the points' float32."""
    return points[j, 0] - points[i, 0], points[j, 1] - points[i, 1], points[j, 2] - points[i, 2]


# error_model="numpy": x/0 gives inf/NaN as in C++, instead of raising ZeroDivisionError.
@njit(cache=True, nogil=True, error_model="numpy")
def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
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


@njit(cache=True, nogil=True, error_model="numpy")
def edge_weights(points: np.ndarray, normals: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
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
def lidar_edge_weights(
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
def sort_edges(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
def segment(
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
