"""nuScenes keyframes read straight from the JSON tables (no devkit).

One scene per keyframe sample: the LiDAR sweep in the LiDAR frame, and the six camera images
of that sample, each with the full chain LiDAR -> ego(t_lidar) -> global -> ego(t_cam) ->
camera, so the cameras' motion between their exposure and the sweep is accounted for. Only
the tables needed are read (sample, sample_data, calibrated_sensor, ego_pose, sensor, scene;
lidarseg and category where present), so partial table sets without log/map work too.

With `box_instances`, every point also gets the id of the annotated 3D box it lies in
(sample_annotation.json; ids are positions in instance.json, so one object keeps its id over
a scene's keyframes), -1 outside every box: the instances partitions are measured against.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache, partial
from glob import escape as glob_escape
from pathlib import Path

import numpy as np
from PIL import Image

from preprocess.datasets.scene import Scene, View
from preprocess.io.jsonfile import read_json
from shared.classes import NUSCENES, NUSCENES_RAW_NAMES
from shared.config import DatasetConfig
from shared.errors import DatasetError
from shared.lidar import read_lidar_points

CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")
LIDAR = "LIDAR_TOP"
_TABLES = ("scene", "sample", "sample_data", "calibrated_sensor", "ego_pose", "sensor")
# The fields this reader uses, checked once when a table is read so that a hand-edited or
# truncated table fails there, naming the file and record, instead of deep in the index.
_FIELDS: dict[str, dict[str, type]] = {
    "scene": {"token": str, "name": str, "nbr_samples": int, "first_sample_token": str},
    "sample": {"token": str, "timestamp": int, "next": str},
    "sample_data": {"token": str, "sample_token": str, "ego_pose_token": str, "calibrated_sensor_token": str,
                    "filename": str, "is_key_frame": bool, "width": int, "height": int},
    "calibrated_sensor": {"token": str, "sensor_token": str, "translation": list, "rotation": list,
                          "camera_intrinsic": list},
    "ego_pose": {"token": str, "translation": list, "rotation": list},
    "sensor": {"token": str, "channel": str},
    "lidarseg": {"sample_data_token": str, "filename": str},
    "category": {"name": str},
    "sample_annotation": {"token": str, "sample_token": str, "instance_token": str, "translation": list,
                          "size": list, "rotation": list},
    "instance": {"token": str},
}


@dataclass(frozen=True)
class NuScenesIndex:
    """The tables of one nuScenes version, keyed by token, and the keyframes of each sample."""

    root: Path
    table_dir: Path
    tables: dict[str, dict[str, dict]]  # table name -> token -> record
    samples: dict[str, str]  # scene id ("scene-0916_000") -> sample token, sorted by scene id
    keyframes: dict[str, dict[str, dict]]  # sample token -> channel -> keyframe sample_data record
    lidarseg: dict[str, str]  # LiDAR sample_data token -> labels file (relative to root)

    def record(self, table: str, token: str, referrer: str) -> dict:
        """A record by token; a dangling reference names the table and who refers to it."""
        try:
            return self.tables[table][token]
        except KeyError:
            raise DatasetError(
                f"{self.table_dir / table}.json: no record with token {token!r} (referenced by {referrer}); "
                "the tables are incomplete, download this version's metadata again"
            ) from None


# --------------------------------------------------------------------------------------------
# The reader interface (preprocess/datasets/registry.py)
# --------------------------------------------------------------------------------------------
def list_scenes(cfg: DatasetConfig) -> list[str]:
    return list_nuscenes_samples(cfg.root, cfg.version)


def scene_group(scene_id: str) -> str:
    """A keyframe's scene name ("scene-0916" for "scene-0916_000"): a split may name scenes."""
    return scene_id.rsplit("_", 1)[0]


def read_scene(cfg: DatasetConfig, scene_id: str, load_views: bool = True, frame_skip: int = 1) -> Scene:
    """One keyframe (its 6 cameras are not a video: `frame_skip` does not apply)."""
    return read_nuscenes_sample(cfg.root, cfg.version, scene_id, load_views=load_views, box_instances=cfg.box_instances)


