"""The generated default dataset (rooms written as scans: one reconstructed surface, labels and
instances carried from the generated surfaces) and the dataset registry that lists and reads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from preprocess.datasets.registry import list_scenes, read_scene, split_of
from preprocess.datasets.scannet import read_scannet_scene
from preprocess.datasets.scene import Scene, View
from shared.ply import read_ply
from shared.errors import DatasetError
from preprocess.__main__ import main as preprocess_main
from preprocess.labels.labelers import SimulatedCLIPLabeler
from preprocess.labels.simulated import measured_vertices, render_vertex_labels
from shared.render import MeshRaycaster, render
from preprocess.synth import NYU40, generate, generate_scene, make_room
from preprocess.synth.cli import main
from preprocess.synth.rooms import SynthMesh, SynthRoom, build_mesh
from preprocess.synth.shapes import SynthObject, box, rect
from preprocess.synth.scan import MIN_PIECE_M2, SCANNET_VERTICES_PER_M2, SENSOR_RANGE, carry_labels, sensor_depth
from shared.classes import SCANNET, SCANNET_NAMES
from shared.config import DatasetConfig, LabelsConfig, SimulatedCLIPConfig

TINY = dict(resolution=0.25, frames=3, width=40, height=30)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root, scenes=5, seed=7, **TINY)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_splits(tiny):
    assert (tiny / "scannetv2_train.txt").read_text().split() == [f"scene{i:04d}_00" for i in range(4)]
    assert (tiny / "scannetv2_val.txt").read_text().split() == ["scene0004_00"]
    names = {p.relative_to(tiny / "scans" / "scene0002_00").as_posix() for p in (tiny / "scans" / "scene0002_00").rglob("*")}
    assert names == {
        "scene0002_00_vh_clean_2.ply", "scene0002_00_vh_clean_2.labels.ply", "scene0002_00.txt",
        "scene0002_00.aggregation.json", "scene0002_00_vh_clean_2.0.010000.segs.json",
        "color", "depth", "pose", "intrinsic", "color/0.jpg", "color/1.jpg", "color/2.jpg", "depth/0.png",
        "depth/1.png", "depth/2.png", "pose/0.txt", "pose/1.txt", "pose/2.txt", "intrinsic/intrinsic_color.txt",
        "intrinsic/intrinsic_depth.txt", "intrinsic/extrinsic_color.txt", "intrinsic/extrinsic_depth.txt",
    }
    assert not list((tiny / "scans").glob(".*"))  # no partial folders left behind


def test_same_seed_is_byte_identical_and_seeds_differ(tmp_path, tiny):
    generate(tmp_path / "again", scenes=2, seed=7, **TINY)
    again, first = _files(tmp_path / "again" / "scans"), _files(tiny / "scans")
    assert again == {k: v for k, v in first.items() if k.startswith(("scene0000_00", "scene0001_00"))}
    generate_scene(tmp_path / "other" / "scene0000_00", 0, seed=8, **TINY)
    mesh = "scene0000_00/scene0000_00_vh_clean_2.ply"
    assert (tmp_path / "other" / mesh).read_bytes() != first[mesh]


def test_scene_reads_back_and_frames_match_the_mesh(tiny):
    """The frames are images of the generated room, the mesh its reconstruction: where both see a
    surface their depths agree to within the scan's voxel (0.25 * 5/8 m here), as a real scan's
    frames and mesh do."""
    scene = read_scannet_scene(tiny / "scans" / "scene0001_00")
    assert scene.faces.min() == 0 and scene.faces.max() == len(scene.xyz) - 1 and scene.meta["dropped_faces"] == 0
    assert set(np.unique(scene.gt)) <= set(range(-1, 20))
    assert np.array_equal(scene.meta["axis_alignment"], np.eye(4))
    assert scene.meta["info"]["colorWidth"] == "40" and len(scene.views) == 3
    for view in scene.views:
        assert np.allclose(view.intrinsic, [[36, 0, 19.5], [0, 36, 14.5], [0, 0, 1]])
        depth, k_depth = view.load_depth()
        expected, face = render(scene.xyz, scene.faces, view.world_to_camera, k_depth, 40, 30)
        both = (depth > 0) & (face >= 0)
        assert both.mean() > 0.7
        assert np.median(np.abs(depth[both] - expected[both])) < 0.25 * 5 / 8
        assert depth.max() <= SENSOR_RANGE[1] + 0.5
        colour = view.load_color()
        assert colour.shape == (30, 40, 3) and colour[depth > 0].mean() > 20


@pytest.fixture(scope="module")
def scanned(tmp_path_factory) -> list[SynthMesh]:
    """Two rooms scanned at 5 cm voxels: enough detail for the surface to join as a real scan's does."""
    root = tmp_path_factory.mktemp("scanned")
    return [generate_scene(root / f"scene000{i}_00", i, seed=1, resolution=0.08, frames=1, width=160, height=120)
            for i in range(2)]


