"""Felzenszwalb on LiDAR sweeps: the range-image graph and the LiDAR edge weights, on a
simulated spinning LiDAR whose scene has a known partition."""

from __future__ import annotations

import numpy as np
import pytest

from preprocess.partition.felzenszwalb import felzenszwalb_points
from preprocess.partition.rings import ring_neighbours


def first_seen_ids(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..S-1 in order of first occurrence: how felzenszwalb_points numbers segments."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse]


def sweep() -> tuple[np.ndarray, ...]:
    """16 rings 2 degrees apart, shots 0.5 degrees apart over 60 degrees, facing a wall at x = 10 m.
    A crate stands against the wall (front face 0.5 m ahead of it, y in [-1, 1], z in [-1.5, 0.5]:
    its sides are hidden from the sensor, so the two touch in the range image) and a poster hangs
    flat on the wall (y in [2, 3], z in [0, 1]), ten times brighter than the wall. Every normal
    faces the sensor, so normals alone cannot tell any of the three apart.
    Returns xyz, ring, normals, intensity and the truth (0 wall, 1 crate, 2 poster)."""
    elevation, azimuth = np.meshgrid(np.radians(np.arange(-15, 16, 2.0)), np.radians(np.arange(-30, 30, 0.5)), indexing="ij")
    ring = np.repeat(np.arange(elevation.shape[0]), elevation.shape[1])
    ray = np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], -1).reshape(-1, 3)
    wall, crate = ray * (10.0 / ray[:, :1]), ray * (9.5 / ray[:, :1])
    on_crate = (np.abs(crate[:, 1]) <= 1) & (crate[:, 2] >= -1.5) & (crate[:, 2] <= 0.5)
    on_poster = ~on_crate & (wall[:, 1] >= 2) & (wall[:, 1] <= 3) & (wall[:, 2] >= 0) & (wall[:, 2] <= 1)
    xyz = np.where(on_crate[:, None], crate, wall)
    normals = np.tile([-1.0, 0.0, 0.0], (len(xyz), 1))
    truth = np.where(on_crate, 1, np.where(on_poster, 2, 0))
    return xyz, ring, normals, np.where(on_poster, 200.0, 20.0), truth


def test_ring_neighbours_link_along_rings_and_to_the_nearest_shot_above() -> None:
    # Ring 0: shots at 0, 90, 180, 270 degrees (points 0-3); ring 5 (the next up): 10, 100, 190,
    # 280 degrees (points 4-7), stored shuffled; ring 9: a single shot at 355 degrees (point 8).
    degrees = np.array([0, 90, 180, 270, 190, 10, 280, 100, 355])
    ring = np.array([0, 0, 0, 0, 5, 5, 5, 5, 9])
    points = np.stack([np.cos(np.radians(degrees)), np.sin(np.radians(degrees)), np.zeros(9)], axis=1)
    a, b = ring_neighbours(points, ring)
    edges = sorted(zip(a.tolist(), b.tolist()))
    along = [(0, 1), (1, 2), (2, 3), (3, 0), (5, 7), (7, 4), (4, 6), (6, 5)]  # azimuth order, wrapping
    up = [(0, 5), (1, 7), (2, 4), (3, 6), (5, 8), (7, 8), (4, 8), (6, 8)]  # 355 is nearest to 10 across 0
    assert edges == sorted(along + up)
    assert a.dtype == b.dtype == np.int32
    with pytest.raises(ValueError, match="ring must hold one non-negative integer"):
        ring_neighbours(points, ring.astype(float))


def test_lidar_weights_part_a_crate_from_the_wall_it_touches_where_normal_weights_merge_them() -> None:
    xyz, ring, normals, intensity, truth = sweep()
    common = dict(k=2.0, min_verts=1, knn=4, rings=ring)
    normal = felzenszwalb_points(xyz, normals, weights="normal", **common)
    np.testing.assert_array_equal(normal, np.zeros(len(xyz)))  # equal normals: every weight is 0
    lidar = felzenszwalb_points(xyz, normals, weights="lidar", **common)
    np.testing.assert_array_equal(lidar, first_seen_ids((truth == 1).astype(int)))  # the poster is flat on the wall
    with_intensity = felzenszwalb_points(xyz, normals, weights="lidar", intensity=intensity, intensity_weight=1.0, **common)
    np.testing.assert_array_equal(with_intensity, first_seen_ids(truth))


def test_range_image_links_the_rings_that_few_nearest_neighbours_leave_apart() -> None:
    xyz, ring, normals, _, truth = sweep()
    rings_only = felzenszwalb_points(xyz, normals, 2.0, 1, knn=0, rings=ring, weights="lidar")
    np.testing.assert_array_equal(rings_only, first_seen_ids((truth == 1).astype(int)))
    # Shots 0.5 degrees apart on rings 2 degrees apart: a point's 4 nearest neighbours lie on its
    # own ring, so a 4-NN graph cannot hold the crate's rings together.
    knn_only = felzenszwalb_points(xyz, normals, 2.0, 1, knn=4, weights="lidar")
    assert len(np.unique(knn_only[truth == 1])) > 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": "colour"}, "weights must be 'normal' or 'lidar'"),
        ({"weights": "lidar", "intensity_weight": 0.5}, r"intensity_weight > 0 needs a finite intensity per point \(4\)"),
        ({"weights": "lidar", "distance_weight": -1.0}, "distance_weight must be a finite number >= 0"),
        ({"knn": 0}, r"knn must be an integer >= 1 \(without rings\)"),
        ({"rings": np.array([0, 1])}, "ring must hold one non-negative integer laser id per point"),
    ],
)
def test_bad_arguments_are_named(kwargs, message) -> None:
    xyz = np.eye(4, 3)
    with pytest.raises(ValueError, match=message):
        felzenszwalb_points(xyz, np.tile([0.0, 0.0, 1.0], (4, 1)), **kwargs)
