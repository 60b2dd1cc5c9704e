"""Samples concatenated into one batch for the network.

Coordinates are batch-first `(b, x, y, z)` int32, in voxel units, non-negative: the one place
the trainer fixes this layout, checked here once per batch on the CPU (`check_coords`), where
it costs no GPU synchronisation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from train.sparse.tensor import check_coords


def _map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], value: Any) -> Any:
    """`value` with `fn` applied to every tensor in it (itself, or the values of a dict)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {key: _map_tensors(fn, item) for key, item in value.items()}
    return value


@dataclass
class Batch:
    """Several scenes as one sparse input: rows are voxels of all scenes, concatenated."""

    coords: torch.Tensor  # (M, 4) int32, (b, x, y, z)
    feats: torch.Tensor  # (M, C) f32
    targets: dict[str, torch.Tensor]  # per-voxel; "segment" unique across the batch
    scene_index: torch.Tensor  # (M,) int64 = coords[:, 0]
    scene_ids: torch.Tensor  # (B,) int64, each scene's index in the dataset (what HICL's memory bank keeps)
    scenes: list[str]
    num_segments: int = 0  # sets in the batch: "segment" ids are 0 .. num_segments - 1
    inverse: list[np.ndarray] = field(default_factory=list)  # eval: voxel of every original point
    point_gt: list[np.ndarray] = field(default_factory=list)  # eval: full-resolution ground truth
    # pixel-point pairs ("pairs" field): "voxel" rows of this batch, "label"[, "patch" rows of
    # "patch_feat"], one entry per pair of every sample
    pairs: dict[str, torch.Tensor] = field(default_factory=dict)

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """A batch with `fn` applied to every tensor of every field (so no field is forgotten)."""
        return dataclasses.replace(self, **{f.name: _map_tensors(fn, getattr(self, f.name))
                                            for f in dataclasses.fields(self)})

    def to(self, device: torch.device | str) -> Batch:
        return self.map_tensors(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:
        """Page-locked copies (the loader's pin_memory thread calls this), so `to(cuda)` overlaps."""
        return self.map_tensors(lambda t: t.pin_memory())

    def sparse(self, tensor: Callable[[torch.Tensor, torch.Tensor], Any]) -> Any:
        """The network input; `tensor` is the selected backend's SparseTensor constructor
        (Method.sparse_input passes it)."""
        return tensor(self.feats, self.coords)

    def __len__(self) -> int:
        return len(self.scenes)


def collate(samples: list[dict[str, Any]]) -> Batch:
    """Concatenate samples; prepend the batch column; offset set ids so each is unique."""
    sizes = [len(s["coords"]) for s in samples]
    scene_index = np.repeat(np.arange(len(samples)), sizes)
    coords = torch.from_numpy(np.concatenate([scene_index[:, None], np.concatenate([s["coords"] for s in samples])],
                                             axis=1).astype(np.int32))
    check_coords(coords, stride=1)
    targets = {k: np.concatenate([s["targets"][k] for s in samples]) for k in samples[0]["targets"]}
    num_segments = 0
    if "segment" in targets:
        counts = [int(s["targets"]["segment"].max(initial=-1)) + 1 for s in samples]
        offsets = np.repeat(np.cumsum([0, *counts[:-1]]), sizes)
        targets["segment"] = np.where(targets["segment"] >= 0, targets["segment"] + offsets, -1)
        num_segments = sum(counts)
    return Batch(
        coords=coords,
        feats=torch.from_numpy(np.concatenate([s["feats"] for s in samples])),
        targets={k: torch.from_numpy(v) for k, v in targets.items()},
        scene_index=torch.from_numpy(scene_index),
        scene_ids=torch.tensor([s["index"] for s in samples], dtype=torch.int64),
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
