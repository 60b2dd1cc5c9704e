"""Scenes from the store as voxelised training/evaluation samples, batched for the network.

A sample is a pure function of (seed, epoch, scene index): augmentation and the random point
kept per voxel draw from a generator seeded by those three numbers, so results do not depend on
worker count or scheduling and a resumed run sees exactly the samples it would have seen.

Coordinates are batch-first `(b, x, y, z)` int32, in voxel units, shifted to be non-negative per
scene — the one place this layout is fixed for the trainer (asserted in `collate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from shared.config import INPUT_FEATURES, Pipeline
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
from train.engine.augment import augment
from train.sparse import sparse_quantize


# What a sample can carry besides coordinates and input features; methods ask for a subset.
# "pairs": the stored pixel-point pairs of up to train.clip2scene.max_views views, re-pointed at
# voxel rows; "pair_feat": their pixels' CLIP patch features as well.
FIELDS = frozenset({"pseudo", "feat", "segment", "refined", "gt", "normal", "pairs", "pair_feat"})
PAIR_ARRAYS = [PAIRS_POINT, PAIRS_VIEW, PAIRS_LABEL]
PAIR_FEAT_ARRAYS = [PAIRS_PATCH, PATCH_FEAT]


# ----------------------------------------------------------------------------- store look-ups
def open_store(pipeline: Pipeline) -> Store:
    """The pipeline's store, refusing to create an empty one where none was preprocessed."""
    path = Path(pipeline.store.path)
    if not (path / "zarr.json").is_file():
        raise MissingData(f"{path}: store not found (from {pipeline.source}); run {preprocess_command(pipeline)}")
    return Store(path)


def text_embedding(store: Store, layout: Layout) -> np.ndarray:
    """(C, D) f32 class-prompt embeddings of the pipeline's labeler, from the store."""
    return store.read(TEXT_SCENE, layout.text(), ["embedding"])["embedding"].astype(np.float32)


# ----------------------------------------------------------------------------- voxelisation
def voxelize(
    xyz: np.ndarray, voxel_size: float, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coords (M,3) int32 >= 0, index (M,) of the point kept per voxel, inverse (N,) voxel per point).

    Like Pointcept's GridSample: with `rng` the kept point is random (train), else the first (eval).
    """
    order = rng.permutation(len(xyz)) if rng is not None else np.arange(len(xyz))
    voxels, first, inverse = sparse_quantize(xyz[order], voxel_size, return_index=True, return_inverse=True)
    index = order[first]
    inv = np.empty(len(xyz), dtype=np.int64)
    inv[order] = inverse
    return (voxels - voxels.min(axis=0)).astype(np.int32), index, inv


def crop(coords: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the `max_points` voxels nearest a random voxel (Pointcept's SphereCrop)."""
    if max_points <= 0 or len(coords) <= max_points:
        return np.arange(len(coords))
    centre = coords[rng.integers(len(coords))]
    dist = ((coords - centre).astype(np.int64) ** 2).sum(axis=1)
    return np.sort(np.argpartition(dist, max_points - 1)[:max_points])


def sample_pairs(
    pairs: dict[str, np.ndarray], voxel_of_point: np.ndarray, kept: np.ndarray, num_voxels: int,
    max_views: int, rng: np.random.Generator | None,
) -> dict[str, np.ndarray]:
    """The pairs of a sample: those of up to `max_views` views (0 = all; drawn with `rng`, all
    when it is None) whose point's voxel survived the crop, re-pointed at the sample's voxel rows.

    pairs: stored arrays (PAIRS_POINT, PAIRS_VIEW, PAIRS_LABEL[, PAIRS_PATCH, PATCH_FEAT]).
    voxel_of_point: (N,) voxel of every point (voxelize's inverse); kept: the voxels the sample
    keeps, in row order (crop's indices); num_voxels: voxels before the crop.
    Returns {"voxel" (P,), "label" (P,)[, "patch" (P,) rows of "patch_feat" (R,D) f32]}, the patch
    rows reduced to those the kept pairs use.
    """
    views = np.unique(pairs[PAIRS_VIEW])
    if rng is not None and 0 < max_views < len(views):
        views = rng.choice(views, max_views, replace=False)
    chosen = np.zeros(int(pairs[PAIRS_VIEW].max(initial=0)) + 1, bool)
    chosen[views] = True
    row = np.full(num_voxels, -1, np.int64)
    row[kept] = np.arange(len(kept))
    voxel = row[voxel_of_point[pairs[PAIRS_POINT]]]
    keep = chosen[pairs[PAIRS_VIEW]] & (voxel >= 0)
    out = {"voxel": voxel[keep], "label": pairs[PAIRS_LABEL][keep].astype(np.int64)}
    if PAIRS_PATCH in pairs:
        used, patch = np.unique(pairs[PAIRS_PATCH][keep], return_inverse=True)
        out["patch"] = patch.ravel().astype(np.int64)
        out["patch_feat"] = pairs[PATCH_FEAT][used].astype(np.float32)
    return out


