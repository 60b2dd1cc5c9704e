"""ScanNet reader: the real scene0000_00, tiny generated scan folders, .sens files, bad input."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from preprocess.datasets.registry import split_of
from preprocess.datasets.scannet import list_scannet_scenes, read_scannet_scene
from shared.config import DatasetConfig
from shared.errors import DatasetError
from preprocess.datasets.sens import open_sens
from shared.ply import write_ply

K = np.array([[50.0, 0, 16], [0, 50.0, 12], [0, 0, 1]])
W, H = 32, 24


def _k4(k: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = k
    return out


def _pose(tx: float) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, 3] = (tx, 0.5, -2.0)
    return pose


def _scan(root: Path, name: str = "scene0001_00", frames: bool = True) -> Path:
    """A minimal scan folder: 4-vertex mesh, labels, meta, instances and 3 exported frames
    (the second with ScanNet's -inf pose of a tracking failure)."""
    d = root / "scans" / name
    d.mkdir(parents=True)
    xyz = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.5]], np.float32)
    rgb = np.arange(12, dtype=np.uint8).reshape(4, 3)
    faces = np.array([[0, 1, 2], [1, 3, 2]])
    write_ply(d / f"{name}_vh_clean_2.ply", xyz, rgb, faces, alpha=np.full(4, 255, np.uint8))
    # nyu40: wall, chair, 13 (pillow: not benchmarked), 0 (unannotated)
    write_ply(d / f"{name}_vh_clean_2.labels.ply", xyz, rgb, faces, label=np.array([1, 5, 13, 0], np.uint16))
    (d / f"{name}.txt").write_text("axisAlignment = 0 -1 0 1 1 0 0 2 0 0 1 3 0 0 0 1\nsceneType = Office\n")
    (d / f"{name}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"segIndices": [7, 7, 900, 31]}))
    (d / f"{name}.aggregation.json").write_text(json.dumps({"segGroups": [
        {"id": 0, "objectId": 0, "segments": [900], "label": "chair"},
        {"id": 1, "objectId": 1, "segments": [7], "label": "wall"},
    ]}))
    if frames:
        for sub in ("color", "depth", "pose", "intrinsic"):
            (d / sub).mkdir()
        np.savetxt(d / "intrinsic" / "intrinsic_color.txt", _k4(K), fmt="%f")
        np.savetxt(d / "intrinsic" / "intrinsic_depth.txt", _k4(K / 2), fmt="%f")
        for i in range(3):
            pose = _pose(i) if i != 1 else np.full((4, 4), -np.inf)
            np.savetxt(d / "pose" / f"{i * 10}.txt", pose, fmt="%f")
            Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(d / "color" / f"{i * 10}.jpg")
            Image.fromarray(np.full((H // 2, W // 2), 1000 + i, np.uint16)).save(d / "depth" / f"{i * 10}.png")
    return d


def test_exported_scan_folder(tmp_path):
    scene = read_scannet_scene(_scan(tmp_path))
    assert scene.scene_id == "scene0001_00"
    assert scene.xyz.shape == (4, 3) and scene.rgb[3].tolist() == [9, 10, 11]
    assert scene.faces.tolist() == [[0, 1, 2], [1, 3, 2]]
    assert scene.gt.dtype == np.int16 and scene.gt.tolist() == [0, 4, -1, -1]
    assert scene.instance.tolist() == [1, 1, 0, -1]
    assert scene.meta["axis_alignment"].tolist() == [[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]]
    assert scene.meta["info"]["sceneType"] == "Office"
    assert scene.meta["skipped_frames"] == 1
    assert [v.name for v in scene.views] == ["0", "20"]
    view = scene.views[1]
    assert (view.width, view.height) == (W, H) and np.allclose(view.intrinsic, K, atol=1e-6)
    assert np.allclose(view.world_to_camera @ _pose(2), np.eye(4))
    assert view.load_color().shape == (H, W, 3)
    depth, k_depth = view.load_depth()
    assert depth.dtype == np.float32 and depth.shape == (H // 2, W // 2) and np.all(depth == np.float32(1.002))
    assert np.allclose(k_depth, K / 2, atol=1e-6)
    assert [p.name for p in scene.sources] == [
        "scene0001_00_vh_clean_2.ply", "scene0001_00_vh_clean_2.labels.ply",
        "scene0001_00.aggregation.json", "scene0001_00_vh_clean_2.0.010000.segs.json",
    ]


def test_frame_skip_and_optional_parts(tmp_path):
    d = _scan(tmp_path)
    assert [v.name for v in read_scannet_scene(d, frame_skip=2).views] == ["0", "20"]
    assert read_scannet_scene(d, frame_skip=2).meta["skipped_frames"] == 0
    assert read_scannet_scene(d, load_views=False).views == []
    for f in ("depth/0.png", "depth/20.png", "scene0001_00_vh_clean_2.labels.ply", "scene0001_00.txt"):
        (d / f).unlink()
    scene = read_scannet_scene(d)
    assert scene.gt is None and all(v.load_depth is None for v in scene.views)
    assert np.array_equal(scene.meta["axis_alignment"], np.eye(4))


def test_missing_scene_folder_is_named(tmp_path):
    with pytest.raises(DatasetError, match=r"scans/scene0404_00: scene folder not found"):
        read_scannet_scene(tmp_path / "scans" / "scene0404_00")


def test_missing_mesh_is_named(tmp_path):
    d = _scan(tmp_path, frames=False)
    (d / "scene0001_00_vh_clean_2.ply").unlink()
    with pytest.raises(DatasetError, match=r"scene0001_00_vh_clean_2\.ply: mesh not found"):
        read_scannet_scene(d)


def test_truncated_mesh_is_named(tmp_path):
    d = _scan(tmp_path, frames=False)
    mesh = d / "scene0001_00_vh_clean_2.ply"
    mesh.write_bytes(mesh.read_bytes()[:-7])
    with pytest.raises(DatasetError, match=r"scene0001_00_vh_clean_2\.ply: corrupt or truncated PLY"):
        read_scannet_scene(d)


def test_pose_of_wrong_shape_is_named(tmp_path):
    d = _scan(tmp_path)
    np.savetxt(d / "pose" / "20.txt", np.eye(3))
    with pytest.raises(DatasetError, match=r"pose/20\.txt: holds a 3x3 matrix, expected 4x4"):
        read_scannet_scene(d)


def test_labels_of_another_mesh_are_named(tmp_path):
    d = _scan(tmp_path, frames=False)
    write_ply(d / "scene0001_00_vh_clean_2.labels.ply", np.zeros((3, 3)), label=np.zeros(3, np.uint16))
    with pytest.raises(DatasetError, match=r"labels\.ply: needs a 'label' per vertex .* \(4 vertices\)"):
        read_scannet_scene(d)


def test_list_and_splits(tmp_path):
    _scan(tmp_path, "scene0002_00", frames=False)
    _scan(tmp_path, "scene0001_00", frames=False)
    (tmp_path / "val.txt").write_text("scene0002_00\n\n")
    assert list_scannet_scenes(tmp_path) == ["scene0001_00", "scene0002_00"]
    split = lambda train, val: split_of(DatasetConfig("scannet", str(tmp_path), train, val))  # noqa: E731
    assert split("all", "val.txt") == {"train": ["scene0001_00"], "val": ["scene0002_00"]}
    assert split(["scene0001_00"], []) == {"train": ["scene0001_00"], "val": []}
    with pytest.raises(DatasetError, match=r"nosuch\.txt: split file not found"):
        split("nosuch.txt", [])
    with pytest.raises(DatasetError, match=r"empty/scans: folder not found"):
        list_scannet_scenes(tmp_path / "empty")


# --------------------------------------------------------------------------------------------
# .sens
# --------------------------------------------------------------------------------------------
def _write_sens(path: Path, poses: list[np.ndarray], colors: list[np.ndarray], depths: list[np.ndarray]) -> None:
    """A ScanNet SensReader v4 file: jpeg colour, zlib depth, depth shift 1000."""
    def mat(m):
        return struct.pack("<16f", *np.asarray(m, np.float32).ravel())

    with open(path, "wb") as f:
        f.write(struct.pack("<I", 4) + struct.pack("<Q", 6) + b"tester")
        f.write(mat(_k4(K)) + mat(np.eye(4)) + mat(_k4(K / 2)) + mat(np.eye(4)))
        f.write(struct.pack("<2i", 2, 1) + struct.pack("<4I", W, H, W // 2, H // 2) + struct.pack("<f", 1000.0))
        f.write(struct.pack("<Q", len(poses)))
        for i, (pose, color, depth) in enumerate(zip(poses, colors, depths)):
            buf = io.BytesIO()
            Image.fromarray(color).save(buf, format="JPEG", quality=95)
            color_bytes, depth_bytes = buf.getvalue(), zlib.compress(depth.astype("<u2").tobytes())
            f.write(mat(pose) + struct.pack("<4Q", 100 + i, 200 + i, len(color_bytes), len(depth_bytes)))
            f.write(color_bytes + depth_bytes)


def _sens_frames(n: int):
    rng = np.random.default_rng(0)
    poses = [_pose(i) for i in range(n)]
    poses[2] = np.full((4, 4), -np.inf)
    colors = [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(n)]
    depths = [rng.integers(0, 5000, (H // 2, W // 2)).astype(np.uint16) for _ in range(n)]
    return poses, colors, depths


def test_sens_file_is_indexed_and_decoded_on_demand(tmp_path):
    poses, colors, depths = _sens_frames(4)
    _write_sens(tmp_path / "x.sens", poses, colors, depths)
    sens = open_sens(tmp_path / "x.sens")
    assert sens.num_frames == 4 and sens.sensor_name == "tester"
    assert (sens.color_compression, sens.depth_compression, sens.depth_shift) == ("jpeg", "zlib_ushort", 1000.0)
    assert (sens.color_width, sens.color_height, sens.depth_width, sens.depth_height) == (W, H, W // 2, H // 2)
    assert sens.timestamps[3].tolist() == [103, 203]
    assert np.allclose(sens.camera_to_world[1], poses[1])
    assert np.array_equal(sens.depth(3), depths[3].astype(np.float32) / np.float32(1000))
    buf = io.BytesIO()
    Image.fromarray(colors[1]).save(buf, format="JPEG", quality=95)
    assert np.array_equal(sens.color(1), np.asarray(Image.open(buf).convert("RGB")))


def test_scene_views_from_sens(tmp_path):
    d = _scan(tmp_path, frames=False)
    poses, colors, depths = _sens_frames(5)
    _write_sens(d / "scene0001_00.sens", poses, colors, depths)
    scene = read_scannet_scene(d)
    assert [v.name for v in scene.views] == ["00000", "00001", "00003", "00004"]
    assert scene.meta["skipped_frames"] == 1
    view = scene.views[2]
    assert np.allclose(view.world_to_camera @ poses[3], np.eye(4), atol=1e-6)
    depth, k_depth = view.load_depth()
    assert np.array_equal(depth, depths[3].astype(np.float32) / np.float32(1000))
    assert np.allclose(k_depth, K / 2)
    assert view.load_color().shape == (H, W, 3)
    assert [v.name for v in read_scannet_scene(d, frame_skip=2).views] == ["00000", "00004"]


def test_truncated_sens_is_named(tmp_path):
    poses, colors, depths = _sens_frames(3)
    _write_sens(tmp_path / "t.sens", poses, colors, depths)
    data = (tmp_path / "t.sens").read_bytes()
    (tmp_path / "t.sens").write_bytes(data[:-50])
    with pytest.raises(DatasetError, match=r"t\.sens: truncated or corrupt \.sens file"):
        open_sens(tmp_path / "t.sens")


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_scene0000_00(scannet_scene0000):
    scene = read_scannet_scene(scannet_scene0000)
    assert scene.xyz.shape == (81369, 3) and scene.faces.shape == (153587, 3)
    assert scene.gt.min() == -1 and scene.gt.max() <= 19
    assert 0.68 <= (scene.gt >= 0).mean() <= 0.69
    assert len(np.unique(scene.instance[scene.instance >= 0])) == 55
    assert np.allclose(scene.meta["axis_alignment"][0], [0.945519, 0.325568, 0, -5.38439])
    assert scene.meta["skipped_frames"] == 0
    assert [v.name for v in scene.views] == ["00000", "00011", "00102"]
    xyz = scene.xyz.astype(np.float64)
    for view in scene.views:
        assert (view.width, view.height) == (1296, 968) and view.load_depth is None
        cam = xyz @ view.world_to_camera[:3, :3].T + view.world_to_camera[:3, 3]
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u, v = (cam @ view.intrinsic.T)[:, :2].T / z
        inside = (z > 0) & (u >= 0) & (u < view.width) & (v >= 0) & (v < view.height)
        assert inside.sum() > 4000
    assert scene.views[0].load_color().shape == (968, 1296, 3)
