"""The datasets `dataset.name` can choose: `DATASETS`, name -> class.

A class carries what both programs must know about a dataset: its class table (what the
store's ground truth indexes, what reports name), the [dataset] keys of its own, what its
scenes are (meshes or point clouds, with camera views or without: which labelers and
partitions can work on them), and `reader`, the name of its reader module in
preprocess/datasets/, which only preprocessing imports. Config validation, the schema, the
checks, the reports and the dataset registry ask this dict; nothing else spells a dataset's
name.

So a new dataset is two modules and a pipeline file (README: your own data): its class here,
which the trainer reads (it loads the pipeline file and names the classes without importing
preprocess/), and its reader module, which reads raw files into preprocessing's scenes (the
functions preprocess/datasets/registry.py lists). Without the class the pipeline file does not
load (the error says where the class goes); a reader module that is missing or lacks a function
is one error when preprocessing starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar

from shared.classes import NUSCENES, SCANNET, ClassTable, user_table

if TYPE_CHECKING:
    from shared.config import DatasetConfig

Fail = Callable[..., None]  # (key below [dataset], what is wrong, *other keys it is with) -> raises ConfigError


# What the error for an unknown dataset.name adds.
NEW_DATASET = ("a dataset of your own is a class in shared/datasets.py's DATASETS and a reader module in "
               "preprocess/datasets/ (README: your own data)")


class Dataset:
    """What a dataset is; subclasses fill in the class attributes."""

    reader: ClassVar[str] = ""  # its reader module, e.g. "preprocess.datasets.scannet"
    table: ClassVar[ClassTable | None] = None  # its benchmark classes (None: its pipeline lists them)
    options: ClassVar[tuple[str, ...]] = ()  # its own [dataset] keys beside name, root, train, val, max_scenes
    root_env: ClassVar[str] = ""  # an environment variable that, when set, replaces dataset.root
    mesh: ClassVar[bool] = True  # every scene is a triangle mesh (the simulated labeler renders it)
    views: ClassVar[bool] = True  # scenes come with posed camera images (what 2D teachers and masks need)
    channels: ClassVar[tuple[str, ...]] = ()  # per-point sensor channels its points carry (LiDAR intensity, ring)
    sweeps: ClassVar[bool] = False  # its points are LiDAR sweeps in the sensor's frame (point normals face the origin)
    boxes: ClassVar[bool] = False  # instances are annotated 3D boxes: a point outside every box is background
    instances: ClassVar[str] = ""  # how its scenes get per-point instances (partition-quality needs them)

    @classmethod
    def classes(cls, cfg: DatasetConfig) -> ClassTable:
        assert cls.table is not None, f"{cls.__name__} lists its classes in the pipeline"
        return cls.table

    @classmethod
    def check(cls, cfg: DatasetConfig, fail: Fail) -> None:
        """Problems with its own keys, found when the pipeline file loads."""

    @classmethod
    def key_params(cls, cfg: DatasetConfig) -> dict[str, Any]:
        """Its settings that change the stored points (they enter the ingest key)."""
        return {}

    @staticmethod
    def submission() -> type | None:
        """Its benchmark's submission layout (train/inference/submission.py), imported when called:
        what `train predict --format <dataset>` writes; None where it has no benchmark."""
        return None


class ScanNet(Dataset):
    """ScanNet v2 scan folders: meshes with RGB-D video."""

    reader = "preprocess.datasets.scannet"
    table = SCANNET
    root_env = "SCANNET_ROOT"
    instances = "ScanNet scenes need their .aggregation.json and _vh_clean_2.0.010000.segs.json"

    @staticmethod
    def submission() -> type | None:
        from train.inference.submission import ScanNetSubmission

        return ScanNetSubmission


class Synthetic(ScanNet):
    """The generated rooms (`python -m preprocess synth`), in ScanNet's layout and classes."""

    root_env = ""

    @staticmethod
    def submission() -> type | None:
        return None  # no benchmark scores them


class NuScenes(Dataset):
    """nuScenes keyframes: LiDAR sweeps with six cameras."""

    reader = "preprocess.datasets.nuscenes"
    table = NUSCENES
    options = ("version", "box_instances")
    root_env = "NUSCENES_ROOT"
    mesh = False
    channels = ("intensity", "ring")
    sweeps = True
    boxes = True
    instances = "set dataset.box_instances = true and rerun the ingest stage"

    @staticmethod
    def submission() -> type | None:
        from train.inference.submission import LidarsegSubmission

        return LidarsegSubmission


class PlyFolder(Dataset):
    """Your own scans: a folder of PLY files, one scene each, mesh or point cloud, with the
    classes listed in the pipeline file and optional per-point labels (README: your own data)."""

    reader = "preprocess.datasets.ply_folder"
    options = ("classes",)
    mesh = False
    views = False
    instances = "give the PLY vertices an integer 'instance' property"

    @classmethod
    def classes(cls, cfg: DatasetConfig) -> ClassTable:
        return user_table(tuple(cfg.classes))

    @classmethod
    def check(cls, cfg: DatasetConfig, fail: Fail) -> None:
        names = cfg.classes
        if not names or len(set(names)) < len(names) or not all(n.strip() for n in names):
            fail("classes", f"= {names!r} must list the class names, distinct and non-empty, in the order "
                            "of the ids in the PLYs' 'label' property", "name")

    @classmethod
    def key_params(cls, cfg: DatasetConfig) -> dict[str, Any]:
        # the labels' ids are read against the class list; a point cloud's normals are the PLY's
        # own, else made toward the scan's centre, as `train predict` makes them
        return {"classes": list(cfg.classes), "normals": "own, else toward the centre"}


DATASETS: dict[str, type[Dataset]] = {
    "scannet": ScanNet,
    "synthetic": Synthetic,
    "nuscenes": NuScenes,
    "ply-folder": PlyFolder,
}
