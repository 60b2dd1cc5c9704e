"""ScanNet v2 scan folders (and the generated dataset, which uses the same layout).

A scene is the `_vh_clean_2.ply` mesh in its raw frame. Ground truth comes from the
`.labels.ply` (nyu40 ids mapped to the 20 benchmark classes), instances from the aggregation
and over-segmentation JSON files, and views from exported frames (`color/ depth/ pose/
intrinsic/`) or, where none were exported, straight from the raw `.sens` recording.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from preprocess.datasets.scene import Scene, View
from preprocess.datasets.sens import SensFile, open_sens
from preprocess.io.jsonfile import read_json
from shared.ply import read_ply
from shared.classes import SCANNET
from shared.config import DatasetConfig
from shared.errors import DatasetError

DEPTH_SHIFT = 1000.0  # exported depth PNGs hold millimetres


def read_scannet_scene(scene_dir: str | os.PathLike, load_views: bool = True, frame_skip: int = 1) -> Scene:
    """One ScanNet scan folder as a `Scene` (views: every `frame_skip`-th frame with a valid pose)."""
    scene_dir = Path(scene_dir)
    scene_id = scene_dir.name
    if not scene_dir.is_dir():
        raise DatasetError(f"{scene_dir}: scene folder not found; check dataset.root and the scene id")
    if frame_skip < 1:
        raise ValueError(f"frame_skip must be >= 1, got {frame_skip}")
    mesh_path = scene_dir / f"{scene_id}_vh_clean_2.ply"
    if not mesh_path.is_file():
        raise DatasetError(
            f"{mesh_path}: mesh not found; a ScanNet v2 scan folder needs it "
            "(download-scannet.py --type _vh_clean_2.ply)"
        )
    mesh = read_ply(mesh_path)
    if mesh["faces"] is None:
        raise DatasetError(f"{mesh_path}: has no faces; ScanNet's _vh_clean_2.ply is a triangle mesh, download it again")
    xyz = mesh["xyz"]
    rgb = mesh.get("rgb", np.zeros((len(xyz), 3), np.uint8))
    sources = [mesh_path]

    gt = None
    labels_path = scene_dir / f"{scene_id}_vh_clean_2.labels.ply"
    if labels_path.is_file():
        labels = read_ply(labels_path)
        if "label" not in labels or len(labels["xyz"]) != len(xyz):
            raise DatasetError(
                f"{labels_path}: needs a 'label' per vertex of {mesh_path.name} ({len(xyz)} vertices); "
                "download the matching _vh_clean_2.labels.ply"
            )
        gt = SCANNET.map_raw(labels["label"])
        sources.append(labels_path)

    instance = None
    aggregation_path = scene_dir / f"{scene_id}.aggregation.json"
    segs_path = scene_dir / f"{scene_id}_vh_clean_2.0.010000.segs.json"
    if aggregation_path.is_file() and segs_path.is_file():
        instance = _instances(aggregation_path, segs_path, len(xyz))
        sources += [aggregation_path, segs_path]

    info = _read_info(scene_dir / f"{scene_id}.txt")
    meta: dict = {
        "axis_alignment": _axis_alignment(info, scene_dir / f"{scene_id}.txt"),
        "info": info,
        "dropped_faces": mesh["dropped_faces"],
        "skipped_frames": 0,
    }
    views: list[View] = []
    if load_views:
        if (scene_dir / "pose").is_dir():
            views, meta["skipped_frames"] = _exported_views(scene_dir, frame_skip)
        elif (scene_dir / f"{scene_id}.sens").is_file():
            views, meta["skipped_frames"] = _sens_views(open_sens(scene_dir / f"{scene_id}.sens"), frame_skip)
    return Scene(
        scene_id=scene_id, xyz=xyz, rgb=rgb, faces=mesh["faces"], gt=gt, instance=instance,
        views=views, sources=sources, meta=meta,
    )


def list_scannet_scenes(root: str | os.PathLike) -> list[str]:
    """Sorted ids of the scan folders under `root/scans`."""
    scans = Path(root) / "scans"
    if not scans.is_dir():
        raise DatasetError(f"{scans}: folder not found; dataset.root must hold ScanNet's scans/<scene>/ folders")
    return sorted(p.name for p in scans.iterdir() if p.is_dir())


# --------------------------------------------------------------------------------------------
# The reader interface (preprocess/datasets/registry.py)
# --------------------------------------------------------------------------------------------
def list_scenes(cfg: DatasetConfig) -> list[str]:
    return list_scannet_scenes(cfg.root)


def scene_group(scene_id: str) -> str:
    return scene_id


def read_scene(cfg: DatasetConfig, scene_id: str, load_views: bool = True, frame_skip: int = 1) -> Scene:
    return read_scannet_scene(Path(cfg.root) / "scans" / scene_id, load_views=load_views, frame_skip=frame_skip)


def scene_files(cfg: DatasetConfig, scene_id: str) -> list[Path]:
    """The top-level files of the scene's folder."""
    folder = Path(cfg.root) / "scans" / scene_id
    return sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []


