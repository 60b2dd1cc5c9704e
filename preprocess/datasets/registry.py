"""Dataset name -> reader: which scenes a pipeline's dataset has and how to read one.

ScanNet and the generated dataset share the ScanNet v2 layout (`root/scans/<scene>/`);
nuScenes scenes are keyframe samples of the JSON tables in `root/<version>/`.
"""

from __future__ import annotations

from pathlib import Path

from preprocess.datasets.nuscenes import (
    list_nuscenes_samples,
    nuscenes_frame_files,
    nuscenes_sample_files,
    read_nuscenes_sample,
)
from preprocess.datasets.scannet import list_scannet_scenes, read_scannet_scene, read_split
from preprocess.datasets.scene import Scene
from shared.config import DATASETS, DatasetConfig
from shared.errors import ConfigError, DatasetError


def _check_name(cfg: DatasetConfig) -> None:
    if cfg.name not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg.name!r}: known datasets are {', '.join(DATASETS)}")


def _available(cfg: DatasetConfig) -> list[str]:
    if cfg.name == "nuscenes":
        return list_nuscenes_samples(cfg.root, cfg.version)
    return list_scannet_scenes(cfg.root)


def _expand(entries: list[str], available: list[str], cfg: DatasetConfig, spec: str | list[str]) -> list[str]:
    """Split entries as scene ids; for nuScenes a scene name ("scene-0916") stands for all its
    keyframes. An entry naming nothing on disk is an error naming the split."""
    known = set(available)
    ids: list[str] = []
    for entry in entries:
        if entry in known:
            ids.append(entry)
        elif cfg.name == "nuscenes" and (samples := [s for s in available if s.startswith(f"{entry}_")]):
            ids.extend(samples)
        else:
            where = Path(cfg.root) / spec if isinstance(spec, str) else "dataset.train/val"
            raise DatasetError(
                f"{where}: scene {entry!r} is not under {cfg.root}; download it, remove it from the split, "
                "or lower dataset.max_scenes"
            )
    return ids


def split_of(cfg: DatasetConfig) -> dict[str, list[str]]:
    """Train and val scene ids. "all" for train means every scene not in val; `max_scenes`
    (when > 0) keeps the first that many of each split."""
    _check_name(cfg)
    available = _available(cfg)
    cap = cfg.max_scenes if cfg.max_scenes > 0 else None

    def resolve(spec: str | list[str]) -> list[str]:
        if spec == "all":
            return available
        # each entry is at least one scene, so a capped run only needs its first entries on disk
        return _expand(read_split(cfg.root, spec)[:cap], available, cfg, spec)

    val_entries = set(available if cfg.val == "all" else read_split(cfg.root, cfg.val))
    train = resolve(cfg.train)
    if cfg.train == "all":  # keep every val scene (a nuScenes scene name: all its keyframes) out
        train = [s for s in train if s not in val_entries
                 and not (cfg.name == "nuscenes" and s.rsplit("_", 1)[0] in val_entries)]
    return {"train": train[:cap], "val": resolve(cfg.val)[:cap]}


def list_scenes(cfg: DatasetConfig) -> list[str]:
    """Every scene of the train and val splits, train first, each once."""
    splits = split_of(cfg)
    return list(dict.fromkeys(splits["train"] + splits["val"]))


def read_scene(cfg: DatasetConfig, scene_id: str, load_views: bool = True, frame_skip: int = 1) -> Scene:
    """One scene of the dataset (`frame_skip` thins ScanNet's frames; nuScenes has 6 views per keyframe)."""
    _check_name(cfg)
    if cfg.name == "nuscenes":
        return read_nuscenes_sample(cfg.root, cfg.version, scene_id, load_views=load_views, box_instances=cfg.box_instances)
    return read_scannet_scene(Path(cfg.root) / "scans" / scene_id, load_views=load_views, frame_skip=frame_skip)


def scene_files(cfg: DatasetConfig, scene_id: str) -> list[Path]:
    """The raw files a scene is read from (ScanNet layout: the top-level files of its folder;
    nuScenes: the keyframe's LiDAR sweep, labels and camera images), for cache fingerprints."""
    _check_name(cfg)
    if cfg.name == "nuscenes":
        return nuscenes_sample_files(cfg.root, cfg.version, scene_id, box_instances=cfg.box_instances)
    folder = Path(cfg.root) / "scans" / scene_id
    return sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []


def frame_files(cfg: DatasetConfig, scene_id: str, folder: str) -> list[Path]:
    """The files another program made for a scene's frames in per-frame `folder` (see
    `View.frame_file`), found without reading the scene, for cache fingerprints."""
    _check_name(cfg)
    if cfg.name == "nuscenes":
        return nuscenes_frame_files(cfg.root, cfg.version, scene_id, folder)
    path = Path(cfg.root) / "scans" / scene_id / folder
    return sorted(p for p in path.glob("*") if p.is_file()) if path.is_dir() else []
