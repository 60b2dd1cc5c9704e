"""A pipeline's dataset: which scenes its splits hold and how to read one, through the reader
module its entry in `shared.datasets.DATASETS` names.

A reader module offers (`READER_FUNCTIONS`):
- `list_scenes(cfg) -> list[str]`: every scene id under `cfg.root`, sorted;
- `scene_group(scene_id) -> str`: the name a split file may use for a group of scenes (a
  nuScenes scene name stands for all its keyframes; elsewhere a scene is its own group);
- `read_scene(cfg, scene_id, load_views, frame_skip) -> Scene`;
- `scene_files(cfg, scene_id) -> list[Path]`: the raw files a scene is read from (cache
  fingerprints);
- `frame_files(cfg, scene_id, folder) -> list[Path]`: the files another program made for the
  scene's frames in per-frame `folder` (see `View.frame_file`), found without reading the scene;
- `frame_folders(cfg, folder) -> (list[Path], Path)`: the per-frame folders named `folder` that
  exist, and the path a frame's file takes (placeholders in <>), for the checks made before
  any scene is processed.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path
from types import ModuleType

from preprocess.datasets.scene import Scene
from shared.config import DatasetConfig
from shared.datasets import DATASETS
from shared.errors import DatasetError, pick

READER_FUNCTIONS = ("list_scenes", "scene_group", "read_scene", "scene_files", "frame_files", "frame_folders")


def reader(cfg: DatasetConfig) -> ModuleType:
    return reader_module(cfg.name)


@cache
def reader_module(name: str) -> ModuleType:
    """The reader module of dataset `name`, checked once: one error where its class names no
    module, names one that is not there, or names one without every function of a reader."""
    entry = pick(DATASETS, name, "dataset.name")
    where = f"shared/datasets.py: {entry.__name__}.reader"
    if not entry.reader:
        raise DatasetError(f"{where} is not set; name the dataset's reader module, e.g. "
                           f"reader = \"preprocess.datasets.<module>\" (README: your own data)")
    try:
        module = importlib.import_module(entry.reader)
    except ModuleNotFoundError as e:
        if e.name is None or not (entry.reader + ".").startswith(e.name + "."):
            raise  # the module is there, and something it imports is not
        raise DatasetError(f"{where} = {entry.reader!r}: no such module; write the reader as "
                           f"{entry.reader.replace('.', '/')}.py (README: your own data)") from None
    missing = [f for f in READER_FUNCTIONS if not callable(getattr(module, f, None))]
    if missing:
        raise DatasetError(f"{module.__file__}: the reader of dataset {name!r} lacks {', '.join(missing)}; "
                           "a reader module offers the functions preprocess/datasets/registry.py lists")
    return module


def read_split(root: str | Path, spec: str | list[str]) -> list[str]:
    """Scene ids of a split given as a text file relative to `root` (one id a line) or a list."""
    if isinstance(spec, list):
        return list(spec)
    path = Path(root) / spec
    if not path.is_file():
        raise DatasetError(f"{path}: split file not found; give \"all\", a list of scene ids, or a file under {root}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _expand(entries: list[str], available: list[str], cfg: DatasetConfig, spec: str | list[str]) -> list[str]:
    """Split entries as scene ids; an entry naming a group (`scene_group`) stands for all its
    scenes. An entry naming nothing on disk is an error naming the split."""
    known, group = set(available), reader(cfg).scene_group
    ids: list[str] = []
    for entry in entries:
        if entry in known:
            ids.append(entry)
        elif members := [s for s in available if group(s) == entry]:
            ids.extend(members)
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
    available = reader(cfg).list_scenes(cfg)
    group = reader(cfg).scene_group
    cap = cfg.max_scenes if cfg.max_scenes > 0 else None

    def resolve(spec: str | list[str]) -> list[str]:
        if spec == "all":
            return available
        # each entry is at least one scene, so a capped run only needs its first entries on disk
        return _expand(read_split(cfg.root, spec)[:cap], available, cfg, spec)

    val_entries = set(available if cfg.val == "all" else read_split(cfg.root, cfg.val))
    train = resolve(cfg.train)
    if cfg.train == "all":  # keep every val scene (and every scene of a val group) out
        train = [s for s in train if s not in val_entries and group(s) not in val_entries]
    return {"train": train[:cap], "val": resolve(cfg.val)[:cap]}


def list_scenes(cfg: DatasetConfig) -> list[str]:
    """Every scene of the train and val splits, train first, each once."""
    splits = split_of(cfg)
    return list(dict.fromkeys(splits["train"] + splits["val"]))


def read_scene(cfg: DatasetConfig, scene_id: str, load_views: bool = True, frame_skip: int = 1) -> Scene:
    """One scene of the dataset (`frame_skip` thins a video's frames; nuScenes has 6 views per keyframe)."""
    return reader(cfg).read_scene(cfg, scene_id, load_views, frame_skip)


def scene_files(cfg: DatasetConfig, scene_id: str) -> list[Path]:
    """The raw files a scene is read from, for cache fingerprints."""
    return reader(cfg).scene_files(cfg, scene_id)


def frame_files(cfg: DatasetConfig, scene_id: str, folder: str) -> list[Path]:
    """The files another program made for a scene's frames in per-frame `folder`, for cache fingerprints."""
    return reader(cfg).frame_files(cfg, scene_id, folder)
