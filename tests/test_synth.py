"""The generated default dataset and the dataset registry that lists and reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from preprocess.datasets.registry import list_scenes, read_scene, split_of
from preprocess.datasets.scannet import read_scannet_scene
from shared.errors import DatasetError
from preprocess.__main__ import main as preprocess_main
from shared.render import render
from preprocess.synth import NYU40, generate, generate_scene, make_room
from preprocess.synth.cli import main
from shared.classes import SCANNET_NAMES
from shared.config import DatasetConfig

TINY = dict(resolution=0.25, min_vertices=0, frames=3, width=40, height=30)


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
    scene = read_scannet_scene(tiny / "scans" / "scene0001_00")
    assert scene.faces.min() == 0 and scene.faces.max() == len(scene.xyz) - 1 and scene.meta["dropped_faces"] == 0
    assert set(np.unique(scene.gt)) <= set(range(-1, 20))
    assert np.array_equal(scene.meta["axis_alignment"], np.eye(4))
    assert scene.meta["info"]["colorWidth"] == "40" and len(scene.views) == 3
    for view in scene.views:
        assert np.allclose(view.intrinsic, [[36, 0, 19.5], [0, 36, 14.5], [0, 0, 1]])
        depth, k_depth = view.load_depth()
        expected, face = render(scene.xyz, scene.faces, view.world_to_camera, k_depth, 40, 30)
        millimetres = np.rint(depth * 1000)
        assert np.abs(millimetres - np.rint(expected * 1000)).max() <= 1
        assert np.all((millimetres == 0) == (face < 0))
        colour = view.load_color()
        assert colour.shape == (30, 40, 3) and colour[face >= 0].mean() > 20


def test_default_room_is_scannet_sized(tmp_path):
    mesh = generate_scene(tmp_path / "scene0000_00", 3, seed=0, frames=1, width=32, height=24)
    assert len(mesh.xyz) >= 50_000
    assert set(np.unique(mesh.nyu40)) <= set(NYU40.values())
    lo, hi = mesh.xyz.min(0), mesh.xyz.max(0)
    assert lo.min() > -0.02 and hi[2] < 3.02 and np.all(hi[:2] <= 8.02)


def test_rooms_hold_every_class_without_overlaps():
    names: set[str] = set()
    for i in range(30):
        room = make_room(np.random.default_rng([0, i]), frames=2)
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