def frame_files(cfg: DatasetConfig, scene_id: str, folder: str) -> list[Path]:
    path = Path(cfg.root) / "scans" / scene_id / folder
    return sorted(p for p in path.glob("*") if p.is_file()) if path.is_dir() else []


def frame_folders(cfg: DatasetConfig, folder: str) -> tuple[list[Path], Path]:
    scans = Path(cfg.root) / "scans"
    return [f for f in scans.glob(f"*/{folder}") if f.is_dir()], scans / "<scene>" / folder / "<frame>.png"


# --------------------------------------------------------------------------------------------
# Annotations and meta
# --------------------------------------------------------------------------------------------
def _int_list(values: object, path: Path, what: str) -> np.ndarray:
    """`values` as a 1-D int64 array, or an error naming the file (hand-edited or corrupt JSON)."""
    try:
        array = np.asarray(values, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        array = None
    if array is None or array.ndim != 1:
        raise DatasetError(f"{path}: {what}; download it again")
    return array


def _instances(aggregation_path: Path, segs_path: Path, num_vertices: int) -> np.ndarray:
    """Instance id per vertex (-1 none) from the segment groups of the aggregation."""
    seg_indices = _int_list(
        read_json(segs_path, dict, "download it again").get("segIndices", []), segs_path, "segIndices must be a list of integers"
    )
    if len(seg_indices) != num_vertices:
        raise DatasetError(
            f"{segs_path}: {len(seg_indices)} segIndices for a mesh of {num_vertices} vertices; "
            "download the segs.json that matches the mesh"
        )
    groups = read_json(aggregation_path, dict, "download it again").get("segGroups", [])
    if not isinstance(groups, list) or not all(isinstance(g, dict) and "segments" in g for g in groups):
        raise DatasetError(
            f"{aggregation_path}: segGroups must be a list of objects with 'segments'; download it again"
        )
    seg_ids = [
        _int_list(g["segments"], aggregation_path, "each segGroup's segments must be a list of integers")
        for g in groups
    ]
    object_ids = _int_list(
        [g.get("objectId", g.get("id")) for g in groups], aggregation_path, "every segGroup needs an integer objectId"
    )
    if ((object_ids < 0) | (object_ids > np.iinfo(np.int32).max)).any():
        raise DatasetError(
            f"{aggregation_path}: objectId must be in 0..2^31-1 (instance ids are int32); download it again"
        )
    instance = np.full(num_vertices, -1, dtype=np.int32)
    if not groups:
        return instance
    seg_ids_flat = np.concatenate(seg_ids)
    object_flat = np.repeat(object_ids, [len(s) for s in seg_ids])
    order = np.argsort(seg_ids_flat, kind="stable")
    seg_sorted, object_sorted = seg_ids_flat[order], object_flat[order]
    pos = np.clip(np.searchsorted(seg_sorted, seg_indices), 0, len(seg_sorted) - 1)
    hit = seg_sorted[pos] == seg_indices
    instance[hit] = object_sorted[pos[hit]]
    return instance


def _read_info(path: Path) -> dict[str, str]:
    """`key = value` lines of the scene's .txt ({} where the file is absent)."""
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a text file of 'key = value' lines; download the scene's .txt again") from None
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key.strip()] = value.strip()
    return info


def _axis_alignment(info: dict[str, str], path: Path) -> np.ndarray:
    """The 4x4 that axis-aligns the raw mesh (identity where the .txt gives none)."""
    if "axisAlignment" not in info:
        return np.eye(4)
    try:
        matrix = np.array(info["axisAlignment"].split(), dtype=np.float64).reshape(4, 4)
    except ValueError:
        raise DatasetError(f"{path}: axisAlignment must be 16 numbers; download the scene's .txt again") from None
    if not np.isfinite(matrix).all():
        raise DatasetError(f"{path}: axisAlignment has NaN or infinite entries; download the scene's .txt again")
    return matrix


