"""Trainer data loading on a tiny synthetic store: shapes, inverse map, augmentation, batching.

The store comes from tests/toy_store.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shared.config import load_pipeline
from shared.errors import ConfigError, MissingData
from toy_store import CLASS_COLOURS, make_toy_store
from train.engine.augment import augment
from train.engine.data import (
    EpochBatchSampler, EpochSampler, SceneDataset, collate, make_loader, text_embedding, voxelize,
)


@pytest.fixture()
def pipeline(tmp_path: Path):
    return load_pipeline(make_toy_store(tmp_path))


def test_splits_from_the_manifest_and_missing_store(pipeline, tmp_path):
    ds = SceneDataset(pipeline, "train")
    assert ds.scenes == ["toy0", "toy1"] and SceneDataset(pipeline, "val").scenes == ["toy2"]
    assert not (tmp_path / "raw").exists()  # the dataset root is never looked at
    (tmp_path / "empty.toml").write_text(
        pipeline.source.read_text().replace(str(tmp_path / "toy.zarr"), str(tmp_path / "none.zarr")))
    with pytest.raises(MissingData, match=r"none\.zarr: store not found .* run `python -m preprocess run .*empty\.toml`"):
        SceneDataset(load_pipeline(tmp_path / "empty.toml"))
    assert not (tmp_path / "none.zarr").exists()
    assert text_embedding(ds.store, ds.layout).shape == (20, 8)


def test_missing_stage_output_names_the_preprocess_command(pipeline):
    import dataclasses

    other = dataclasses.replace(pipeline, labels=dataclasses.replace(pipeline.labels, frame_skip=7))
    with pytest.raises(MissingData, match=r"scene 'toy0' has no simulated-clip pseudo-labels .* run `python -m preprocess run"):
        SceneDataset(other, fields=("pseudo",))
    # a split the store has no record of (other split settings) is named too
    other = dataclasses.replace(pipeline, dataset=dataclasses.replace(pipeline.dataset, max_scenes=1))
    with pytest.raises(MissingData, match=r"no split recorded for .*dataset.max_scenes = 1"):
        SceneDataset(other)


def test_a_store_without_manifest_is_one_clear_error(pipeline):
    (Path(pipeline.store.path) / "manifest.json").unlink()
    with pytest.raises(MissingData, match=r"toy\.zarr: no manifest\.json: .*run it on this store's pipeline file"):
        SceneDataset(pipeline)


def test_voxelize_inverse_round_trip():
    rng = np.random.default_rng(1)
    xyz = rng.uniform(-1, 1, (5000, 3)).astype(np.float32)
    coords, index, inverse = voxelize(xyz, 0.2)
    assert coords.min() >= 0 and len(np.unique(coords, axis=0)) == len(coords)
    # Every point maps to the voxel holding it, and the kept point lies in its own voxel.
    grid = np.floor(xyz / 0.2).astype(np.int64)
    grid -= grid.min(0)
    assert np.array_equal(coords[inverse], grid)
    assert np.array_equal(inverse[index], np.arange(len(coords)))
    _, index_r, inverse_r = voxelize(xyz, 0.2, np.random.default_rng(2))
    assert np.array_equal(inverse_r[index_r], np.arange(len(coords)))
    assert not np.array_equal(index_r, index)  # a random point per voxel at train time


def test_augment_keeps_geometry_and_normals():
    rng = np.random.default_rng(3)
    xyz = rng.normal(size=(100, 3)).astype(np.float32)
    normal = rng.normal(size=(100, 3))
    normal = (normal / np.linalg.norm(normal, axis=1, keepdims=True)).astype(np.float32)
    out, turned = augment(xyz, normal, np.random.default_rng(4), jitter=0.0)
    d_in = np.linalg.norm(xyz[1:] - xyz[:-1], axis=1)
    ratio = np.linalg.norm(out[1:] - out[:-1], axis=1) / d_in
    assert np.allclose(ratio, ratio[0], rtol=1e-4) and 0.9 <= ratio[0] <= 1.1  # similarity transform
    assert np.allclose(np.linalg.norm(turned, axis=1), 1.0, atol=1e-5)
    assert np.allclose(out[:, 2], xyz[:, 2] * ratio[0], atol=1e-4)  # about z only


def test_train_samples_keep_labels_attached(pipeline):
    ds = SceneDataset(pipeline, "train", fields=("pseudo", "segment", "refined", "gt"))
    raw = ds.read(0)
    sample = ds[(0, 3)]
    m = len(sample["coords"])
    assert sample["feats"].shape == (m, 3) and sample["coords"].dtype == np.int32
    # Colour encodes the class in the toy scenes, so the ground truth must still match the colour.
    colour_class = np.argmin(((sample["feats"][:, None] * 255 - CLASS_COLOURS[None]) ** 2).sum(-1), 1)
    assert (colour_class == sample["targets"]["gt"]).mean() > 0.99
    assert set(np.unique(sample["targets"]["label"])) <= {-1, 0, 1, 2}
    seg = sample["targets"]["segment"]
    assert seg.min() == 0 and seg.max() == sample["num_segments"] - 1
    # Deterministic per (seed, epoch, index), different across epochs.
    assert np.array_equal(ds[(0, 3)]["coords"], sample["coords"])
    assert not np.array_equal(ds[(0, 4)]["coords"], sample["coords"])
    assert len(raw["xyz"]) == 3000 and m < 3000
    # Refinement makes the labels agree better with the ground truth than the raw ones.
    seen = raw["gt"] >= 0
    assert (raw["refined"] == raw["gt"])[seen].mean() > (raw["label"] == raw["gt"])[seen].mean()


def test_input_features_in_the_configured_order(tmp_path):
    pipeline = load_pipeline(make_toy_store(tmp_path), {"train.input_features": ["height", "normal", "rgb"]})
    ds = SceneDataset(pipeline, "val", with_gt=True, fields=())
    assert ds.in_channels == 7
    raw, sample = ds.read(0), ds[0]
    index = sample["inverse"]  # eval keeps the first point of a voxel: any point of it has the same voxel
    kept = np.unique(index, return_index=True)[1]  # first original point of each voxel, in voxel order
    feats = sample["feats"]
    assert feats.shape == (len(sample["coords"]), 7)
    assert np.allclose(feats[:, 0], raw["xyz"][kept, 2] - raw["xyz"][:, 2].min())
    assert np.allclose(feats[:, 1:4], raw["normal"][kept]) and np.allclose(feats[:, 4:] * 255, raw["rgb"][kept])
    with pytest.raises(ConfigError, match="'train.input_features' = \\['rgb', 'depth'\\] must be a non-empty list"):
        load_pipeline(make_toy_store(tmp_path / "b"), {"train.input_features": ["rgb", "depth"]})


def test_label_counts_over_the_split(pipeline):
    ds = SceneDataset(pipeline, "train", fields=("pseudo", "refined", "gt"))
    for field, name in (("gt", "gt"), ("label", "label"), ("refined", "refined")):
        expected = sum(np.bincount(ds.read(i)[name][ds.read(i)[name] >= 0], minlength=20) for i in range(len(ds)))
        assert ds.label_counts(field).tolist() == expected.tolist()


def test_eval_sample_inverse_and_collate(pipeline):
    ds = SceneDataset(pipeline, "val", with_gt=True, fields=("segment", "feat"))
    s = ds[0]
    assert len(s["inverse"]) == len(s["point_gt"]) == 3000
    # Voxel targets mapped back through the inverse reproduce most of the point ground truth.
    assert (s["targets"]["gt"][s["inverse"]] == s["point_gt"]).mean() > 0.9
    train = SceneDataset(pipeline, "train", fields=("segment", "feat"))
    batch = collate([train[(0, 0)], train[(1, 0)]])
    assert batch.coords.shape[1] == 4 and batch.coords.dtype == torch.int32
    assert torch.equal(batch.coords[:, 0].long(), batch.scene_index)
    seg = batch.targets["segment"]
    first, second = seg[batch.scene_index == 0], seg[batch.scene_index == 1]
    assert first.max() < second.min() and seg.max() == batch.num_segments - 1
    assert batch.targets["feat"].shape == (len(batch.coords), 8)


def test_batches_run_across_epochs_and_resume_mid_epoch(pipeline):
    ds = SceneDataset(pipeline, "train")  # 2 scenes
    sampler = EpochSampler(ds, num_replicas=1, rank=0, seed=0)
    batches = list(EpochBatchSampler(sampler, batch_size=3, first_epoch=1, end_epoch=4))
    # One short batch per epoch: batches never mix epochs, every epoch sees each scene once.
    assert [sorted(batch) for batch in batches] == [[(0, e), (1, e)] for e in (1, 2, 3)]
    orders = [[i for i, _ in b] for b in EpochBatchSampler(sampler, batch_size=2, first_epoch=0, end_epoch=6)]
    assert len(set(map(tuple, orders))) == 2  # shuffled per epoch
    # One loader (with workers) over all epochs; a resumed run sees exactly the rest.
    whole = [b.scenes for b in make_loader(ds, 1, 2, EpochBatchSampler(sampler, 1, 2, 4))]
    rest = [b.scenes for b in make_loader(ds, 1, 0, EpochBatchSampler(sampler, 1, 2, 4, skip=1))]
    assert len(whole) == len(EpochBatchSampler(sampler, 1, 2, 4)) == 4 and rest == whole[1:]
    assert len(EpochBatchSampler(sampler, 1, 2, 4, skip=1)) == 3