def input_features(names: Sequence[str], index: np.ndarray, rgb: np.ndarray, xyz: np.ndarray,
                   normal: np.ndarray | None = None) -> np.ndarray:
    """(M, C) f32 network input of the points `index` of a scene, channels in the order of `names`
    (train.input_features): rgb scaled to [0, 1], unit normals, height in metres above the
    scene's lowest point (the minimum over all points, so a crop does not move the floor)."""
    parts = {"rgb": lambda: rgb[index].astype(np.float32) / 255.0,
             "normal": lambda: normal[index].astype(np.float32),
             "height": lambda: (xyz[index, 2:3] - xyz[:, 2].min()).astype(np.float32)}
    return np.concatenate([parts[name]() for name in names], axis=1)


# ----------------------------------------------------------------------------- dataset
class SceneDataset(Dataset):
    """Scenes of one split as voxelised samples (dicts of NumPy arrays, one row per voxel).

    Train (`augment=True`): augmentation, a random point per voxel, optional crop to
    train.max_points. Eval: one fixed point per voxel plus the inverse map and the full-resolution
    ground truth, so predictions can be scored on every original point.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        split: str = "train",
        with_gt: bool = False,
        fields: Sequence[str] = ("pseudo",),
        augment: bool | None = None,
    ):
        unknown = set(fields) - FIELDS
        if unknown:
            raise ValueError(f"unknown sample fields {sorted(unknown)}; known: {sorted(FIELDS)}")
        self.pipeline = pipeline
        self.cfg = pipeline.train
        self.fields = frozenset(fields) | ({"gt"} if with_gt else set())
        self.augment = split == "train" if augment is None else augment
        self.num_classes = len(class_names(pipeline))
        self.store = open_store(pipeline)
        self.layout = Layout(self.store, pipeline)
        self.scenes = self.layout.split(split)
        if not self.scenes:
            raise MissingData(f"{pipeline.source}: the {split} split (dataset.{split} = "
                              f"{getattr(pipeline.dataset, split)!r}) has no scenes in {self.store.path}")
        self.groups = [self._groups(s) for s in self.scenes]

    def _groups(self, scene: str) -> dict[str, str]:
        """Resolve every needed stage output once, so a missing one fails before training starts."""
        groups: dict[str, str] = {}
        if self.fields & {"pseudo", "feat", "pairs", "pair_feat"}:  # pairs: the labels key holds store_pairs
            groups["pseudo"] = self.layout.labels(scene)
        if "segment" in self.fields:
            groups["segment"] = self.layout.partition(scene, self.cfg.partition)
        if "refined" in self.fields:
            groups["refined"] = self.layout.refined(scene, self.cfg.partition)
        if "feat" in self.fields and not self.store.has_array(scene, groups["pseudo"], "feat"):
            raise MissingData(f"{self.store.path}: {scene}/{groups['pseudo']} has no per-point CLIP features; "
                              f"set labels.store_features = true and run {preprocess_command(self.pipeline)}")
        return groups

    @property
    def in_channels(self) -> int:
        return sum(INPUT_FEATURES[name] for name in self.cfg.input_features)

    def __len__(self) -> int:
        return len(self.scenes)

    def label_counts(self, field: str) -> np.ndarray:
        """(C,) points per class over the split of a stored target: "gt" (ground truth), "label"
        (raw pseudo-labels) or "refined". Reads only that one array per scene."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for scene, groups in zip(self.scenes, self.groups):
            group, name = {"gt": (POINTS, "gt"), "label": (groups.get("pseudo"), "label"),
                           "refined": (groups.get("refined"), "label")}[field]
            labels = self.store.read(scene, group, [name])[name]
            labels = labels[(labels >= 0) & (labels < self.num_classes)]
            counts += np.bincount(labels.astype(np.int64), minlength=self.num_classes)
        return counts

    def read(self, i: int) -> dict[str, np.ndarray]:
        """Full-resolution arrays of scene i (what the sample is made from)."""
        scene, groups = self.scenes[i], self.groups[i]
        wanted = self.cfg.input_features
        normals = "normal" in wanted or "normal" in self.fields
        names = ["xyz", "rgb"] + (["normal"] if normals else []) + (["gt"] if "gt" in self.fields else [])
        data = self.store.read(scene, POINTS, names)
        if "pseudo" in groups:
            pseudo_names = ((["label", "score"] if "pseudo" in self.fields else []) + (["feat"] if "feat" in self.fields else [])
                            + (PAIR_ARRAYS if self.fields & {"pairs", "pair_feat"} else [])
                            + (PAIR_FEAT_ARRAYS if "pair_feat" in self.fields else []))
            data.update(self.store.read(scene, groups["pseudo"], pseudo_names))
        if "segment" in groups:
            data["segment"] = self.store.read(scene, groups["segment"], ["segment"])["segment"]
        if "refined" in groups:
            data["refined"] = self.store.read(scene, groups["refined"], ["label"])["label"]
        return data

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """`item` is a scene index (eval) or (scene index, epoch) from `EpochSampler` (train)."""
        i, epoch = item if isinstance(item, tuple) else (item, 0)
        data = self.read(i)
        rng = np.random.default_rng((self.cfg.seed, epoch, i)) if self.augment else None
        xyz, normal = data["xyz"], data.get("normal")
        if rng is not None:
            xyz, normal = augment(xyz, normal, rng)
        coords, index, inverse = voxelize(xyz, self.cfg.voxel_size, rng)
        num_voxels = len(coords)
        keep = np.arange(num_voxels)
        if rng is not None:
            keep = crop(coords, self.cfg.max_points, rng)
            coords, index = coords[keep], index[keep]
        feats = input_features(self.cfg.input_features, index, data["rgb"], xyz, normal)
        sample: dict[str, Any] = {"scene": self.scenes[i], "coords": coords, "feats": feats}
        targets = {}
        if "pseudo" in self.fields:
            targets["label"] = data["label"][index].astype(np.int64)
            targets["score"] = data["score"][index].astype(np.float32)
        if "feat" in self.fields:
            targets["feat"] = data["feat"][index].astype(np.float32)
        if "normal" in self.fields:  # augmented with the points, so comparable within a sample
            targets["normal"] = normal[index].astype(np.float32)
        if "refined" in self.fields:
            targets["refined"] = data["refined"][index].astype(np.int64)
        if "segment" in self.fields:
            # Compact ids (the voxels keep a subset of the sets), -1 = in no set stays -1.
            seg = data["segment"][index].astype(np.int64)
            uniq, compact = np.unique(seg, return_inverse=True)
            compact = compact.ravel() - int(uniq[0] < 0)
            targets["segment"] = compact
            sample["num_segments"] = int((uniq >= 0).sum())
        if "gt" in self.fields:
            targets["gt"] = data["gt"][index].astype(np.int64)
        sample["targets"] = targets
        if self.fields & {"pairs", "pair_feat"}:
            sample["pairs"] = sample_pairs(data, inverse, keep, num_voxels, self.cfg.clip2scene.max_views, rng)
        if not self.augment:
            sample["inverse"] = inverse
            if "gt" in self.fields:
                sample["point_gt"] = data["gt"].astype(np.int64)
        return sample