def _components(faces: np.ndarray, n: int) -> np.ndarray:
    """Connected component of each vertex over the mesh's edges."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return connected_components(sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)))[1]


def _area(xyz: np.ndarray, faces: np.ndarray) -> float:
    corners = xyz[faces].astype(np.float64)
    return float(0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1).sum())


def test_scanned_room_has_scannet_vertex_density(scanned):
    for mesh in scanned:
        assert len(mesh.xyz) / _area(mesh.xyz, mesh.faces) == pytest.approx(SCANNET_VERTICES_PER_M2, rel=0.05)
        assert set(np.unique(mesh.nyu40)) <= set(NYU40.values())
        lo, hi = mesh.xyz.min(0), mesh.xyz.max(0)
        assert lo.min() > -0.1 and hi[2] < 3.1 and np.all(hi[:2] <= 8.1)


def test_room_of_a_chosen_size(tmp_path):
    """`vertices=` decimates the scan to about that many vertices instead of ScanNet's density
    (the scale benchmark's rooms of ScanNet's largest sizes)."""
    mesh = generate_scene(tmp_path / "scene0000_00", 0, seed=7, vertices=2000, **TINY)
    assert len(mesh.xyz) == pytest.approx(2000, rel=0.15)


@pytest.mark.realdata
def test_scannet_density_is_scene0000s(scannet_scene0000):
    mesh = read_ply(scannet_scene0000 / "scene0000_00_vh_clean_2.ply")
    assert len(mesh["xyz"]) / _area(mesh["xyz"], mesh["faces"]) == pytest.approx(SCANNET_VERTICES_PER_M2, rel=1e-3)


def test_labels_come_from_the_nearest_generated_surface():
    """A reconstructed vertex on a generated surface takes that surface's object: on the floor
    around a box the floor's, on the box's top and sides (which meet the floor) the box's."""
    room = SynthRoom("bedroom", (2.0, 2.0, 1.0), [SynthObject("floor", [rect((0, 0, 0), (2, 0, 0), (0, 2, 0))]),
                                                   SynthObject("chair", [box((0.5, 0.5, 0), (1.0, 1.0, 0.5))])],
                     np.eye(4)[None])
    source = build_mesh(room, np.random.default_rng(0), 0.1)
    floor = [[0.2, 0.3, 0.0], [1.5, 1.5, 0.001], [0.49, 0.7, 0.0], [0.7, 1.01, -0.001], [1.9, 0.1, 0.0]]
    chair = [[0.7, 0.8, 0.5], [0.5, 0.7, 0.2], [1.0, 0.9, 0.01], [0.6, 1.0, 0.3], [0.75, 0.5, 0.499]]
    instance = carry_labels(source, MeshRaycaster(source.xyz, source.faces), np.array(floor + chair))
    np.testing.assert_array_equal(instance, [0] * 5 + [1] * 5)


def test_instances_are_consistent_with_labels(tiny):
    """Every vertex's aggregation group names the object whose nyu40 id its .labels.ply holds, and
    the groups cover the mesh with disjoint whole segments of the segs.json."""
    for scene_id in ("scene0000_00", "scene0003_00"):
        folder = tiny / "scans" / scene_id
        scene = read_scannet_scene(folder, load_views=False)
        groups = json.loads((folder / f"{scene_id}.aggregation.json").read_text())["segGroups"]
        segments = np.array(json.loads((folder / f"{scene_id}_vh_clean_2.0.010000.segs.json").read_text())["segIndices"])
        owned = np.concatenate([g["segments"] for g in groups])
        assert len(owned) == len(np.unique(owned)) and set(owned) == set(np.unique(segments))
        assert (scene.instance >= 0).all()
        label = read_ply(folder / f"{scene_id}_vh_clean_2.labels.ply")["label"]
        name = {g["objectId"]: g["label"] for g in groups}
        np.testing.assert_array_equal(label, [NYU40[name[i]] for i in scene.instance])
        np.testing.assert_array_equal(scene.gt, SCANNET.map_raw(label))


