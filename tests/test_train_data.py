"""Trainer data loading on a tiny synthetic store: shapes, inverse map, augmentation, batching.

`make_toy_store` is imported by the other trainer tests and the training benchmark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shared.config import ConfigError, FelzenszwalbParams, load_pipeline, params_dict
from shared.store import POINTS, Store, stage_key
from train.augment import augment
from train.data import (
    EpochSampler, MissingData, SceneDataset, collate, label_params, make_loader, split_scenes,
    text_embedding, voxelize,
)

CLASS_COLOURS = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200]], dtype=np.float64)  # wall, floor, cabinet


def toy_scene(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """A 2 m room: floor (class 1), two walls (class 0) and a box (class 2), coloured by class."""
    kind = rng.choice(4, size=n, p=[0.35, 0.2, 0.2, 0.25])
    u, v = rng.uniform(0, 2, n), rng.uniform(0, 2, n)
    xyz = np.stack([u, v, np.zeros(n)], 1)
    normal = np.tile([0.0, 0.0, 1.0], (n, 1))
    wall_x, wall_y, box = kind == 1, kind == 2, kind == 3
    xyz[wall_x] = np.stack([np.zeros(wall_x.sum()), u[wall_x], v[wall_x]], 1)
    normal[wall_x] = [1.0, 0.0, 0.0]
    xyz[wall_y] = np.stack([u[wall_y], np.zeros(wall_y.sum()), v[wall_y]], 1)
    normal[wall_y] = [0.0, 1.0, 0.0]
    corner = rng.uniform(0.6, 1.0, 2)
    xyz[box] = np.stack([corner[0] + u[box] / 4, corner[1] + v[box] / 4, np.full(box.sum(), 0.5)], 1)
    gt = np.array([1, 0, 0, 2])[kind].astype(np.int16)
    rgb = np.clip(CLASS_COLOURS[gt] + rng.normal(0, 15, (n, 3)), 0, 255).astype(np.uint8)
    # Sets: 0.5 m cells per surface, so no set mixes classes.
    cell = np.floor(xyz / 0.5).astype(np.int64)
    _, segment = np.unique(np.c_[kind, cell], axis=0, return_inverse=True)
    label = gt.copy()
    flip = rng.random(n) < 0.2
    label[flip] = rng.integers(0, 3, flip.sum())
    label[rng.random(n) < 0.1] = -1
    return {"xyz": xyz.astype(np.float32), "rgb": rgb, "normal": normal.astype(np.float32), "gt": gt,
            "segment": segment.ravel().astype(np.int32), "label": label.astype(np.int16),
            "score": rng.uniform(0.3, 1.0, n).astype(np.float16)}


def make_toy_store(tmp: Path, scenes: int = 3, points: int = 3000, method: str = "gt", **train: object) -> Path:
    """Write a toy store and pipeline file under `tmp`; returns the pipeline path."""
    train_opts = {"method": method, "voxel_size": 0.1, "epochs": 4, "batch_size": 2, "num_workers": 0,
                  "lr": 0.02, "warmup_steps": 2, "head": "linear", "width": 0.25,
                  "out_dir": str(tmp / "run"), "checkpoint_every": 2, **train}
    lines = [
        "[dataset]", 'name = "synthetic"', f'root = "{tmp / "raw"}"',
        "train = [" + ", ".join(f'"toy{i}"' for i in range(scenes - 1)) + "]", f'val = ["toy{scenes - 1}"]',
        "[store]", f'path = "{tmp / "toy.zarr"}"',
        "[[partitions]]", 'method = "felzenszwalb"',
        "[labels]", 'labeler = "simulated-clip"', "store_features = true",
        "[train]", *(f"{k} = {v!r}".replace("'", '"').replace("True", "true").replace("False", "false")
                     for k, v in train_opts.items()),
    ]
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "toy.toml"
    path.write_text("\n".join(lines) + "\n")
    pipeline = load_pipeline(path)
    store = Store(pipeline.store.path)
    rng = np.random.default_rng(0)
    dim = 8
    text = rng.normal(size=(20, dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    part_params = {"method": "felzenszwalb", **params_dict(FelzenszwalbParams())}
    labels = label_params(pipeline)
    for i in range(scenes):
        s = toy_scene(rng, points)
        feat = text[np.maximum(s["label"], 0)] + rng.normal(0, 0.3, (points, dim))
        points_key = f"points{i}"
        store.write(f"toy{i}", POINTS, {k: s[k] for k in ("xyz", "rgb", "normal", "gt")},
                    {"key": points_key, "num_points": points})
        store.write(f"toy{i}", f"partitions/felzenszwalb-{stage_key('partitions', part_params, [points_key])}",
                    {"segment": s["segment"]}, {"params": part_params})
        store.write(f"toy{i}", f"pseudo/simulated-clip-{stage_key('labels', labels, [points_key])}",
                    {"label": s["label"], "score": s["score"], "views": np.ones(points, np.uint16),
                     "feat": feat.astype(np.float16)}, {"params": labels})
    text_key = stage_key("labels", {k: labels[k] for k in ("labeler", "labeler_params", "classes")}, [])
    store.write("", f"text/simulated-clip-{text_key}", {"embedding": text}, {"key": text_key})
    return path


@pytest.fixture()
def pipeline(tmp_path: Path):
    return load_pipeline(make_toy_store(tmp_path))


def test_splits_and_missing_store(pipeline, tmp_path):
    store = Store(pipeline.store.path)
    assert split_scenes(pipeline, "train", store) == ["toy0", "toy1"]
    assert split_scenes(pipeline, "val", store) == ["toy2"]
    (tmp_path / "empty.toml").write_text(
        pipeline.source.read_text().replace(str(tmp_path / "toy.zarr"), str(tmp_path / "none.zarr")))
    with pytest.raises(MissingData, match="make preprocess"):
        SceneDataset(load_pipeline(tmp_path / "empty.toml"))
    assert not (tmp_path / "none.zarr").exists()
    assert text_embedding(store, pipeline, "toy0").shape == (20, 8)


def test_missing_stage_output_is_named(pipeline):
    import dataclasses

    other = dataclasses.replace(pipeline, labels=dataclasses.replace(pipeline.labels, frame_skip=7))
    with pytest.raises(MissingData, match="pseudo/simulated-clip"):
        SceneDataset(other, fields=("pseudo",))


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


def test_hicl_visual_weighting_acts_on_the_training_targets(tmp_path):
    """train.hicl.visual_weighting reads the stored CLIP features for the refinement even when no
    loss uses them (the HICL method's fields), and changes the refined targets."""
    from shared.refine import refine_labels
    from train.methods import HICL

    path = make_toy_store(tmp_path, method="hicl")
    plain = load_pipeline(path)
    weighted = load_pipeline(path, {"train.hicl.visual_weighting": True})
    # One set of toy0 gets 60% votes for class 0 that look unlike the set, 40% for class 1 that look like it.
    store, group = Store(plain.store.path), SceneDataset(plain, "train", fields=("pseudo",)).groups[0]["pseudo"]
    pseudo = store.read("toy0", group)
    segment = SceneDataset(plain, "train", fields=("segment",)).read(0)["segment"]
    members = np.flatnonzero(segment == segment[0])
    split = int(0.6 * len(members))
    pseudo["label"][members] = np.where(np.arange(len(members)) < split, 0, 1)
    pseudo["score"][members] = 1.0
    pseudo["feat"][members] = np.where(np.arange(len(members))[:, None] < split, -1.0, 3.0)
    store.remove("toy0", group)
    store.write("toy0", group, pseudo, {"params": label_params(plain)})
    fields = HICL.fields_for(weighted.train)
    assert "feat" not in fields
    on = SceneDataset(weighted, "train", fields=fields).read(0)
    off = SceneDataset(plain, "train", fields=fields).read(0)
    assert (off["refined"][members] == 0).all() and (on["refined"][members] == 1).all()
    expected = refine_labels(on["label"], on["score"].astype(np.float32), on["segment"], 20, features=on["feat"])
    np.testing.assert_array_equal(on["refined"], expected)


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
    ds = SceneDataset(pipeline, "train", fields=("pseudo", "gt"))
    for field, name in (("gt", "gt"), ("label", "label")):
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


def test_loader_with_resumable_sampler(pipeline):
    ds = SceneDataset(pipeline, "train")
    sampler = EpochSampler(ds, num_replicas=1, rank=0, seed=0)
    sampler.start(epoch=2)
    full = [b.scenes for b in make_loader(ds, 1, 0, sampler)]
    sampler.start(epoch=2, skip=1)
    rest = [b.scenes for b in make_loader(ds, 1, 0, sampler)]
    assert len(full) == 2 and rest == full[1:]
