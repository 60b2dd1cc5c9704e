"""Scenes from the store as voxelised training/evaluation samples.

A sample is a pure function of (seed, epoch, scene index): augmentation and the random point
kept per voxel draw from a generator seeded by those three numbers, so results do not depend on
worker count or scheduling and a resumed run sees exactly the samples it would have seen.

What a sample carries besides coordinates and input features is a set of named fields (methods
ask for a subset); `FIELDS` says, for each, which stage output it is read from, which arrays,
and how they become the sample's rows. Coordinates are (x, y, z) int32 in voxel units, shifted
to be non-negative per scene; the batch column is added by `collate` (batch.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from torch.utils.data import Dataset

from shared.config import INPUT_FEATURES, Pipeline, TrainConfig
from shared.errors import MissingData
from shared.schema import (
    PAIRS_LABEL,
    PAIRS_PATCH,
    PAIRS_POINT,
    PAIRS_VIEW,
    PATCH_FEAT,
    POINTS,
    TEXT_SCENE,
    Layout,
    class_names,
    preprocess_command,
)
from shared.store import Store
from train.engine.balance import class_weights, voxel_weights
from train.engine.transforms import augment, compact_sets, crop, input_features, sample_pairs, voxelize


def open_store(pipeline: Pipeline) -> Store:
    """The pipeline's store, refusing to create an empty one where none was preprocessed."""
    path = Path(pipeline.store.path)
    if not (path / "zarr.json").is_file():
        raise MissingData(f"{path}: store not found (from {pipeline.source}); run {preprocess_command(pipeline)}")
    return Store(path)


def text_embedding(store: Store, layout: Layout) -> np.ndarray:
    """(C, D) f32 class-prompt embeddings of the pipeline's labeler, from the store."""
    return store.read(TEXT_SCENE, layout.text(), ["embedding"])["embedding"].astype(np.float32)


# ----------------------------------------------------------------------------- the fields
class Voxels(NamedTuple):
    """How a sample's voxel rows relate to the scene's points."""

    index: np.ndarray  # (M,) the point kept for each row
    inverse: np.ndarray  # (N,) the voxel of every point, before the crop
    kept: np.ndarray  # (M,) the rows' voxels among those before the crop
    num_voxels: int  # voxels before the crop


Make = Callable[[dict[str, np.ndarray], Voxels, np.random.Generator | None, TrainConfig], dict[str, np.ndarray]]


def rows(**dtypes: type) -> Make:
    """The kept point's value of each named array, one row per voxel, as `dtypes` says."""
    return lambda data, voxels, rng, cfg: {name: data[name][voxels.index].astype(dtype) for name, dtype in dtypes.items()}


def _sets(data, voxels, rng, cfg) -> dict[str, np.ndarray]:
    return {"segment": compact_sets(data["segment"][voxels.index].astype(np.int64))}


def _pairs(data, voxels, rng, cfg) -> dict[str, np.ndarray]:
    return sample_pairs(data, voxels.inverse, voxels.kept, voxels.num_voxels, cfg.clip2scene.max_views, rng)


@dataclass(frozen=True)
class Field:
    """A sample field: the stage output (`GROUPS`) and arrays it is read from (sample name:
    stored name), what the sample gets from them (`make`; None: read for another field), and
    whether that goes to the per-voxel "targets" or to the sample's "pairs"."""

    group: str
    arrays: dict[str, str]
    make: Make | None
    into: str = "targets"
    needs: tuple[str, ...] = ()  # fields it implies
    missing: str = ""  # the pipeline setting that stores its arrays, where a store may lack them


# Where each stage output of a scene lives in the store.
GROUPS: dict[str, Callable[[Layout, str, TrainConfig], str]] = {
    "points": lambda layout, scene, cfg: POINTS,
    "labels": lambda layout, scene, cfg: layout.labels(scene),
    "partition": lambda layout, scene, cfg: layout.partition(scene, cfg.partition),
    "refined": lambda layout, scene, cfg: layout.refined(scene, cfg.partition),
}

_SAME = lambda *names: {name: name for name in names}  # noqa: E731
FIELDS: dict[str, Field] = {
    "pseudo": Field("labels", _SAME("label", "score"), rows(label=np.int64, score=np.float32)),
    "feat": Field("labels", _SAME("feat"), rows(feat=np.float32), missing="labels.store_features = true"),
    "gt": Field("points", _SAME("gt"), rows(gt=np.int64)),
    # normals as augmented with the points, so they are comparable within a sample
    "normal": Field("points", _SAME("normal"), rows(normal=np.float32)),
    "refined": Field("refined", {"refined": "label"}, rows(refined=np.int64)),
    "segment": Field("partition", _SAME("segment"), _sets),
    # the stored pixel-point pairs of up to train.clip2scene.max_views views, re-pointed at voxel rows
    "pairs": Field("labels", _SAME(PAIRS_POINT, PAIRS_VIEW, PAIRS_LABEL), _pairs, into="pairs",
                   missing="labels.store_pairs = true"),
    # ... and their pixels' CLIP patch features
    "pair_feat": Field("labels", _SAME(PAIRS_PATCH, PATCH_FEAT), None, needs=("pairs",),
                       missing="labels.store_features = true"),
}


def field_of(array: str) -> str:
    """The field that reads the sample array `array` ("gt", "label", "refined", ...)."""
    return next(name for name, field in FIELDS.items() if array in field.arrays)


