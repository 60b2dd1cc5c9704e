"""Your own scans: a folder of PLY files, one scene per file (`dataset.name = "ply-folder"`).

    <root>/<scene>.ply    a triangle mesh or a point cloud: vertex x, y, z; optional red, green,
                          blue (0-255) and nx, ny, nz; optional integer `label` (the class id in
                          the order of the pipeline's dataset.classes; any other value, e.g. -1
                          or 255, is unlabelled) and `instance` (an object id, -1 for none)
    <root>/<split>.txt    optional split files, one scene id (file name without .ply) a line

The scene id is the file name without `.ply`. Scenes have no camera views, so no 2D teacher
labels them: train on the per-point labels (train.method = "gt") or bring a labelled layout.
A scene is read as `python -m train predict` reads a PLY (`shared.scans.scan_of_ply`), so a
model trained here sees a new scan of the same kind as it saw its training scans.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from preprocess.datasets.scene import Scene
from shared.config import DatasetConfig
from shared.datasets import PlyFolder
from shared.errors import DatasetError
from shared.ply import read_ply
from shared.scans import scan_of_ply


def list_scenes(cfg: DatasetConfig) -> list[str]:
    root = Path(cfg.root)
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found; dataset.root must be the folder holding your .ply scenes")
    scenes = sorted(p.stem for p in root.glob("*.ply") if p.is_file())
    if not scenes:
        raise DatasetError(f"{root}: no .ply files; put one PLY per scene (mesh or point cloud) in it")
    return scenes


def scene_group(scene_id: str) -> str:
    return scene_id


def read_scene(cfg: DatasetConfig, scene_id: str, load_views: bool = True, frame_skip: int = 1) -> Scene:
    """One PLY as a Scene: its vertices, colours (black where it has none), faces where it is a
    mesh, normals where it has them, ground truth where it has a `label` property, instances
    where it has `instance`."""
    path = Path(cfg.root) / f"{scene_id}.ply"
    ply = read_ply(path)
    scan = scan_of_ply(path, ply)
    return Scene(
        scene_id=scene_id, xyz=scan.xyz, rgb=scan.rgb if scan.rgb is not None else np.zeros(scan.xyz.shape, np.uint8),
        faces=scan.faces, normal=scan.normal,
        gt=None if "label" not in ply else PlyFolder.classes(cfg).map_raw(_integers(ply["label"], path, "label")),
        instance=None if "instance" not in ply else _integers(ply["instance"], path, "instance").astype(np.int32),
        sources=[path], meta={"dropped_faces": ply["dropped_faces"]},
    )


def _integers(values: np.ndarray, path: Path, name: str) -> np.ndarray:
    """A vertex property that must hold whole numbers (integer, or a float type holding integers)."""
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64)
    if np.issubdtype(values.dtype, np.floating) and np.isfinite(values).all() and (values == np.round(values)).all():
        return values.astype(np.int64)
    raise DatasetError(f"{path}: vertex property '{name}' must hold whole numbers (class or object ids), "
                       f"got {values.dtype}; write it as an integer property")


def scene_files(cfg: DatasetConfig, scene_id: str) -> list[Path]:
    path = Path(cfg.root) / f"{scene_id}.ply"
    return [path] if path.is_file() else []


def frame_files(cfg: DatasetConfig, scene_id: str, folder: str) -> list[Path]:
    return []  # no camera views, so no per-frame files


def frame_folders(cfg: DatasetConfig, folder: str) -> tuple[list[Path], Path]:
    return [], Path(cfg.root) / "<no camera views>"