def scene_files(cfg: DatasetConfig, scene_id: str) -> list[Path]:
    return nuscenes_sample_files(cfg.root, cfg.version, scene_id, box_instances=cfg.box_instances)


def frame_files(cfg: DatasetConfig, scene_id: str, folder: str) -> list[Path]:
    return nuscenes_frame_files(cfg.root, cfg.version, scene_id, folder)


def frame_folders(cfg: DatasetConfig, folder: str) -> tuple[list[Path], Path]:
    path = Path(cfg.root) / folder
    return [path] if path.is_dir() else [], path / "<CAM>" / "<image stem>.png"


def list_nuscenes_samples(root: str | os.PathLike, version: str) -> list[str]:
    """Scene ids of every keyframe sample, "<scene name>_<index in the scene, 3 digits>"."""
    return list(load_index(root, version).samples)


def nuscenes_sample_files(
    root: str | os.PathLike, version: str, scene_id: str, box_instances: bool = False
) -> list[Path]:
    """The files a keyframe is read from (LiDAR sweep, its lidarseg labels, camera images, and
    with `box_instances` the box tables), from the cached tables alone: what the ingest cache
    key fingerprints. Unknown ids give []."""
    index = load_index(root, version)
    frames = index.keyframes.get(index.samples.get(scene_id, ""), {})
    files = [index.root / record["filename"] for _, record in sorted(frames.items())]
    labels = index.lidarseg.get(frames[LIDAR]["token"]) if LIDAR in frames else None
    boxes = [index.table_dir / f"{name}.json" for name in _BOX_TABLES] if box_instances and files else []
    return files + ([index.root / labels] if labels else []) + boxes


def read_nuscenes_sample(
    root: str | os.PathLike, version: str, scene_id: str, load_views: bool = True, box_instances: bool = False
) -> Scene:
    """One keyframe: LiDAR points (LiDAR frame), lidarseg ground truth where present, 6 cameras,
    and with `box_instances` each point's annotated box as `instance` (-1: in no box)."""
    index = load_index(root, version)
    if scene_id not in index.samples:
        raise DatasetError(
            f"{index.table_dir / 'sample'}.json: no keyframe sample {scene_id!r}; "
            "list the ids with list_nuscenes_samples (e.g. 'scene-0916_000')"
        )
    sample_token = index.samples[scene_id]
    frames = index.keyframes.get(sample_token, {})
    if LIDAR not in frames:
        raise DatasetError(
            f"{index.table_dir / 'sample_data'}.json: sample {sample_token} has no {LIDAR} keyframe; "
            "the tables are incomplete, download this version's metadata again"
        )
    lidar = frames[LIDAR]
    lidar_path = index.root / lidar["filename"]
    sources = [lidar_path]
    labels_file = index.lidarseg.get(lidar["token"])
    if labels_file is None:
        points, gt = read_lidar_points(lidar_path), None
    else:
        points, gt = read_lidarseg(lidar_path, index.root / labels_file)
        sources.append(index.root / labels_file)

    lidar_to_ego = _transform(
        index.record("calibrated_sensor", lidar["calibrated_sensor_token"], f"sample_data {lidar['token']}"),
        index.table_dir / "calibrated_sensor.json",
    )
    ego_to_global = _transform(
        index.record("ego_pose", lidar["ego_pose_token"], f"sample_data {lidar['token']}"),
        index.table_dir / "ego_pose.json",
    )
    lidar_to_global = ego_to_global @ lidar_to_ego
    views = [_camera_view(index, c, frames[c], lidar_to_global) for c in _camera_channels(frames)] if load_views else []
    sample = index.record("sample", sample_token, scene_id)
    xyz = np.ascontiguousarray(points[:, :3])
    instance = None
    if box_instances:
        instance = box_ids(xyz, lidar_to_global, load_boxes(root, version).get(sample_token, _NO_BOXES))
        sources += [index.table_dir / f"{name}.json" for name in _BOX_TABLES]
    return Scene(
        scene_id=scene_id,
        xyz=xyz,
        rgb=np.zeros((len(points), 3), np.uint8),
        gt=gt,
        instance=instance,
        views=views,
        sources=sources,
        meta={
            "sample_token": sample_token,
            "lidar_token": lidar["token"],
            "timestamp": sample["timestamp"],
            "intensity": np.ascontiguousarray(points[:, 3]),
            "ring": points[:, 4].astype(np.uint8),
            "lidar_to_global": lidar_to_global,
        },
    )


