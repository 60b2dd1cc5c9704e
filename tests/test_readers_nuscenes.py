"""nuScenes reader: a hand-made table set with known transforms, bad input, and scene-0916."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from preprocess.datasets.nuscenes import (
    list_nuscenes_samples,
    quaternion_to_matrix,
    read_lidarseg,
    read_nuscenes_sample,
)
from preprocess.datasets.registry import read_scene, scene_files, split_of
from shared.errors import DatasetError
from preprocess.stages import ingest_output
from shared.config import DatasetConfig, load_pipeline

VERSION = "v1.0-test"
# A camera looking along the ego x axis: OpenCV z = ego x, x = -ego y, y = -ego z.
CAM_ROTATION = [0.5, -0.5, 0.5, -0.5]  # (w, x, y, z)


def _yaw(deg: float) -> list[float]:
    half = np.radians(deg) / 2
    return [float(np.cos(half)), 0.0, 0.0, float(np.sin(half))]


def _dataset(root: Path, lidarseg: bool = True) -> Path:
    """One scene of two keyframes: LIDAR_TOP and CAM_FRONT, ego moving 1 m along x between the
    LiDAR and camera timestamps of the second sample, which is also yawed by 90 degrees."""
    tables = {
        "scene": [{"token": "sc", "name": "scene-0001", "nbr_samples": 2, "first_sample_token": "s0"}],
        "sample": [{"token": "s0", "timestamp": 10, "next": "s1", "prev": ""},
                   {"token": "s1", "timestamp": 20, "next": "", "prev": "s0"}],
        "sensor": [{"token": "lid", "channel": "LIDAR_TOP", "modality": "lidar"},
                   {"token": "cam", "channel": "CAM_FRONT", "modality": "camera"}],
        "calibrated_sensor": [
            {"token": "cs_l", "sensor_token": "lid", "translation": [0, 0, 2], "rotation": [1, 0, 0, 0], "camera_intrinsic": []},
            {"token": "cs_c", "sensor_token": "cam", "translation": [1, 0, 1.5], "rotation": CAM_ROTATION,
             "camera_intrinsic": [[100, 0, 50], [0, 100, 40], [0, 0, 1]]},
        ],
        "ego_pose": [
            {"token": "e0l", "translation": [0, 0, 0], "rotation": [1, 0, 0, 0]},
            {"token": "e0c", "translation": [0, 0, 0], "rotation": [1, 0, 0, 0]},
            {"token": "e1l", "translation": [10, 0, 0], "rotation": _yaw(90)},
            {"token": "e1c", "translation": [10, 1, 0], "rotation": _yaw(90)},
        ],
        "sample_data": [],
    }
    points = np.array([[5, 0, 0, 1, 0], [0, 5, -0.5, 2, 1], [-5, 0, 0, 3, 2]], np.float32)
    for s in ("s0", "s1"):
        for channel, cs, ext in (("LIDAR_TOP", "cs_l", "pcd.bin"), ("CAM_FRONT", "cs_c", "jpg")):
            filename = f"samples/{channel}/{s}.{ext}"
            (root / filename).parent.mkdir(parents=True, exist_ok=True)
            if ext == "jpg":
                Image.fromarray(np.zeros((80, 100, 3), np.uint8)).save(root / filename)
            else:
                points.tofile(root / filename)
            tables["sample_data"].append({
                "token": f"{s}_{channel}", "sample_token": s, "ego_pose_token": f"e{s[1]}{'l' if ext != 'jpg' else 'c'}",
                "calibrated_sensor_token": cs, "filename": filename, "is_key_frame": True,
                "width": 100 if ext == "jpg" else 0, "height": 80 if ext == "jpg" else 0,
            })
    if lidarseg:
        tables["lidarseg"] = [{"token": "ls0", "sample_data_token": "s0_LIDAR_TOP", "filename": f"lidarseg/{VERSION}/ls0_lidarseg.bin"}]
        (root / "lidarseg" / VERSION).mkdir(parents=True)
        np.array([17, 31, 24], np.uint8).tofile(root / "lidarseg" / VERSION / "ls0_lidarseg.bin")
        tables["category"] = [{"token": "c", "name": "vehicle.car", "index": 17}]
    (root / VERSION).mkdir()
    for name, records in tables.items():
        (root / VERSION / f"{name}.json").write_text(json.dumps(records))
    return root


def _to_camera(view, xyz: np.ndarray) -> np.ndarray:
    return xyz.astype(np.float64) @ view.world_to_camera[:3, :3].T + view.world_to_camera[:3, 3]


def test_quaternion_matches_a_known_rotation():
    assert np.allclose(quaternion_to_matrix(_yaw(90)), [[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    assert np.allclose(quaternion_to_matrix(CAM_ROTATION), [[0, 0, 1], [-1, 0, 0], [0, -1, 0]])


def test_samples_points_labels_and_camera_chain(tmp_path):
    root = _dataset(tmp_path)
    assert list_nuscenes_samples(root, VERSION) == ["scene-0001_000", "scene-0001_001"]
    first = read_nuscenes_sample(root, VERSION, "scene-0001_000")
    assert first.xyz.dtype == np.float32 and first.xyz.tolist() == [[5, 0, 0], [0, 5, -0.5], [-5, 0, 0]]
    assert first.rgb.shape == (3, 3) and not first.rgb.any()
    assert first.gt.tolist() == [3, -1, 10]  # car, ego (ignored), driveable surface
    assert first.meta["intensity"].tolist() == [1, 2, 3] and first.meta["ring"].tolist() == [0, 1, 2]
    assert [v.name for v in first.views] == ["CAM_FRONT"]
    view = first.views[0]
    assert (view.width, view.height) == (100, 80) and view.load_color().shape == (80, 100, 3)
    # sample 0: ego at the origin at both times; lidar point (5,0,0) -> ego (5,0,2) -> camera (0, -0.5, 4)
    assert np.allclose(_to_camera(view, first.xyz[:1]), [[0, -0.5, 4]])

    second = read_nuscenes_sample(root, VERSION, "scene-0001_001")
    assert second.gt is None
    # sample 1: global = (10,0,0) + yaw90 * ego; the lidar point (5,0,0) is global (10,5,2);
    # the camera's ego is at (10,1,0), so in that ego frame the point is (4,0,2): camera (0,-0.5,3)
    assert np.allclose(_to_camera(second.views[0], second.xyz[:1]), [[0, -0.5, 3]])
    assert read_nuscenes_sample(root, VERSION, "scene-0001_001", load_views=False).views == []


def test_scene_files_and_ingest_key_follow_a_keyframes_files(tmp_path):
    root = _dataset(tmp_path)
    cfg = DatasetConfig("nuscenes", str(root), version=VERSION)
    assert [p.relative_to(root).as_posix() for p in scene_files(cfg, "scene-0001_000")] == [
        "samples/CAM_FRONT/s0.jpg", "samples/LIDAR_TOP/s0.pcd.bin", f"lidarseg/{VERSION}/ls0_lidarseg.bin"]
    assert [p.name for p in scene_files(cfg, "scene-0001_001")] == ["s1.jpg", "s1.pcd.bin"]
    assert scene_files(cfg, "scene-0009_000") == []
    # a re-downloaded sweep of another size gets a new ingest key; the other keyframe keeps its own
    toml = tmp_path / "p.toml"
    toml.write_text(f'[dataset]\nname = "nuscenes"\nroot = "{root}"\nversion = "{VERSION}"\n[store]\npath = "s.zarr"\n')
    pipeline = load_pipeline(toml)
    before = [ingest_output(pipeline, s).key for s in ("scene-0001_000", "scene-0001_001")]
    np.zeros((4, 5), np.float32).tofile(root / "samples" / "LIDAR_TOP" / "s0.pcd.bin")
    after = [ingest_output(pipeline, s).key for s in ("scene-0001_000", "scene-0001_001")]
    assert after[0] != before[0] and after[1] == before[1]


def test_missing_token_is_named(tmp_path):
    root = _dataset(tmp_path)
    table = root / VERSION / "ego_pose.json"
    table.write_text(json.dumps([r for r in json.loads(table.read_text()) if r["token"] != "e1c"]))
    read_nuscenes_sample(root, VERSION, "scene-0001_000")  # not needed by sample 0
    with pytest.raises(DatasetError, match=r"ego_pose\.json: no record with token 'e1c' \(referenced by sample_data s1_CAM_FRONT\)"):
        read_nuscenes_sample(root, VERSION, "scene-0001_001")


def test_missing_files_and_tables_are_named(tmp_path):
    root = _dataset(tmp_path)
    (root / "samples" / "LIDAR_TOP" / "s1.pcd.bin").unlink()
    (root / "samples" / "CAM_FRONT" / "s0.jpg").unlink()
    with pytest.raises(DatasetError, match=r"LIDAR_TOP/s1\.pcd\.bin: LiDAR sweep not found"):
        read_nuscenes_sample(root, VERSION, "scene-0001_001")
    with pytest.raises(DatasetError, match=r"CAM_FRONT/s0\.jpg: camera image not found"):
        read_nuscenes_sample(root, VERSION, "scene-0001_000")
    with pytest.raises(DatasetError, match=r"sample\.json: no keyframe sample 'scene-0001_007'"):
        read_nuscenes_sample(root, VERSION, "scene-0001_007")
    (root / "lidarseg" / VERSION / "ls0_lidarseg.bin").write_bytes(b"\x11\x18")
    with pytest.raises(DatasetError, match=r"ls0_lidarseg\.bin: 2 labels for the 3 points of s0\.pcd\.bin"):
        read_nuscenes_sample(root, VERSION, "scene-0001_000", load_views=False)
    other = _dataset(tmp_path / "other", lidarseg=False)
    (other / VERSION / "calibrated_sensor.json").unlink()
    with pytest.raises(DatasetError, match=r"calibrated_sensor\.json: table not found"):
        list_nuscenes_samples(other, VERSION)


def test_wrong_category_index_is_named(tmp_path):
    root = _dataset(tmp_path)
    (root / VERSION / "category.json").write_text(json.dumps([{"token": "c", "name": "vehicle.car", "index": 16}]))
    with pytest.raises(DatasetError, match=r"category\.json: category 'vehicle\.car' has lidarseg index 16"):
        list_nuscenes_samples(root, VERSION)


# --------------------------------------------------------------------------------------------
# Real data: scene-0916 of v1.0-mini and the 40-point lidarseg sample
# --------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_scene_0916_sweeps_project_into_the_cameras(shared_data):
    root = shared_data / "nuscenes"
    ids = list_nuscenes_samples(root, "v1.0-mini")
    assert len(ids) == 41 and ids[0] == "scene-0916_000" and ids[-1] == "scene-0916_040"
    for scene_id in ids:
        scene = read_nuscenes_sample(root, "v1.0-mini", scene_id)
        assert scene.gt is None and len(scene.xyz) > 30000
        assert [v.name for v in scene.views] == [
            "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT"]
        seen = np.zeros(len(scene.xyz), bool)
        behind_but_inside = 0
        for view in scene.views:
            assert (view.width, view.height) == (1600, 900)
            cam = _to_camera(view, scene.xyz)
            with np.errstate(divide="ignore", invalid="ignore"):
                u, v = (cam @ view.intrinsic.T)[:, :2].T / cam[:, 2]
            in_frame = (u >= 0) & (u < view.width) & (v >= 0) & (v < view.height)
            seen |= in_frame & (cam[:, 2] > 0)
            behind_but_inside += int((in_frame & (cam[:, 2] <= 0)).sum())
        assert 0.35 <= seen.mean() <= 0.65, (scene_id, seen.mean())
        assert behind_but_inside > 0  # the z > 0 test is what keeps these out of `seen`


@pytest.mark.realdata
def test_lidarseg_sample_maps_to_the_16_classes(shared_data):
    folder = shared_data / "nuscenes" / "lidarseg-sample"
    points, labels = read_lidarseg(next(folder.glob("*.pcd.bin")), next(folder.glob("*_lidarseg.bin")))
    raw = np.fromfile(next(folder.glob("*_lidarseg.bin")), np.uint8)
    assert points.shape == (40, 5) and labels.dtype == np.int16
    expected = {17: 3, 24: 10, 27: 13, 28: 14, 30: 15, 31: -1}  # car, driveable, terrain, manmade, vegetation, ego
    assert set(np.unique(raw)) <= set(expected)
    assert labels.tolist() == [expected[int(r)] for r in raw]
    assert (labels == -1).sum() == (raw == 31).sum() > 0


def test_registry_expands_scene_names_into_keyframes(tmp_path):
    root = _dataset(tmp_path)
    cfg = DatasetConfig("nuscenes", str(root), train="all", val=["scene-0001"], version=VERSION)
    assert split_of(cfg) == {"train": [], "val": ["scene-0001_000", "scene-0001_001"]}
    cfg = DatasetConfig("nuscenes", str(root), train=["scene-0001_001"], val=[], version=VERSION)
    assert split_of(cfg) == {"train": ["scene-0001_001"], "val": []}
    assert read_scene(cfg, "scene-0001_001").views[0].name == "CAM_FRONT"
    with pytest.raises(DatasetError, match=r"scene 'scene-0002' is not under"):
        split_of(DatasetConfig("nuscenes", str(root), train=["scene-0002"], version=VERSION))
