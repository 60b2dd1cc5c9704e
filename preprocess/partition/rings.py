"""The neighbours of a spinning LiDAR's points in its range image: along and across its rings.

A spinning LiDAR samples a cylinder of rays: each of its lasers (a "ring") sweeps a cone at one
elevation, firing at nearly fixed azimuth steps. On a sweep of nuScenes' 32-beam sensor,
neighbouring shots of a ring lie ~0.33 degrees apart and neighbouring rings ~1.33 degrees, so
the k nearest points in 3D are almost all on the point's own ring: a k-NN graph barely links
rings, and where it does, the links follow whatever lies nearest rather than the surface
scanned. The range image's own neighbourhood does not have that bias: each point is linked to
the next shot of its ring and to the shot of the ring above that is nearest in azimuth.
"""

from __future__ import annotations

import numpy as np

_TWO_PI = 2.0 * np.pi


def ring_neighbours(points: np.ndarray, ring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges (a, b) of the range-image graph of a sweep, int32 point ids.

    Points are grouped by `ring` (laser id) and sorted by azimuth atan2(y, x) in the sensor
    frame. Every point gets two edges: to the next point of its ring in azimuth (the last
    point wraps to the first) and to the point of the next ring up that is nearest in azimuth
    (circular distance; the lower one on a tie). "Up" is the next larger ring id present, as
    nuScenes numbers its rings from the lowest beam (ring 0 at -30.7 degrees) to the highest
    (ring 31 at +10.7 degrees); points of the top ring have no edge upwards. A ring of one
    point links to itself along the ring; such self-edges are dropped.

    points : (N, 3) coordinates in the sensor frame (the LiDAR at the origin).
    ring : (N,) non-negative integer laser ids.
    """
    points = np.asarray(points)
    ring = np.asarray(ring)
    if ring.shape != (len(points),) or not np.issubdtype(ring.dtype, np.integer) or (ring < 0).any():
        raise ValueError(f"ring must hold one non-negative integer laser id per point ({len(points)}), "
                         f"got shape {ring.shape} dtype {ring.dtype}")
    n = len(points)
    azimuth = np.arctan2(points[:, 1], points[:, 0]).astype(np.float64) + np.pi  # [0, 2 pi]
    azimuth[azimuth >= _TWO_PI] = 0.0
    rank = np.unique(ring, return_inverse=True)[1].astype(np.int64)  # 0..R-1, lowest ring first
    order = np.lexsort((azimuth, rank))
    sorted_rank, sorted_azimuth = rank[order], azimuth[order]
    start = np.searchsorted(sorted_rank, np.arange(rank.max() + 2))  # ring r: start[r]..start[r+1]
    position = np.arange(n)
    first, length = start[sorted_rank], np.diff(start)[sorted_rank]

    along = first + (position - first + 1) % length

    has_up = sorted_rank < rank.max()
    up_rank = sorted_rank[has_up] + 1
    up_first, up_length = start[up_rank], np.diff(start)[up_rank]
    # Position in the ring above of the first shot at or after each azimuth, then the nearer
    # of it and the shot before it, both taken circularly within that ring.
    key = sorted_rank * 8.0 + sorted_azimuth  # 8 > 2 pi keeps the rings apart in one sorted array
    after = np.searchsorted(key, up_rank * 8.0 + sorted_azimuth[has_up]) - up_first
    candidates = up_first[:, None] + (after[:, None] + np.array([-1, 0])) % up_length[:, None]
    gap = np.abs(sorted_azimuth[candidates] - sorted_azimuth[has_up, None])
    gap = np.minimum(gap, _TWO_PI - gap)
    up = candidates[np.arange(len(candidates)), np.argmin(gap, axis=1)]

    a = np.concatenate([order, order[has_up]])
    b = np.concatenate([order[along], order[up]])
    keep = a != b
    return a[keep].astype(np.int32), b[keep].astype(np.int32)