def read_lidarseg(points_path: str | os.PathLike, labels_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A sweep and its lidarseg labels: (N,5) float32 points and (N,) int16 ids of the 16
    evaluation classes (-1 for noise and the classes the benchmark ignores)."""
    points = read_lidar_points(points_path)
    labels_path = Path(labels_path)
    if not labels_path.is_file():
        raise DatasetError(f"{labels_path}: lidarseg labels not found; download nuScenes-lidarseg for this version")
    raw = np.fromfile(labels_path, dtype=np.uint8)
    if len(raw) != len(points):
        raise DatasetError(
            f"{labels_path}: {len(raw)} labels for the {len(points)} points of {Path(points_path).name}; "
            "the labels belong to another sweep or are truncated"
        )
    if raw.max(initial=0) >= len(NUSCENES_RAW_NAMES):
        raise DatasetError(f"{labels_path}: label {int(raw.max())} is not a lidarseg class id (0-31); the file is corrupt")
    return points, NUSCENES.map_raw(raw)


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _cached_index(root: Path, version: str) -> NuScenesIndex:
    table_dir = root / version
    if not table_dir.is_dir():
        raise DatasetError(f"{table_dir}: table folder not found; dataset.root must hold <version>/ (dataset.version = {version!r})")
    tables = {name: {r["token"]: r for r in _read_table(table_dir / f"{name}.json")} for name in _TABLES}
    lidarseg: dict[str, str] = {}
    if (table_dir / "lidarseg.json").is_file():
        lidarseg = {r["sample_data_token"]: r["filename"] for r in _read_table(table_dir / "lidarseg.json")}
    if (table_dir / "category.json").is_file():
        _check_categories(table_dir / "category.json")

    channel_of = {
        token: tables["sensor"][cs["sensor_token"]]["channel"]
        for token, cs in tables["calibrated_sensor"].items()
        if cs["sensor_token"] in tables["sensor"]
    }
    keyframes: dict[str, dict[str, dict]] = {}
    for sd in tables["sample_data"].values():
        if sd["is_key_frame"]:
            if sd["calibrated_sensor_token"] not in channel_of:
                raise DatasetError(
                    f"{table_dir / 'calibrated_sensor'}.json: sample_data {sd['token']} refers to calibration "
                    f"{sd['calibrated_sensor_token']!r} without a known sensor; download this version's metadata again"
                )
            keyframes.setdefault(sd["sample_token"], {})[channel_of[sd["calibrated_sensor_token"]]] = sd
    # Only keyframes are read: dropping sweeps' records keeps trainval's index a tenth the size.
    kept = [sd for frames in keyframes.values() for sd in frames.values()]
    tables["sample_data"] = {sd["token"]: sd for sd in kept}
    tables["ego_pose"] = {sd["ego_pose_token"]: tables["ego_pose"][sd["ego_pose_token"]]
                          for sd in kept if sd["ego_pose_token"] in tables["ego_pose"]}

    samples: dict[str, str] = {}
    for scene in tables["scene"].values():
        token = scene["first_sample_token"]
        for i in range(scene["nbr_samples"]):
            if token not in tables["sample"]:
                raise DatasetError(
                    f"{table_dir / 'sample'}.json: no record with token {token!r} (sample {i} of {scene['name']}); "
                    "the tables are incomplete, download this version's metadata again"
                )
            samples[f"{scene['name']}_{i:03d}"] = token
            token = tables["sample"][token]["next"]
    return NuScenesIndex(root, table_dir, tables, dict(sorted(samples.items())), keyframes, lidarseg)


def load_index(root: str | os.PathLike, version: str) -> NuScenesIndex:
    """The tables of `root/version`, read once per process (trainval's tables are large)."""
    return _cached_index(Path(root).resolve(), version)


def _read_table(path: Path) -> list[dict]:
    """A table's records, each holding the fields of `_FIELDS` with their JSON types."""
    if not path.is_file():
        raise DatasetError(f"{path}: table not found; download the nuScenes metadata for this version")
    records = read_json(path, list, "download the nuScenes metadata again")
    fields = _FIELDS[path.stem].items()
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise DatasetError(f"{path}: record {i} is not a JSON object; download the nuScenes metadata again")
        bad = [k for k, kind in fields if not isinstance(record.get(k), kind) or (k == "filename" and not record[k])]
        if bad:
            raise DatasetError(
                f"{path}: record {i} has missing or invalid fields {bad} (expected "
                f"{dict((k, t.__name__) for k, t in fields)}, filenames non-empty); download the nuScenes metadata again"
            )
    return records


def _check_categories(path: Path) -> None:
    """lidarseg ids are positions in NUSCENES_RAW_NAMES; a table that disagrees would shift classes."""
    for c in _read_table(path):
        if "index" not in c:
            continue
        known = isinstance(c["index"], int) and 0 <= c["index"] < len(NUSCENES_RAW_NAMES)
        if not known or NUSCENES_RAW_NAMES[c["index"]] != c["name"]:
            raise DatasetError(
                f"{path}: category {c['name']!r} has lidarseg index {c['index']!r}, which shared/classes.py knows as "
                f"{NUSCENES_RAW_NAMES[c['index']] if known else 'nothing'!r}; "
                "use the official nuScenes-lidarseg category table"
            )


# --------------------------------------------------------------------------------------------
# 3D boxes
# --------------------------------------------------------------------------------------------
_BOX_TABLES = ("sample_annotation", "instance")


@dataclass(frozen=True)
class Boxes:
    """The annotated 3D boxes of one sample, in the global frame."""

    center: np.ndarray  # (B,3) metres
    size: np.ndarray  # (B,3) width, length, height (nuScenes' wlh), metres
    rotation: np.ndarray  # (B,3,3) box frame (x along the length) -> global
    instance: np.ndarray  # (B,) int32 position of the box's object in instance.json


_NO_BOXES = Boxes(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros(0, np.int32))


@lru_cache(maxsize=2)
def _cached_boxes(table_dir: Path) -> dict[str, Boxes]:
    instance_of = {r["token"]: i for i, r in enumerate(_read_table(table_dir / "instance.json"))}
    path = table_dir / "sample_annotation.json"
    by_sample: dict[str, list[tuple]] = {}
    for i, r in enumerate(_read_table(path)):
        center, size, rotation = _numbers(r["translation"], (3,)), _numbers(r["size"], (3,)), _numbers(r["rotation"], (4,))
        if center is None or size is None or rotation is None or not (size >= 0).all() or not np.linalg.norm(rotation) > 0:
            raise DatasetError(
                f"{path}: record {i} ({r['token']}) needs a translation and a non-negative size of 3 finite numbers "
                "and a non-zero rotation quaternion of 4; download this version's metadata again"
            )
        if r["instance_token"] not in instance_of:
            raise DatasetError(
                f"{table_dir / 'instance'}.json: no record with token {r['instance_token']!r} (referenced by "
                f"sample_annotation {r['token']}); the tables are incomplete, download this version's metadata again"
            )
        by_sample.setdefault(r["sample_token"], []).append(
            (center, size, quaternion_to_matrix(rotation), instance_of[r["instance_token"]]))
    return {
        token: Boxes(np.stack([b[0] for b in boxes]), np.stack([b[1] for b in boxes]),
                     np.stack([b[2] for b in boxes]), np.array([b[3] for b in boxes], np.int32))
        for token, boxes in by_sample.items()
    }


def load_boxes(root: str | os.PathLike, version: str) -> dict[str, Boxes]:
    """Every sample's boxes (sample token -> Boxes), read once per process."""
    return _cached_boxes(load_index(root, version).table_dir)


def box_ids(xyz: np.ndarray, sensor_to_global: np.ndarray, boxes: Boxes) -> np.ndarray:
    """(N,) int32 instance id of the box each point lies in (boundary included), -1 for none.

    A point is in a box when its offset from the centre, in the box frame, is within half the
    length (x), width (y) and height (z): nuscenes-devkit's `points_in_box`, whose counts are
    the tables' `num_lidar_pts` (all 2,424 boxes of scene-0916 agree). A point in several
    boxes takes the smallest of them.
    """
    world = np.asarray(xyz, np.float64) @ sensor_to_global[:3, :3].T + sensor_to_global[:3, 3]
    ids = np.full(len(world), -1, np.int32)
    half = boxes.size[:, [1, 0, 2]] / 2  # length, width, height along the box's x, y, z
    for b in np.argsort(-np.prod(boxes.size, axis=1), kind="stable"):  # smallest last: it wins
        local = (world - boxes.center[b]) @ boxes.rotation[b]
        ids[(np.abs(local) <= half[b]).all(axis=1)] = boxes.instance[b]
    return ids


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
def quaternion_to_matrix(q: list[float]) -> np.ndarray:
    """Rotation matrix of a unit quaternion given as (w, x, y, z), nuScenes' order."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _transform(record: dict, table: Path) -> np.ndarray:
    """4x4 that maps a record's child frame into its parent (sensor -> ego, ego -> global)."""
    rotation, translation = _numbers(record["rotation"], (4,)), _numbers(record["translation"], (3,))
    if rotation is None or translation is None or not np.linalg.norm(rotation) > 0:
        raise DatasetError(
            f"{table}: record {record['token']} needs a non-zero rotation quaternion of 4 numbers and a translation "
            "of 3 finite numbers; download this version's metadata again"
        )
    matrix = np.eye(4)
    matrix[:3, :3] = quaternion_to_matrix(rotation)
    matrix[:3, 3] = translation
    return matrix


def _numbers(values: list, shape: tuple[int, ...]) -> np.ndarray | None:
    """`values` as finite float64 of `shape`, None where they are not."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return array if array.shape == shape and np.isfinite(array).all() else None


def _camera_channels(frames: dict[str, dict]) -> list[str]:
    present = [c for c in frames if c.startswith("CAM_")]
    return sorted(present, key=lambda c: (CAMERAS.index(c) if c in CAMERAS else len(CAMERAS), c))


def _load_image(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _camera_view(index: NuScenesIndex, channel: str, sd: dict, lidar_to_global: np.ndarray) -> View:
    referrer = f"sample_data {sd['token']}"
    calibration = index.record("calibrated_sensor", sd["calibrated_sensor_token"], referrer)
    intrinsic = _numbers(calibration["camera_intrinsic"], (3, 3))
    if intrinsic is None:
        raise DatasetError(
            f"{index.table_dir / 'calibrated_sensor'}.json: record {calibration['token']} has no finite 3x3 "
            "camera_intrinsic; download this version's metadata again"
        )
    image_path = index.root / sd["filename"]
    if not image_path.is_file():
        raise DatasetError(f"{image_path}: camera image not found; download the nuScenes samples/CAM_* blobs")
    camera_to_ego = _transform(calibration, index.table_dir / "calibrated_sensor.json")
    ego_to_global = _transform(
        index.record("ego_pose", sd["ego_pose_token"], referrer), index.table_dir / "ego_pose.json"
    )
    world_to_camera = np.linalg.inv(ego_to_global @ camera_to_ego) @ lidar_to_global
    return View(
        name=channel, world_to_camera=world_to_camera, intrinsic=intrinsic,
        width=int(sd["width"]), height=int(sd["height"]), load_color=partial(_load_image, image_path),
        frame_root=index.root, frame=_frame_name(channel, image_path),
    )


def _frame_name(channel: str, image_path: Path) -> str:
    """A camera image's name in per-frame folders: `<CAM>/<image stem>` (under `<root>/<folder>/`)."""
    return f"{channel}/{image_path.stem}"


def nuscenes_frame_files(root: str | os.PathLike, version: str, scene_id: str, folder: str) -> list[Path]:
    """The files under `<root>/<folder>/` made for a keyframe's camera images (any suffix), from
    the cached tables alone: what a side-file fingerprint covers. Unknown ids give []."""
    index = load_index(root, version)
    frames = index.keyframes.get(index.samples.get(scene_id, ""), {})
    files: list[Path] = []
    for channel in _camera_channels(frames):
        name = _frame_name(channel, index.root / frames[channel]["filename"])
        files += sorted((index.root / folder).glob(f"{glob_escape(name)}.*"))
    return files