# ----------------------------------------------------------------------------- batching
@dataclass
class Batch:
    """Several scenes as one sparse input: rows are voxels of all scenes, concatenated."""

    coords: torch.Tensor  # (M, 4) int32, (b, x, y, z)
    feats: torch.Tensor  # (M, C) f32
    targets: dict[str, torch.Tensor]  # per-voxel; "segment" unique across the batch
    scene_index: torch.Tensor  # (M,) int64 = coords[:, 0]
    scenes: list[str]
    num_segments: int = 0
    inverse: list[np.ndarray] = field(default_factory=list)  # eval: voxel of every original point
    point_gt: list[np.ndarray] = field(default_factory=list)  # eval: full-resolution ground truth
    # pixel-point pairs ("pairs" field): "voxel" rows of this batch, "label"[, "patch" rows of
    # "patch_feat"], one entry per pair of every sample
    pairs: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.coords), move(self.feats), {k: move(v) for k, v in self.targets.items()},
                     move(self.scene_index), self.scenes, self.num_segments, self.inverse, self.point_gt,
                     {k: move(v) for k, v in self.pairs.items()})

    def pin_memory(self) -> "Batch":
        """Page-locked copies (the loader's pin_memory thread calls this), so `to(cuda)` overlaps."""
        pin = lambda t: t.pin_memory()  # noqa: E731
        return Batch(pin(self.coords), pin(self.feats), {k: pin(v) for k, v in self.targets.items()},
                     pin(self.scene_index), self.scenes, self.num_segments, self.inverse, self.point_gt)

    def sparse(self, tensor: Callable[[torch.Tensor, torch.Tensor], Any]) -> Any:
        """The network input; `tensor` is the selected backend's SparseTensor constructor
        (Method.sparse_input passes it)."""
        return tensor(self.feats, self.coords)

    def __len__(self) -> int:
        return len(self.scenes)


