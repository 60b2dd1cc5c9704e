"""SPG superpoints: the partition problem built exactly as the reference was, every point
labelled, coarser with stronger regularisation, and planes of different orientation apart."""

from __future__ import annotations

import numpy as np
import pytest
from plyfile import PlyData

from preprocess.partition.cut_pursuit import cut_pursuit, partition_energy
from preprocess.partition.superpoints import spg_graph, superpoints


def _floor_and_wall() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 1 m floor (z = 0) and a 1 m wall (y = 0) meeting along the x axis, 2.5 cm grids with
    2 mm noise; returns points, which plane, and each point's distance from the seam."""
    grid = np.arange(0.0, 1.0001, 0.025)
    a, b = (v.ravel() for v in np.meshgrid(grid, grid, indexing="ij"))
    floor = np.stack([a, b, np.zeros_like(a)], axis=1)
    wall = np.stack([a, np.zeros_like(a), b + 0.025], axis=1)
    points = np.concatenate([floor, wall]) + np.random.default_rng(0).normal(0.0, 0.002, (2 * a.size, 3))
    plane = np.repeat([0, 1], a.size)
    return points, plane, np.hypot(points[:, 1], points[:, 2])


@pytest.mark.parametrize(("voxel", "reach"), [(0.0, 0.1), (0.05, 0.2)])
def test_perpendicular_planes_separate(voxel: float, reach: float) -> None:
    points, plane, seam = _floor_and_wall()
    segment = superpoints(points, voxel=voxel)
    # Beyond the reach of 45 neighbours (on 2.5 cm points or 5 cm voxels) a neighbourhood
    # sees one plane only; there each plane is one superpoint of its own.
    far = seam > reach
    floor, wall = np.unique(segment[far & (plane == 0)]), np.unique(segment[far & (plane == 1)])
    assert floor.size == 1 and wall.size == 1 and floor[0] != wall[0]
    assert segment.dtype == np.int32 and segment.shape == plane.shape


def test_voxel_means_label_every_point_by_its_voxel() -> None:
    points, _, _ = _floor_and_wall()
    segment = superpoints(points, voxel=0.05, reg=0.01)
    xyz = points.astype(np.float32)  # the grid superpoints() uses
    cell = np.floor((xyz - xyz.min(axis=0)) / np.float32(0.05)).astype(np.int64)
    _, voxel_of_point = np.unique(cell, axis=0, return_inverse=True)
    assert segment.min() == 0
    # one superpoint per voxel
    assert np.unique(np.stack([voxel_of_point, segment]), axis=1).shape[1] == voxel_of_point.max() + 1


def test_energy_is_that_of_the_returned_partition() -> None:
    points, _, _ = _floor_and_wall()
    colors = np.random.default_rng(1).integers(0, 256, points.shape)
    segment, energy = superpoints(points, colors, reg=0.05, return_energy=True)
    features, source, target, weight = spg_graph(points, colors)
    assert features.shape == (points.shape[0], 7)
    assert energy == pytest.approx(partition_energy(features, source, target, weight, segment, 0.05), rel=1e-9)
    assert cut_pursuit(features, source, target, weight, 0.05)[1] == energy


def test_tiny_clouds() -> None:
    assert superpoints(np.zeros((1, 3))).tolist() == [0]
    two = superpoints(np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert two.shape == (2,) and two.min() == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"points": np.zeros((5, 2))},
        {"points": np.full((5, 3), np.nan)},
        {"points": np.zeros((5, 3)), "colors": np.zeros((4, 3))},
        {"points": np.zeros((5, 3)), "k_nn": 5, "k_graph": 10},
        {"points": np.zeros((5, 3)), "voxel": -1.0},
        {"points": np.zeros((5, 3)), "lambda_edge_weight": 0.0},
    ],
)
def test_bad_input_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        superpoints(**kwargs)


@pytest.fixture(scope="module")
def scene_points(scannet_scene0000) -> np.ndarray:
    vertex = PlyData.read(scannet_scene0000 / "scene0000_00_vh_clean_2.ply")["vertex"]
    return np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)


@pytest.mark.realdata
def test_graph_equals_the_reference_one(scene_points: np.ndarray, shared_data) -> None:
    folder = shared_data / "scannet" / "superpoint-reference"
    features, source, target, weight = spg_graph(scene_points)
    np.testing.assert_allclose(features, np.load(folder / "features.npy"), atol=1e-5)
    reference = np.load(folder / "graph.npz")
    np.testing.assert_array_equal(source, reference["source"])
    np.testing.assert_array_equal(target, reference["target"])
    np.testing.assert_allclose(weight, reference["weight"], atol=1e-6)


@pytest.mark.realdata
def test_every_vertex_labelled_and_coarser_with_reg(scene_points: np.ndarray) -> None:
    counts = []
    for reg in (0.03, 0.1, 0.3):
        segment = superpoints(scene_points, reg=reg)
        assert segment.shape == (scene_points.shape[0],) and segment.dtype == np.int32
        assert np.array_equal(np.unique(segment), np.arange(segment.max() + 1))
        counts.append(segment.max() + 1)
    assert counts[0] > counts[1] > counts[2] > 1
