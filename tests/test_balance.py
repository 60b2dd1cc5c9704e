"""Class balance for the rare classes (issue 22): inverse-sqrt class weights, training crops
centred by their training target's class (train.crop_centre), through the dataset and the
trainer, and the key's check when a file loads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shared.config import load_pipeline
from shared.errors import ConfigError, UserError
from toy_store import make_toy_store
from train.engine.balance import class_weights, voxel_weights
from train.engine.dataset import SceneDataset
from train.engine.loop import fit
from train.engine.methods import build_method, method_class
from train.engine.transforms import crop

BALANCED = {"train.crop_centre": "class-balanced", "train.max_points": 400}  # toy scenes have ~1,000 voxels


def test_inverse_sqrt_class_weights():
    # 1/sqrt(frequency) ∝ [1/10, 1/5, -, 1/2], scaled to mean 1 over the three present classes
    assert class_weights(np.array([100, 25, 0, 4])).tolist() == pytest.approx([0.375, 0.75, 0.0, 1.875])
    with pytest.raises(UserError, match="no labelled point"):
        class_weights(np.zeros(3))


def test_a_voxel_weighs_its_target_class_and_one_without_target_the_mean():
    weight = class_weights(np.array([100, 25, 0, 4]))  # [0.375, 0.75, 0, 1.875]: mean 1 over the present
    labels = np.array([0, 1, -1, 3, 1, 9], np.int16)
    assert voxel_weights(labels, weight).tolist() == pytest.approx([0.375, 0.75, 1.0, 1.875, 0.75, 1.0])


# A line of 1,000 voxels: 890 of class 0, 10 of the rare class 2, 100 without a target; the
# split's counts are the scene's.
LINE = np.c_[np.arange(1000), np.zeros((1000, 2))].astype(np.int32)
LABELS = np.r_[np.zeros(445), np.full(10, 2), np.full(100, -1), np.zeros(445)].astype(np.int64)
COUNTS = np.array([890, 0, 10])


def _rare_share(weight: np.ndarray | None, draws: int = 2000) -> float:
    """The share of crop centres on the rare class (a one-voxel crop is its centre)."""
    centres = np.array([crop(LINE, 1, np.random.default_rng((0, d)), weight)[0] for d in range(draws)])
    return float(np.mean(LABELS[centres] == 2))


def test_class_balanced_centres_fall_on_the_rare_class_as_often_as_its_weight_says():
    # class weights ∝ 1/sqrt(frequency), mean 1 over classes 0 and 2; a voxel without target weighs 1
    a, b = 1 / math.sqrt(890 / 900), 1 / math.sqrt(10 / 900)
    w0, w2 = 2 * a / (a + b), 2 * b / (a + b)
    expected = 10 * w2 / (10 * w2 + 890 * w0 + 100 * 1.0)  # 0.0626, against 10 / 1000 uniformly
    balanced = _rare_share(voxel_weights(LABELS, class_weights(COUNTS)))
    uniform = _rare_share(None)
    print(f"rare-class centres over 2,000 draws: class-balanced {balanced:.4f} (expected {expected:.4f}), "
          f"uniform {uniform:.4f} (expected 0.0100)")
    # binomial standard errors over 2,000 draws: 0.0054 and 0.0022
    assert abs(balanced - expected) < 0.02 and abs(uniform - 0.01) < 0.01 and balanced > 4 * uniform


def test_a_weighted_crop_is_the_max_points_voxels_nearest_its_centre_and_repeats_with_its_seed():
    only = np.zeros(1000)
    only[500] = 1.0  # the one possible centre
    assert crop(LINE, 301, np.random.default_rng(0), only).tolist() == list(range(350, 651))
    weight = voxel_weights(LABELS, class_weights(COUNTS))
    first = crop(LINE, 300, np.random.default_rng((3, 1, 0)), weight)
    assert len(np.unique(first)) == 300 and first[-1] - first[0] == 299  # a run of the line, in order
    assert np.array_equal(first, crop(LINE, 300, np.random.default_rng((3, 1, 0)), weight))
    assert not all(np.array_equal(first, crop(LINE, 300, np.random.default_rng((3, e, 0)), weight)) for e in (2, 3))


@pytest.mark.parametrize("method, overrides, target", [
    ("gt", {}, "gt"), ("pseudo-ce", {}, "label"), ("hicl", {}, "refined"),
    ("hicl", {"train.hicl.refine": False}, "label"), ("clip2scene", {}, "label"),  # CLIP2Scene: the raw labels
])
def test_the_dataset_weighs_each_voxel_by_the_methods_training_target(tmp_path, monkeypatch, method, overrides, target):
    pipeline = load_pipeline(make_toy_store(tmp_path, method=method), {**BALANCED, **overrides})
    cls = method_class(pipeline.train)
    assert cls.target_for(pipeline.train) == target
    ds = SceneDataset(pipeline, "train", fields=cls.fields_for(pipeline.train), target=target)
    np.testing.assert_array_equal(ds.centre_weight, class_weights(ds.label_counts(target)))

    def counted_again(name):
        raise AssertionError("the split's class counts were read again for a sample")

    crops = []

    def recorded_crop(coords, max_points, rng, weight):
        crops.append((weight, crop(coords, max_points, rng, weight)))
        return crops[-1][1]

    monkeypatch.setattr(ds, "label_counts", counted_again)
    monkeypatch.setattr("train.engine.dataset.crop", recorded_crop)
    sample = ds[(1, 2)]
    weight, kept = crops[-1]
    assert len(sample["coords"]) == len(kept) == 400 < len(weight)
    # the crop drew its centre by the class weights of the sample's own targets
    np.testing.assert_array_equal(weight[kept], voxel_weights(sample["targets"][target], ds.centre_weight))
    again, later = ds[(1, 2)], ds[(1, 3)]  # a pure function of (seed, epoch, scene)
    assert np.array_equal(again["coords"], sample["coords"]) and not np.array_equal(later["coords"], sample["coords"])
    with pytest.raises(ValueError, match="pass target"):
        SceneDataset(pipeline, "train", fields=cls.fields_for(pipeline.train))


def test_the_ce_weights_and_the_crop_read_the_split_once(tmp_path, monkeypatch):
    pipeline = load_pipeline(make_toy_store(tmp_path, method="hicl"), {**BALANCED, "train.class_weights": "inverse-sqrt"})
    cls = method_class(pipeline.train)
    ds = SceneDataset(pipeline, "train", fields=cls.fields_for(pipeline.train), target=cls.target_for(pipeline.train))

    def counted_again(name):
        raise AssertionError("the split's class counts were read again for the CE's weights")

    monkeypatch.setattr(ds, "label_counts", counted_again)
    method = build_method(pipeline, ds, torch.device("cpu"))
    assert method.target == "refined"
    np.testing.assert_array_equal(method.class_weight.numpy(), ds.centre_weight.astype(np.float32))


@pytest.mark.parametrize("method", ["gt", "hicl"])
def test_training_steps_with_class_balanced_crops(tmp_path, method):
    overrides = {"train.batch_size": 1, "train.max_points": 400, "train.hicl.queries_per_scene": 64}
    path = make_toy_store(tmp_path, method=method)
    balanced = fit(load_pipeline(path, {**overrides, "train.crop_centre": "class-balanced"}), max_steps=2)
    uniform = fit(load_pipeline(path, overrides), max_steps=2)
    assert len(balanced) == 2 and all(math.isfinite(v) for v in balanced)
    assert balanced != uniform  # other crops from the same seed


def test_crop_centre_is_checked_when_the_file_loads(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[dataset]\nname = "synthetic"\nroot = "raw"\n[store]\npath = "s.zarr"\n'
                    '[[partitions]]\nmethod = "felzenszwalb"\n[labels]\nlabeler = "simulated-clip"\n')
    assert load_pipeline(path).train.crop_centre == "uniform"
    with pytest.raises(ConfigError, match=r"'train.crop_centre' = 'balanced' must be one of uniform, class-balanced"):
        load_pipeline(path, {"train.crop_centre": "balanced"})
    with pytest.raises(ConfigError, match=r"'train.crop_centre' = 'class-balanced' centres .* 'train.max_points' = 0 "
                                          "crops nothing"):
        load_pipeline(path, {"train.crop_centre": "class-balanced"})
    assert load_pipeline(path, BALANCED).train.crop_centre == "class-balanced"