def collate(samples: list[dict[str, Any]]) -> Batch:
    """Concatenate samples; prepend the batch column; offset segment ids so each is unique."""
    sizes = [len(s["coords"]) for s in samples]
    scene_index = np.repeat(np.arange(len(samples)), sizes)
    coords = np.concatenate([s["coords"] for s in samples])
    assert coords.ndim == 2 and coords.shape[1] == 3 and coords.min() >= 0, "coords must be (N,3) >= 0"
    coords = np.concatenate([scene_index[:, None], coords], axis=1).astype(np.int32)
    targets = {k: torch.from_numpy(np.concatenate([s["targets"][k] for s in samples])) for k in samples[0]["targets"]}
    num_segments = 0
    if "segment" in targets:
        counts = np.array([s["num_segments"] for s in samples])
        offsets = np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), sizes)
        seg = targets["segment"].numpy()
        targets["segment"] = torch.from_numpy(np.where(seg >= 0, seg + offsets, -1))
        num_segments = int(counts.sum())
    return Batch(
        coords=torch.from_numpy(coords),
        feats=torch.from_numpy(np.concatenate([s["feats"] for s in samples])),
        targets=targets,
        scene_index=torch.from_numpy(scene_index),
        scenes=[s["scene"] for s in samples],
        num_segments=num_segments,
        inverse=[s["inverse"] for s in samples if "inverse" in s],
        point_gt=[s["point_gt"] for s in samples if "point_gt" in s],
        pairs=_collate_pairs([s["pairs"] for s in samples], sizes) if "pairs" in samples[0] else {},
    )


def _collate_pairs(pairs: list[dict[str, np.ndarray]], sizes: list[int]) -> dict[str, torch.Tensor]:
    """The samples' pairs as one set, re-pointed at the batch's voxel rows (and patch rows)."""
    cat = lambda name, offsets: np.concatenate([p[name] + o for p, o in zip(pairs, offsets)])  # noqa: E731
    out = {"voxel": cat("voxel", np.cumsum([0, *sizes[:-1]])), "label": cat("label", [0] * len(pairs))}
    if "patch" in pairs[0]:
        out["patch"] = cat("patch", np.cumsum([0, *(len(p["patch_feat"]) for p in pairs[:-1])]))
        out["patch_feat"] = cat("patch_feat", [0] * len(pairs))
    return {name: torch.from_numpy(array) for name, array in out.items()}


class EpochSampler(DistributedSampler):
    """DistributedSampler that yields (index, epoch) and can start part-way into an epoch.

    The epoch travels with the index so the dataset seeds its augmentation per sample (no state
    to forward into workers); `skip` drops the samples a resumed run has already trained on.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.skip = 0

    def start(self, epoch: int, skip: int = 0) -> None:
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((i, self.epoch) for i in islice(super().__iter__(), self.skip, None))

    def __len__(self) -> int:
        return self.num_samples - self.skip


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of (index, epoch) for epochs [first_epoch, end_epoch): each epoch's samples in
    `sampler`'s order for that epoch, cut into batches of `batch_size` (the last one short), the
    first epoch starting `skip` batches in (a resumed run).

    One loader iterator over all epochs keeps the workers busy across epoch boundaries: they
    prepare the next epoch's first batches while this epoch's last ones train and while
    validation runs, where a new iterator per epoch left the first step of every epoch waiting
    for its batch (0.6 s per epoch on a GPU, 21% of a 10-step epoch).
    """

    def __init__(self, sampler: EpochSampler, batch_size: int, first_epoch: int, end_epoch: int, skip: int = 0):
        self.sampler, self.batch_size = sampler, batch_size
        self.first_epoch, self.end_epoch, self.skip = first_epoch, end_epoch, skip

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for epoch in range(self.first_epoch, self.end_epoch):
            skip = self.skip if epoch == self.first_epoch else 0
            self.sampler.start(epoch, skip=skip * self.batch_size)
            samples = list(self.sampler)
            for start in range(0, len(samples), self.batch_size):
                yield samples[start:start + self.batch_size]

    def __len__(self) -> int:
        per_epoch = math.ceil(self.sampler.num_samples / self.batch_size)
        return max(0, (self.end_epoch - self.first_epoch) * per_epoch - self.skip)


def make_loader(
    dataset: SceneDataset, batch_size: int, num_workers: int, batches: EpochBatchSampler | None = None
) -> DataLoader:
    """Loader over `dataset`: train passes its EpochBatchSampler, eval iterates the scenes in
    order in batches of `batch_size`."""
    return DataLoader(
        dataset,
        batch_size=1 if batches is not None else batch_size,
        batch_sampler=batches,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
    )
