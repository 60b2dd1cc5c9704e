"""Trainer data loading on a tiny synthetic store: shapes, inverse map, augmentation, batching.

The store comes from tests/toy_store.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shared import schema
from shared.config import load_pipeline
from shared.errors import ConfigError, MissingData
from toy_store import CLASS_COLOURS, make_toy_store
from train.engine.batch import collate
from train.engine.dataset import SceneDataset, text_embedding
from train.engine.loader import EpochBatchSampler, EpochSampler, make_loader
from train.engine.transforms import augment, crop, sample_pairs, voxelize


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
    seg = sample["targets"]["segment"]  # compact: every id from 0 to the largest is a set of the sample
    assert seg.min() == 0 and np.array_equal(np.unique(seg), np.arange(seg.max() + 1))
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
    with pytest.raises(ConfigError, match="'train.input_features\\[1\\]' = 'depth' must be one of rgb, normal, height"):
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


def test_pairs_follow_the_voxelisation_and_the_crop():
    rng = np.random.default_rng(5)
    xyz = rng.uniform(0, 2, (4000, 3)).astype(np.float32)
    coords, index, inverse = voxelize(xyz, 0.2, np.random.default_rng(6))
    kept = crop(coords, 300, np.random.default_rng(7))
    point = rng.integers(0, len(xyz), 5000)
    view = rng.integers(0, 6, 5000)
    stored = {schema.PAIRS_POINT: point.astype(np.int32), schema.PAIRS_VIEW: view.astype(np.uint16),
              schema.PAIRS_LABEL: np.arange(5000).astype(np.int16)}  # the label names the pair
    out = sample_pairs(stored, inverse, kept, len(coords), max_views=2, rng=np.random.default_rng(8))
    pair = out["label"]
    # each kept pair points at the sample's row of its point's voxel
    assert np.array_equal(coords[kept][out["voxel"]], coords[inverse[point[pair]]])
    # kept = exactly the pairs of two views whose voxel survived the crop
    views = np.unique(view[pair])
    assert len(views) == 2
    expected = np.flatnonzero(np.isin(view, views) & np.isin(inverse[point], kept))
    assert np.array_equal(np.sort(pair), expected) and len(expected) < 5000
    # without a generator (or with max_views = 0) every view is used
    assert len(sample_pairs(stored, inverse, kept, len(coords), 2, None)["label"]) == np.isin(inverse[point], kept).sum()


def test_samples_carry_the_pairs_of_at_most_max_views_views(tmp_path):
    pipeline = load_pipeline(make_toy_store(tmp_path, method="clip2scene"),
                             {"train.clip2scene.max_views": 2, "train.max_points": 400})
    ds = SceneDataset(pipeline, "train", fields=("pairs", "pair_feat"))
    batch = collate([ds[(0, 1)], ds[(1, 1)]])
    pairs = batch.pairs
    text = text_embedding(ds.store, ds.layout)
    feat = pairs["patch_feat"][pairs["patch"]].double()
    norm = feat.norm(dim=1)
    # the pair's own feature, label and view travelled together (feature = (1 + view) * text[label])
    assert torch.allclose(feat / norm[:, None], torch.from_numpy(text).double()[pairs["label"]], atol=1e-2)
    scene = batch.scene_index[pairs["voxel"]]
    assert bool((scene[1:] >= scene[:-1]).all()) and set(scene.tolist()) == {0, 1}
    for b in (0, 1):
        assert len(torch.unique(torch.round(norm[scene == b]))) <= 2  # two views a scene
    assert int(pairs["voxel"].max()) < len(batch.coords) and len(batch.coords) <= 800