def test_scanned_room_is_one_surface(scanned):
    """Objects touching the floor or a wall share the reconstructed surface: one piece holds at
    least 95% of the vertices and nearly every object (the generated room was one piece per object
    part). What stays apart is what a real scan also leaves apart, never fusion debris (no piece
    under MIN_PIECE_M2): a piece joined to the room only through parts too thin or never seen (a
    shower curtain on its rod, a table top over its stem, a patch of upper wall seen only from
    across the room)."""
    for mesh in scanned:
        piece = _components(mesh.faces, len(mesh.xyz))
        sizes = np.bincount(piece)
        assert sizes.max() >= 0.95 * len(mesh.xyz)
        objects = np.unique(mesh.instance)
        assert len(np.unique(mesh.instance[piece == sizes.argmax()])) >= 0.9 * len(objects) and len(objects) > 15
        corners = mesh.xyz[mesh.faces].astype(np.float64)
        area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
        assert np.bincount(piece[mesh.faces[:, 0]], area).min() >= MIN_PIECE_M2


def test_sensor_depth_has_a_consumer_cameras_noise_and_range():
    rng = np.random.default_rng(0)
    for z, sigma in ((1.0, 0.0012 + 0.0019 * 0.6**2), (4.0, 0.0012 + 0.0019 * 3.6**2)):
        read = sensor_depth(np.full(200_000, z, np.float32), rng).astype(np.float64) / 1000
        assert read.mean() == pytest.approx(z, abs=3 * sigma / np.sqrt(len(read)) + 1e-4)
        assert read.std() == pytest.approx(np.sqrt(sigma**2 + 1e-6 / 12), rel=0.02)
    np.testing.assert_array_equal(sensor_depth(np.array([0.0, 0.2, 5.5]), rng), [0, 0, 0])


def _looking_down(height: float) -> np.ndarray:
    world_to_camera = np.eye(4)
    world_to_camera[:3, :3] = [[1, 0, 0], [0, -1, 0], [0, 0, -1]]
    world_to_camera[:3, 3] = -world_to_camera[:3, :3] @ [1.0, 1.0, height]
    return world_to_camera


def test_labeler_sees_what_the_depth_frame_measured():
    """Where a view has depth, each pixel shows the vertex nearest the point the camera measured,
    not the mesh's rendering: a box the reconstruction invented (in the mesh, not in the depth)
    stays unseen, and pixels without a reading show nothing."""
    floor = build_mesh(SynthRoom("office", (2.0, 2.0, 1.0), [SynthObject("floor", [rect((0, 0, 0), (2, 0, 0), (0, 2, 0))]),
                                                            SynthObject("chair", [box((0.8, 0.8, 0.4), (1.2, 1.2, 0.5))])],
                                 np.eye(4)[None]), np.random.default_rng(0), 0.1)
    K = np.array([[40.0, 0, 20], [0, 40.0, 20], [0, 0, 1]])  # 2 m below, the 40 pixels span the floor's 2 m
    depth = np.full((20, 20), 2.0, np.float32)  # half the label map's resolution: the floor, 2 m below
    depth[:, :3] = 0.0  # no reading on the left edge
    world_to_camera = _looking_down(2.0)
    shown = measured_vertices(cKDTree(floor.xyz), (depth, K / [[2], [2], [1]]), world_to_camera, K, 40, 40)
    rendered = render_vertex_labels(floor.xyz, floor.faces, np.arange(len(floor.xyz)), world_to_camera, K, 40, 40)
    assert (shown[:, :6] == -1).all() and (shown[:, 6:] >= 0).all()
    assert (floor.instance[shown[:, 6:]] == 0).all() and (floor.instance[rendered[rendered >= 0]] == 1).any()
    rows, cols = np.mgrid[0:40, 6:40]
    measured = np.stack([1 + (cols - 19.5) * 0.05, 1 - (rows - 19.5) * 0.05], axis=-1)  # the floor point on each ray
    assert np.abs(floor.xyz[shown[:, 6:], :2] - measured).max() <= 0.05 + 1e-6  # its nearest vertex of a 0.1 m grid
    # the labeler, noise-free, reads the floor wherever the camera measured it, the chair nowhere
    scene = Scene("s", floor.xyz, floor.rgb, floor.faces, SCANNET.map_raw(floor.nyu40), views=[View(
        "0", world_to_camera, K, 40, 40, lambda: np.zeros((40, 40, 3), np.uint8), lambda: (depth, K / [[2], [2], [1]]))])
    quiet = SimulatedCLIPConfig(patch=1, confusion=0.0, instance_noise=0.0, surface_noise=0.0, view_noise=0.0, patch_noise=0.0)
    label, _, _ = SimulatedCLIPLabeler(LabelsConfig(label_width=40, simulated=quiet), SCANNET_NAMES).label_views(scene, scene.views)[0]
    assert (label[:, 6:] == SCANNET_NAMES.index("floor")).all()

