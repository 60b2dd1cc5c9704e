"""VCCS supervoxels: PCL parity on the real ScanNet scene, behaviour on hand-made clouds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData

from preprocess.partition.vccs import vccs

# (voxel, seed) -> supervoxels in PCL 1.13's run (../shared/data/scannet/supervoxel-reference)
PCL_SUPERVOXELS = {(0.02, 0.1): 16585, (0.03, 0.2): 4512, (0.05, 0.3): 1887}


def _majority_agreement(segment: np.ndarray, reference: np.ndarray) -> float:
    """Share of points whose reference label is the majority reference label of their segment."""
    _, seg = np.unique(segment, return_inverse=True)
    _, ref = np.unique(reference, return_inverse=True)
    pairs, counts = np.unique(seg.astype(np.int64) * (ref.max() + 1) + ref, return_counts=True)
    best = np.zeros(seg.max() + 1, dtype=np.int64)
    np.maximum.at(best, pairs // (ref.max() + 1), counts)
    return best.sum() / len(segment)


@pytest.fixture(scope="module")
def scene0000(scannet_scene0000: Path) -> tuple[np.ndarray, np.ndarray]:
    vertex = PlyData.read(scannet_scene0000 / "scene0000_00_vh_clean_2.ply")["vertex"]
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
    rgb = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1)
    return xyz, rgb


@pytest.fixture(scope="module")
def ours_and_pcl(scene0000, shared_data: Path) -> dict[tuple[float, float], tuple[np.ndarray, np.ndarray]]:
    """Our labels (PCL-computed normals, as in the reference run) and PCL's, per setting."""
    xyz, rgb = scene0000
    folder = shared_data / "scannet" / "supervoxel-reference"
    return {
        (voxel, seed): (
            vccs(xyz, colors=rgb, voxel_resolution=voxel, seed_resolution=seed,
                 color_importance=0.2, spatial_importance=0.4, normal_importance=1.0),
            np.load(folder / f"labels_voxel{voxel}_seed{seed}.npy"),
        )
        for voxel, seed in PCL_SUPERVOXELS
    }


@pytest.mark.realdata
@pytest.mark.parametrize("setting", list(PCL_SUPERVOXELS))
def test_matches_pcl_on_scannet(ours_and_pcl, setting):
    ours, pcl = ours_and_pcl[setting]
    labelled = pcl != 0  # PCL leaves unreached voxels at 0; we label them, so compare the rest
    assert _majority_agreement(ours[labelled], pcl[labelled]) >= 0.999
    assert _majority_agreement(pcl[labelled], ours[labelled]) >= 0.999
    assert len(np.unique(pcl[labelled])) == PCL_SUPERVOXELS[setting]
    assert abs(ours.max() + 1 - PCL_SUPERVOXELS[setting]) <= 0.005 * PCL_SUPERVOXELS[setting]


@pytest.mark.realdata
def test_every_point_labelled_and_counts_fall_with_seed_resolution(ours_and_pcl):
    counts = []
    for setting in sorted(PCL_SUPERVOXELS, key=lambda s: s[1]):
        ours, pcl = ours_and_pcl[setting]
        assert ours.dtype == np.int32 and ours.shape == pcl.shape
        assert np.array_equal(np.unique(ours), np.arange(ours.max() + 1))
        counts.append(ours.max() + 1)
    assert counts[0] > counts[1] > counts[2]


def _plane(rng: np.random.Generator, n: int, axes: tuple[int, int], fixed: float) -> np.ndarray:
    """n points uniform on a 1 m square spanning `axes`, the third coordinate at `fixed`."""
    points = np.full((n, 3), fixed)
    points[:, list(axes)] = rng.uniform(0.0, 1.0, (n, 2))
    return points


@pytest.mark.parametrize("given_normals", [False, True])
def test_separated_planes_never_share_a_supervoxel(given_normals):
    rng = np.random.default_rng(0)
    floor = _plane(rng, 3000, (0, 1), 0.0)
    wall = _plane(rng, 3000, (0, 2), 1.05)  # y = 1.05, z in [0, 1]: apart from the floor's edge
    wall[:, 2] += 0.05  # the gap (5 cm) spans more than two 2 cm voxels: no voxel adjacency
    points = np.concatenate([floor, wall]) + [2.0, 1.0, 0.5]
    normals = np.concatenate([np.tile([0.0, 0.0, 1.0], (3000, 1)), np.tile([0.0, 1.0, 0.0], (3000, 1))])
    labels = vccs(points, normals=normals if given_normals else None)
    assert not set(labels[:3000]) & set(labels[3000:])
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))


def test_deterministic():
    rng = np.random.default_rng(1)
    points = rng.uniform(0.0, 2.0, (5000, 3))
    colors = rng.integers(0, 256, (5000, 3), dtype=np.uint8)
    first = vccs(points, colors=colors, voxel_resolution=0.05, seed_resolution=0.25)
    assert np.array_equal(first, vccs(points, colors=colors, voxel_resolution=0.05, seed_resolution=0.25))
    assert first.max() > 0


def test_points_in_one_voxel_make_one_supervoxel():
    # PCL centres its cube on the data, so only a cloud of zero extent fills a single voxel
    points = np.tile([[0.3, -1.2, 2.5]], (40, 1))
    colors = np.random.default_rng(2).integers(0, 256, (40, 3))
    assert np.array_equal(vccs(points, colors=colors), np.zeros(40, dtype=np.int32))


def test_unreached_outlier_joins_the_nearest_supervoxel():
    rng = np.random.default_rng(4)
    plane = _plane(rng, 4000, (0, 1), 0.0)
    outlier = np.array([[0.5, 1.6, 0.0]])  # too sparse to seed at (0.03, 0.2): PCL leaves it at 0
    labels = vccs(np.concatenate([plane, outlier]), voxel_resolution=0.03, seed_resolution=0.2)
    nearest = np.argmin(np.linalg.norm(plane - outlier, axis=1))
    assert labels[-1] == labels[nearest]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": np.zeros((5, 2))}, "points must be a non-empty"),
        ({"points": np.zeros((0, 3))}, "points must be a non-empty"),
        ({"points": np.array([[0.0, np.nan, 0.0], [1.0, 1.0, 1.0]])}, "points contain NaN or infinite"),
        ({"points": np.zeros((5, 3)), "normals": np.zeros((4, 3))}, "normals must be an array of the shape of points"),
        ({"points": np.zeros((5, 3)), "colors": np.full((5, 3), np.inf)}, "colors contain NaN"),
        ({"points": np.zeros((5, 3)), "voxel_resolution": 0.0}, "voxel_resolution must be a positive"),
        ({"points": np.zeros((5, 3)), "seed_resolution": -0.1}, "seed_resolution must be a positive"),
        ({"points": np.zeros((5, 3)), "color_importance": -1.0}, "importances must be finite"),
        ({"points": np.array([[0.0, 0.0, 0.0], [1e6, 0.0, 0.0]]), "voxel_resolution": 0.01}, "raise voxel_resolution"),
    ],
)
def test_bad_input_raises_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        vccs(**kwargs)
