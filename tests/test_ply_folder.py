"""A dataset of your own: a folder of PLY scenes (meshes and point clouds, per-point labels in a
`label` property) goes through preprocess, training, evaluation and, from the checkpoint alone,
`python -m train predict` with nothing but a pipeline file added."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from preprocess.pipeline import run
from shared.classes import user_table
from shared.config import load_pipeline
from shared.errors import ConfigError, DatasetError
from shared.ply import read_ply, write_ply
from shared.scans import read_scan
from shared.schema import POINTS, Layout
from shared.store import Store

UNLABELLED = 255  # any id outside the class list


def _scan(rng: np.random.Generator, n: int = 3000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points of a floor (class 0) with a box on it (class 1); a few unlabelled."""
    floor = np.c_[rng.uniform(0, 3, (n, 2)), np.zeros(n)]
    box = np.c_[rng.uniform(1, 2, (n // 2, 2)), rng.uniform(0, 0.8, n // 2)]
    xyz = np.vstack([floor, box]).astype(np.float32)
    label = np.r_[np.zeros(n, np.uint8), np.ones(n // 2, np.uint8)]
    label[:50] = UNLABELLED
    rgb = np.where(label[:, None] == 1, [200, 40, 40], [90, 90, 90]).astype(np.uint8)
    return xyz, rgb, label


def _mesh_floor(size: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """A triangulated 3 m floor (class 0 everywhere)."""
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    xyz = np.c_[i.ravel() * 0.1, j.ravel() * 0.1, np.zeros(size * size)].astype(np.float32)
    q = (i[:-1, :-1] * size + j[:-1, :-1]).ravel()
    faces = np.r_[np.c_[q, q + size, q + 1], np.c_[q + 1, q + size, q + size + 1]].astype(np.int32)
    return xyz, faces


@pytest.fixture()
def scans(tmp_path: Path) -> Path:
    root = tmp_path / "my-scans"
    rng = np.random.default_rng(0)
    for name in ("scan_a", "scan_b"):
        xyz, rgb, label = _scan(rng)
        own_normals = {"nx": np.zeros(len(xyz), np.float32), "ny": np.zeros(len(xyz), np.float32),
                       "nz": np.ones(len(xyz), np.float32)} if name == "scan_a" else {}
        write_ply(root / f"{name}.ply", xyz, rgb, label=label, **own_normals)
    xyz, faces = _mesh_floor()
    write_ply(root / "floor_mesh.ply", xyz, faces=faces, label=np.zeros(len(xyz), np.int32))
    write_ply(root / "unlabelled.ply", *_scan(rng)[:2])  # a scan to predict on: no labels
    return root


PIPELINE = """
[dataset]
name = "ply-folder"
root = "{root}"
classes = ["floor", "box"]
train = ["scan_a", "floor_mesh"]
val = ["scan_b"]
[store]
path = "{store}"
[[partitions]]
method = "felzenszwalb"
[train]
method = "gt"
head = "linear"
voxel_size = 0.1
epochs = 10
batch_size = 2
num_workers = 0
width = 0.25
lr = 0.1
out_dir = "{out}"
"""


def _pipeline(tmp_path: Path, root: Path) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(PIPELINE.format(root=root, store=tmp_path / "s.zarr", out=tmp_path / "run"))
    return path


def test_a_ply_folder_goes_through_preprocess_training_and_predict(tmp_path, scans):
    import torch

    from train.cli import main
    from train.engine.dataset import SceneDataset
    from train.engine.loop import fit
    from train.reports.evaluate import evaluate, load_method, predict

    path = _pipeline(tmp_path, scans)
    pipeline = load_pipeline(path)
    summary = run(pipeline, scheduler="inline", progress=False)
    assert not summary.failures, summary.describe()
    counts = summary.counts()
    assert set(counts) == {"ingest", "partitions"}  # no camera views: no 2D teacher to run
    assert counts["ingest"]["computed"] == 3 and counts["partitions"]["computed"] == 3
    store = Store(pipeline.store.path)
    layout = Layout(store, pipeline)
    assert layout.split("train") == ["scan_a", "floor_mesh"] and layout.manifest.classes == ["floor", "box"]
    _, _, label = _scan(np.random.default_rng(0))
    gt = store.read("scan_a", POINTS, ["gt"])["gt"]
    np.testing.assert_array_equal(gt, np.where(label == UNLABELLED, -1, label.astype(int)))  # ids outside the list: ignored
    assert store.has_array("floor_mesh", POINTS, "faces") and not store.has_array("scan_a", POINTS, "faces")
    segment = store.read("floor_mesh", layout.partition("floor_mesh", "felzenszwalb"), ["segment"])["segment"]
    assert len(segment) == 900 and segment.max() < 900
    for scene in ("scan_a", "scan_b", "floor_mesh"):  # the PLY's own normals, PCA toward the centre, the mesh's
        np.testing.assert_array_equal(store.read(scene, POINTS, ["normal"])["normal"],
                                      read_scan(scans / f"{scene}.ply").with_normals(pipeline.ingest.normal_knn).normal)
    losses = fit(pipeline)
    assert len(losses) == 10 and all(np.isfinite(losses))
    evaluate(pipeline, tmp_path / "run" / "last.pt", tmp_path / "eval", render=0)
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert list(results["rows"]["gt"]["classes"]) == ["floor", "box"]
    val = SceneDataset(pipeline, "val", with_gt=True, fields=())
    method = load_method(pipeline, tmp_path / "run" / "last.pt", val, torch.device("cpu"))
    evaluated = next(predict(method, val, torch.device("cpu")))[1]

    # From the checkpoint alone: a val scan's PLY labelled exactly as evaluation labels it from the store.
    path.unlink()
    shutil.rmtree(pipeline.store.path)
    out = tmp_path / "predicted"
    assert main(["predict", str(tmp_path / "run" / "last.pt"), str(scans / "scan_b.ply"), "--out", str(out)]) == 0
    labels = np.load(out / "scan_b" / "labels.npy")
    np.testing.assert_array_equal(labels, evaluated)
    assert set(labels) == {0, 1}  # 10 steps tell the red box from the grey floor
    table = [line.split() for line in (out / "classes.txt").read_text().splitlines()]
    assert [row[:2] for row in table] == [["0", "floor"], ["1", "box"]]
    palette = np.array([row[2:] for row in table], dtype=np.uint8)
    np.testing.assert_array_equal(palette, user_table(("floor", "box")).palette)
    assert len({tuple(c) for c in palette}) == 2  # a class table of your own gets distinct colours
    ply = read_ply(out / "scan_b" / "scan_b.ply")
    np.testing.assert_array_equal(ply["label"], labels)
    np.testing.assert_array_equal(ply["rgb"], palette[labels])


def test_what_a_ply_folder_cannot_do_is_said_at_load(tmp_path, scans):
    path = _pipeline(tmp_path, scans)
    with pytest.raises(ConfigError, match=r"'train.method' = 'hicl' trains on a 2D teacher's pseudo-labels, and "
                                          r"ply-folder scenes have no camera views to label; train.method = \"gt\""):
        load_pipeline(path, {"train.method": "hicl"})
    with pytest.raises(ConfigError, match=r"train.head = \"text\" needs class text embeddings, and ply-folder scenes "
                                          r"have no camera views"):
        load_pipeline(path, {"train.head": "text"})
    with pytest.raises(ConfigError, match=r"'dataset.classes' = \['floor', 'floor'\] must list the class names"):
        load_pipeline(path, {"dataset.classes": ["floor", "floor"]})
    with pytest.raises(ConfigError, match=r"'dataset.version' is a key of nuscenes; ply-folder scenes take no such key"):
        load_pipeline(path, {"dataset.version": "v1.0-mini"})
    with pytest.raises(ConfigError, match=r"'partitions\[0\].method' = 'masks' reads the scenes' camera images, and "
                                          r"ply-folder scenes have none"):
        load_pipeline(path, {"partitions": [{"method": "masks"}], "train.partition": "masks"})
    with pytest.raises(ConfigError, match=r"\[\[partitions\]\] 'felzenszwalb' reads the per-point ring of a LiDAR "
                                          r"sweep, which ply-folder scenes lack"):
        load_pipeline(path, {"partitions.felzenszwalb.graph": "rings"})


def test_bad_ply_folders_name_the_file(tmp_path, scans):
    from preprocess.datasets.registry import read_scene, split_of

    pipeline = load_pipeline(_pipeline(tmp_path, scans), {"dataset.train": "all", "dataset.val": ["scan_b"]})
    assert split_of(pipeline.dataset)["train"] == ["floor_mesh", "scan_a", "unlabelled"]
    assert read_scene(pipeline.dataset, "unlabelled").gt is None
    xyz, rgb, _ = _scan(np.random.default_rng(1), 100)
    write_ply(scans / "scan_a.ply", xyz, rgb, label=np.full(len(xyz), 0.5, np.float32))
    with pytest.raises(DatasetError, match=r"scan_a\.ply: vertex property 'label' must hold whole numbers"):
        read_scene(pipeline.dataset, "scan_a")
    with pytest.raises(DatasetError, match=r"empty: folder not found; dataset.root must be the folder holding your "
                                           r"\.ply scenes"):
        split_of(load_pipeline(_pipeline(tmp_path, tmp_path / "empty")).dataset)


def test_a_dataset_is_its_class_and_its_reader_and_a_missing_one_is_one_error(tmp_path, scans, monkeypatch):
    """The class (shared/datasets.py, read by both programs) and the reader module
    (preprocess/datasets/, read by preprocessing only): either missing is one error saying where."""
    from preprocess.datasets.registry import reader_module, split_of
    from shared.datasets import DATASETS, PlyFolder

    path = _pipeline(tmp_path, scans)
    with pytest.raises(ConfigError, match=r"'dataset.name' = 'mine' is not one of scannet, synthetic, nuscenes, "
                                          r"ply-folder; a dataset of your own is a class in shared/datasets.py's "
                                          r"DATASETS and a reader module in preprocess/datasets/"):
        load_pipeline(path, {"dataset.name": "mine"})
    for reader, error in (("", r"shared/datasets.py: Mine.reader is not set; name the dataset's reader module"),
                          ("preprocess.datasets.mine", r"shared/datasets.py: Mine.reader = 'preprocess.datasets.mine': "
                                                       r"no such module; write the reader as preprocess/datasets/mine.py"),
                          ("preprocess.datasets.scene", r"scene.py: the reader of dataset 'mine' lacks list_scenes, "
                                                        r"scene_group, read_scene, scene_files, frame_files, frame_folders")):
        monkeypatch.setitem(DATASETS, "mine", type("Mine", (PlyFolder,), {"reader": reader}))
        reader_module.cache_clear()
        with pytest.raises(DatasetError, match=error):
            split_of(load_pipeline(path, {"dataset.name": "mine"}).dataset)
    reader_module.cache_clear()