def test_rooms_hold_every_class_without_overlaps():
    names: set[str] = set()
    for i in range(30):
        room = make_room(np.random.default_rng([0, i]), poses=2)
        names |= {o.name for o in room.objects}
        width, depth, height = room.size
        placed = [o for o in room.objects if o.group >= 0]
        bounds = np.array([o.bounds() for o in placed])  # (objects, lo/hi, xyz)
        groups = np.array([o.group for o in placed])
        apart = groups[:, None] != groups[None, :]
        overlap = np.all(bounds[:, None, 0] < bounds[None, :, 1] - 1e-6, axis=2) & \
            np.all(bounds[None, :, 0] < bounds[:, None, 1] - 1e-6, axis=2)
        assert not (overlap & apart).any()
        assert bounds[:, 0, :2].min() >= -1e-6 and bounds[:, 1, 0].max() <= width + 1e-6
        assert bounds[:, 1, 1].max() <= depth + 1e-6 and bounds[:, 1, 2].max() <= height
        # every camera stands inside the room, clear of the furniture
        cameras = room.camera_to_world[:, :3, 3]
        assert np.all((cameras[:, :2] > 0.5) & (cameras[:, :2] < [width - 0.5, depth - 0.5]))
        assert not np.any(np.all((bounds[None, :, 0] < cameras[:, None]) & (cameras[:, None] < bounds[None, :, 1]), axis=2))
    assert set(SCANNET_NAMES) <= names


def test_colours_do_not_give_the_class_away(tiny):
    """The same palette colours appear on different classes across scenes."""
    colours: dict[int, set[tuple[int, ...]]] = {}
    for scene_id in (f"scene{i:04d}_00" for i in range(5)):
        scene = read_scannet_scene(tiny / "scans" / scene_id, load_views=False)
        for c in np.unique(scene.gt[scene.gt >= 0]):
            colours.setdefault(int(c), set()).update(map(tuple, (scene.rgb[scene.gt == c] // 64).tolist()))
    shared = colours[0] & colours[1]  # wall and floor share coarse colour bins
    assert len(shared) >= 3


def test_cli_main(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--scenes", "1", "--seed", "2", "--frames", "2", "--resolution", "0.3"]) == 0
    assert "wrote 1 scenes" in capsys.readouterr().out
    assert len(list((tmp_path / "scans" / "scene0000_00" / "pose").glob("*.txt"))) == 2
    assert (tmp_path / "scannetv2_val.txt").read_text() == ""


def test_preprocess_synth_command_passes_every_option(tmp_path, capsys):
    args = ["synth", "--out", str(tmp_path), "--scenes", "4", "--frames", "1", "--resolution", "0.3", "--val-fraction", "0.5"]
    assert preprocess_main(args) == 0
    assert (tmp_path / "scannetv2_val.txt").read_text().split() == ["scene0002_00", "scene0003_00"]
    assert len(list((tmp_path / "scans" / "scene0000_00" / "pose").glob("*.txt"))) == 1
    with pytest.raises(SystemExit):
        preprocess_main(["synth", "--out", str(tmp_path), "--val-fraction", "1"])
    assert "--val-fraction must be in [0, 1)" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
def test_registry_splits_and_reads(tiny):
    files = DatasetConfig("synthetic", str(tiny), train="scannetv2_train.txt", val="scannetv2_val.txt")
    assert split_of(files) == {"train": [f"scene{i:04d}_00" for i in range(4)], "val": ["scene0004_00"]}
    capped = DatasetConfig("synthetic", str(tiny), train="scannetv2_train.txt", val="scannetv2_val.txt", max_scenes=2)
    assert list_scenes(capped) == ["scene0000_00", "scene0001_00", "scene0004_00"]
    everything = DatasetConfig("scannet", str(tiny), train="all", val=["scene0002_00"])
    assert split_of(everything)["train"] == ["scene0000_00", "scene0001_00", "scene0003_00", "scene0004_00"]
    scene = read_scene(files, "scene0003_00", frame_skip=2)
    assert scene.scene_id == "scene0003_00" and [v.name for v in scene.views] == ["0", "2"]
    assert read_scene(files, "scene0003_00", load_views=False).views == []


def test_registry_errors_name_the_problem(tiny):
    with pytest.raises(ValueError, match=r"dataset.name = 'kitti' is not one of scannet, synthetic, nuscenes, ply-folder"):
        list_scenes(DatasetConfig("kitti", str(tiny)))
    (tiny / "bad_split.txt").write_text("scene0000_00\nscene0999_00\n")
    with pytest.raises(DatasetError, match=r"bad_split\.txt: scene 'scene0999_00' is not under"):
        split_of(DatasetConfig("synthetic", str(tiny), train="bad_split.txt"))
    with pytest.raises(DatasetError, match=r"scans/scene0999_00: scene folder not found"):
        read_scene(DatasetConfig("synthetic", str(tiny)), "scene0999_00")