# --------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------
def _read_matrix(path: Path) -> np.ndarray:
    """A 4x4 text matrix (poses, intrinsics), named in the error when it is not 4x4."""
    try:
        matrix = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (ValueError, OSError) as e:
        raise DatasetError(f"{path}: cannot read a 4x4 matrix ({e}); export the frame again") from None
    if matrix.shape != (4, 4):
        raise DatasetError(f"{path}: holds a {matrix.shape[0]}x{matrix.shape[1]} matrix, expected 4x4; export the frame again")
    return matrix


def _read_intrinsic(path: Path) -> np.ndarray:
    """The 3x3 camera matrix of a 4x4 intrinsic file; unlike poses it has no "invalid" marker."""
    k = _read_matrix(path)[:3, :3]
    if not np.isfinite(k).all():
        raise DatasetError(f"{path}: intrinsic has NaN or infinite entries; export the frame again")
    return k


def _load_image(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _load_depth_png(path: Path, intrinsic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with Image.open(path) as image:
        raw = np.asarray(image)
    return raw.astype(np.float32) / np.float32(DEPTH_SHIFT), intrinsic


def _frame_order(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (-1, name)


def _exported_views(scene_dir: Path, frame_skip: int) -> tuple[list[View], int]:
    """Views from SensReader's export (`pose/`, `color/`, `depth/`, `intrinsic/`)."""
    names = sorted((p.stem for p in (scene_dir / "pose").glob("*.txt")), key=_frame_order)[::frame_skip]
    if not names:
        return [], 0
    k_color = _read_intrinsic(scene_dir / "intrinsic" / "intrinsic_color.txt")
    depth_k_path = scene_dir / "intrinsic" / "intrinsic_depth.txt"
    k_depth = _read_intrinsic(depth_k_path) if depth_k_path.is_file() else None
    first = scene_dir / "color" / f"{names[0]}.jpg"
    if not first.is_file():
        raise DatasetError(f"{first}: colour frame missing for pose/{names[0]}.txt; export colour frames with the poses")
    with Image.open(first) as image:
        width, height = image.size
    views, skipped = [], 0
    for name in names:
        pose_path = scene_dir / "pose" / f"{name}.txt"
        pose = _read_matrix(pose_path)
        if not np.isfinite(pose).all():  # ScanNet marks frames where tracking failed with -inf
            skipped += 1
            continue
        try:
            world_to_camera = np.linalg.inv(pose)
        except np.linalg.LinAlgError:
            raise DatasetError(
                f"{pose_path}: singular pose (not a rigid transform); export the frame again"
            ) from None
        color = scene_dir / "color" / f"{name}.jpg"
        if not color.is_file():
            raise DatasetError(f"{color}: colour frame missing for pose/{name}.txt; export colour frames with the poses")
        depth = scene_dir / "depth" / f"{name}.png"
        load_depth = None
        if depth.is_file():
            if k_depth is None:
                raise DatasetError(f"{depth_k_path}: missing but depth frames exist; export the depth intrinsic too")
            load_depth = partial(_load_depth_png, depth, k_depth)
        views.append(View(
            name=name, world_to_camera=world_to_camera, intrinsic=k_color.copy(), width=width, height=height,
            load_color=partial(_load_image, color), load_depth=load_depth, frame_root=scene_dir, frame=name,
        ))
    return views, skipped


def _sens_depth(sens: SensFile, frame: int) -> tuple[np.ndarray, np.ndarray]:
    return sens.depth(frame), sens.intrinsic_depth[:3, :3].copy()


def _sens_views(sens: SensFile, frame_skip: int) -> tuple[list[View], int]:
    """Views decoded on demand from a raw `.sens` recording."""
    frames = np.arange(0, sens.num_frames, frame_skip)
    valid = np.isfinite(sens.camera_to_world[frames]).all(axis=(1, 2))
    try:
        world_to_camera = np.linalg.inv(sens.camera_to_world[frames[valid]])
    except np.linalg.LinAlgError:
        raise DatasetError(
            f"{sens.path}: a frame has a singular pose (not a rigid transform); download it again"
        ) from None
    views = [
        View(
            name=f"{frame:05d}", world_to_camera=w2c,
            intrinsic=sens.intrinsic_color[:3, :3].copy(), width=sens.color_width, height=sens.color_height,
            load_color=partial(sens.color, int(frame)), load_depth=partial(_sens_depth, sens, int(frame)),
            frame_root=sens.path.parent, frame=f"{frame:05d}",
        )
        for frame, w2c in zip(frames[valid], world_to_camera)
    ]
    return views, int((~valid).sum())