# ----------------------------------------------------------------------------- dataset
class SceneDataset(Dataset):
    """Scenes of one split as voxelised samples (dicts of NumPy arrays, one row per voxel).

    Train (`augment=True`): augmentation, a random point per voxel, optional crop to
    train.max_points, centred as train.crop_centre says (class-balanced: by the classes of
    `target`, the method's per-voxel training target, `Method.target_for`). Eval: one fixed point
    per voxel plus the inverse map and the full-resolution ground truth, so predictions can be
    scored on every original point.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        split: str = "train",
        with_gt: bool = False,
        fields: Sequence[str] = ("pseudo",),
        augment: bool | None = None,
        target: str | None = None,
    ):
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown sample fields {sorted(unknown)}; known: {sorted(FIELDS)}")
        self.pipeline = pipeline
        self.cfg = pipeline.train
        self.augment = split == "train" if augment is None else augment
        balanced = self.augment and self.cfg.crop_centre == "class-balanced"
        if balanced and target is None:
            raise ValueError('train.crop_centre = "class-balanced" weighs crop centres by the training target: '
                             'pass target')
        self.target = target if balanced else None
        # the crop reads the target's labels (CLIP2Scene's samples then carry the raw pseudo-labels too)
        wanted = set(fields) | ({"gt"} if with_gt else set()) | ({field_of(target)} if self.target else set())
        self.fields = tuple(sorted(wanted | {need for name in wanted for need in FIELDS[name].needs}))
        self.num_classes = len(class_names(pipeline))
        self.store = open_store(pipeline)
        self.layout = Layout(self.store, pipeline)
        self.scenes = self.layout.split(split)
        if not self.scenes:
            raise MissingData(f"{pipeline.source}: the {split} split (dataset.{split} = "
                              f"{getattr(pipeline.dataset, split)!r}) has no scenes in {self.store.path}")
        self.groups = [self._groups(s) for s in self.scenes]
        self._class_weights: dict[str, np.ndarray] = {}
        # a crop centre's weight is its target class's (the same weights as the CE's)
        self.centre_weight = self.split_class_weights(self.target) if self.target else None

    def _groups(self, scene: str) -> dict[str, str]:
        """Resolve every needed stage output once, so a missing one fails before training starts."""
        groups = {"points": POINTS}
        for name in self.fields:
            field = FIELDS[name]
            groups[field.group] = group = GROUPS[field.group](self.layout, scene, self.cfg)
            stored = next(iter(field.arrays.values()))
            if field.missing and not self.store.has_array(scene, group, stored):
                raise MissingData(f"{self.store.path}: {scene}/{group} has no {stored!r} array (sample field "
                                  f"{name!r}); set {field.missing} and run {preprocess_command(self.pipeline)}")
        return groups

    @property
    def in_channels(self) -> int:
        return sum(INPUT_FEATURES[name] for name in self.cfg.input_features)

    def __len__(self) -> int:
        return len(self.scenes)

    def split_class_weights(self, name: str) -> np.ndarray:
        """(C,) `class_weights` of the split's stored target `name`, counted once per dataset: the
        class-balanced crop and the CE's weights read the split's labels once between them."""
        if name not in self._class_weights:
            self._class_weights[name] = class_weights(self.label_counts(name))
        return self._class_weights[name]

    def label_counts(self, name: str) -> np.ndarray:
        """(C,) points per class over the split of a stored per-point target ("gt", "label": the
        raw pseudo-labels, "refined"). Reads only that one array per scene."""
        field = FIELDS[field_of(name)]
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for scene in self.scenes:
            group = GROUPS[field.group](self.layout, scene, self.cfg)
            labels = self.store.read(scene, group, [field.arrays[name]])[field.arrays[name]]
            labels = labels[(labels >= 0) & (labels < self.num_classes)]
            counts += np.bincount(labels.astype(np.int64), minlength=self.num_classes)
        return counts

    def read(self, i: int) -> dict[str, np.ndarray]:
        """Full-resolution arrays of scene i under their sample names (what the sample is made from)."""
        scene, groups = self.scenes[i], self.groups[i]
        wanted: dict[str, dict[str, str]] = {"points": {"xyz": "xyz", "rgb": "rgb"}}
        if "normal" in self.cfg.input_features:
            wanted["points"]["normal"] = "normal"
        for name in self.fields:
            field = FIELDS[name]
            wanted.setdefault(field.group, {}).update(field.arrays)
        data: dict[str, np.ndarray] = {}
        for group, arrays in wanted.items():
            stored = self.store.read(scene, groups[group], list(arrays.values()))
            data.update({name: stored[key] for name, key in arrays.items()})
        return data

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """`item` is a scene index (eval) or (scene index, epoch) from `EpochSampler` (train)."""
        i, epoch = item if isinstance(item, tuple) else (item, 0)
        data = self.read(i)
        rng = np.random.default_rng((self.cfg.seed, epoch, i)) if self.augment else None
        if rng is not None:  # the moved points and normals replace the stored ones
            data["xyz"], normal = augment(data["xyz"], data.get("normal"), rng)
            if normal is not None:
                data["normal"] = normal
        coords, index, inverse = voxelize(data["xyz"], self.cfg.voxel_size, rng)
        if rng is None:
            kept = np.arange(len(coords))
        else:
            weight = None if self.target is None else voxel_weights(data[self.target][index], self.centre_weight)
            kept = crop(coords, self.cfg.max_points, rng, weight)
        voxels = Voxels(index[kept], inverse, kept, len(coords))
        sample: dict[str, Any] = {
            "scene": self.scenes[i], "index": i, "coords": coords[kept], "targets": {},
            "feats": input_features(self.cfg.input_features, voxels.index, data["rgb"], data["xyz"], data.get("normal")),
        }
        for name in self.fields:
            field = FIELDS[name]
            if field.make is not None:
                sample.setdefault(field.into, {}).update(field.make(data, voxels, rng, self.cfg))
        if not self.augment:
            sample["inverse"] = inverse
            if "gt" in self.fields:
                sample["point_gt"] = data["gt"].astype(np.int64)
        return sample
