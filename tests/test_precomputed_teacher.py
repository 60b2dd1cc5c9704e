"""Any 2D model as the teacher, end to end: label maps (with scores and features), mask files and
text embeddings written as another program would, in the ScanNet layout (generated rooms) and
the nuScenes layout; preprocess, train a few steps and evaluate; the maps' files in every key."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from preprocess.datasets.registry import read_scene
from shared.render import MeshRaycaster
from preprocess.labels.labelers import PrecomputedLabeler
from preprocess.geometry.projection import scale_intrinsic
from preprocess.partition.metrics import purity
from preprocess.pipeline import run
from preprocess.synth import generate
from shared.config import LabelsConfig, PrecomputedConfig, load_pipeline
from shared.errors import ConfigError, DatasetError
from shared.schema import Layout
from shared.store import Store
from test_readers_nuscenes import VERSION, _dataset

MAP_SIZE = (160, 120)  # the cameras' size (maps of other sizes: test_mask_sets, the error test below)
FEATURE_DIM = 8


def counts(summary):
    return {stage: (c["computed"], c["cached"], c["failed"]) for stage, c in summary.counts().items()}


def _write_maps(root: Path, scene_id: str) -> None:
    """A perfect teacher: each frame's ground-truth classes rendered from the labelled mesh at
    MAP_SIZE (255 = nothing hit or no benchmark class), a constant confidence, coarse random
    features, and mask files of the classes' ids + 1."""
    from preprocess.datasets.scannet import read_scannet_scene

    scene = read_scannet_scene(root / "scans" / scene_id)
    rays = MeshRaycaster(scene.xyz, scene.faces)
    for folder in ("labels2d", "masks"):
        (root / "scans" / scene_id / folder).mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for view in scene.views:
        K = scale_intrinsic(view.intrinsic, (view.width, view.height), MAP_SIZE)
        face = rays.render(view.world_to_camera, K, *MAP_SIZE)[1]
        gt = np.where(face >= 0, scene.gt[scene.faces[np.maximum(face, 0), 0]], -1)
        Image.fromarray(np.where(gt >= 0, gt, 255).astype(np.uint8)).save(view.frame_file("labels2d", ".png"))
        Image.fromarray(np.full(gt.shape, 200, np.uint8)).save(view.frame_file("labels2d", ".score.png"))
        np.save(view.frame_file("labels2d", ".feat.npy"), rng.normal(size=(15, 20, FEATURE_DIM)).astype(np.float16))
        Image.fromarray((gt + 1).astype(np.uint16)).save(view.frame_file("masks", ".png"))


@pytest.fixture(scope="module")
def rooms(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rooms")
    for scene_id in generate(root, scenes=3, seed=4, resolution=0.12, frames=6, width=160, height=120):
        _write_maps(root, scene_id)
    np.save(root / "text_embeddings.npy", np.random.default_rng(1).normal(size=(20, FEATURE_DIM)).astype(np.float32))
    return root


ROOMS = """
[dataset]
name = "synthetic"
root = "{root}"
train = "scannetv2_train.txt"
val = "scannetv2_val.txt"
[store]
path = "{store}"
[[partitions]]
method = "felzenszwalb"
[[partitions]]
method = "masks"
source = "precomputed"
frame_skip = 1
min_points = 5
[[partitions]]
name = "slic"
method = "masks"
n_segments = 40
width = 160
frame_skip = 2
[labels]
labeler = "precomputed"
frame_skip = 1
store_features = true
[labels.precomputed]
scores = true
text_embeddings = "{root}/text_embeddings.npy"
[train]
method = "hicl"
partition = "masks"
voxel_size = 0.1
epochs = 1
batch_size = 2
num_workers = 0
width = 0.25
out_dir = "{out}"
[train.hicl]
queries_per_scene = 64
memory_size = 64
"""


@pytest.mark.slow
def test_rooms_with_a_precomputed_teacher_and_mask_sets_end_to_end(tmp_path, rooms):
    from train.engine.loop import fit
    from train.reports.evaluate import evaluate

    path = tmp_path / "p.toml"
    path.write_text(ROOMS.format(root=rooms, store=tmp_path / "s.zarr", out=tmp_path / "run"))
    pipeline = load_pipeline(path)
    summary = run(pipeline, scheduler="inline", progress=False)
    assert not summary.failures, summary.describe()
    assert counts(summary) == {"text": (1, 0, 0), "ingest": (3, 0, 0), "partitions": (9, 0, 0), "labels": (3, 0, 0),
                               "refine": (9, 0, 0)}
    store, layout = Store(pipeline.store.path), Layout(Store(pipeline.store.path), pipeline)
    for scene in store.scenes():
        gt = store.read(scene, "points", ["gt"])["gt"]
        pseudo = store.read(scene, layout.labels(scene))
        seen = (pseudo["label"] >= 0) & (gt >= 0)
        # the teacher is perfect: only points within a map pixel of a class boundary can be wrong
        assert seen.mean() > 0.3 and (pseudo["label"][seen] == gt[seen]).mean() > 0.9
        score = pseudo["score"][pseudo["label"] >= 0].astype(np.float32)  # the winner's share of 200/255 votes
        assert np.isclose(np.median(score), 200 / 255, atol=1e-3) and score.max() < 200 / 255 + 1e-3
        assert pseudo["feat"].shape == (len(gt), FEATURE_DIM)
        masks = store.read(scene, layout.partition(scene, "masks"), ["segment"])["segment"]
        in_set = (masks >= 0) & (gt >= 0)
        # the rooms are scans, one surface: neighbours across a class border can share a mask pixel and
        # join two classes' sets, yet the sets follow the classes (0.61-0.86 here, one set per room 0.39-0.48)
        one_set = purity(np.zeros(int(in_set.sum()), np.int64), gt[in_set])
        assert purity(masks[in_set], gt[in_set]) > one_set + 0.1
    assert np.allclose(store.read("", layout.text(), ["embedding"])["embedding"], np.load(rooms / "text_embeddings.npy"))

    fit(pipeline, max_steps=2)
    evaluate(pipeline, tmp_path / "run" / "last.pt", tmp_path / "eval", render=0)
    assert json.loads((tmp_path / "eval" / "run.json").read_text())["val scenes"] == 1

    # a label map or a mask file rewritten in place (same size) changes its scene's keys only
    scene = store.scenes()[0]
    frame = rooms / "scans" / scene / "labels2d" / "0.feat.npy"
    stat = frame.stat()
    np.save(frame, np.zeros((15, 20, FEATURE_DIM), np.float16))
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    mask = rooms / "scans" / scene / "masks" / "1.png"
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10**9))
    again = run(pipeline, scheduler="inline", progress=False)
    assert counts(again) == {"text": (0, 1, 0), "ingest": (0, 3, 0), "partitions": (1, 8, 0), "labels": (1, 2, 0),
                             "refine": (3, 6, 0)}
    assert not Layout(store, pipeline).manifest.sources[scene] == layout.manifest.sources[scene]
    fit(load_pipeline(path), max_steps=1)  # the trainer finds the new outputs from the manifest alone


def test_precomputed_maps_errors_name_the_file(tmp_path, rooms):
    scene = read_scene(load_pipeline(_rooms_pipeline(tmp_path, rooms)).dataset, "scene0000_00")
    view = scene.views[0]
    cfg = LabelsConfig(labeler="precomputed", precomputed=PrecomputedConfig(folder="maps"))
    labeler = PrecomputedLabeler(cfg, list(range(20)))
    folder = rooms / "scans" / "scene0000_00" / "maps"
    folder.mkdir(exist_ok=True)
    with pytest.raises(DatasetError, match=r"maps/0\.png: label map not found; write it with your 2D model"):
        labeler.label_views(scene, [view])
    Image.fromarray(np.full((60, 80), 20, np.uint8)).save(folder / "0.png")
    with pytest.raises(DatasetError, match=r"maps/0\.png: holds class id 20, but the pipeline has 20 classes"):
        labeler.label_views(scene, [view])
    Image.fromarray(np.full((40, 80), 3, np.uint8)).save(folder / "0.png")
    with pytest.raises(DatasetError, match=r"maps/0\.png: 80x40 does not have the aspect ratio of the 160x120"):
        labeler.label_views(scene, [view])
    Image.fromarray(np.full((60, 80), 3, np.uint8)).save(folder / "0.png")
    scored = PrecomputedLabeler(LabelsConfig(labeler="precomputed", precomputed=PrecomputedConfig(
        folder="maps", scores=True)), list(range(20)))
    with pytest.raises(DatasetError, match=r"maps/0\.score\.png: score map \(labels\.precomputed\.scores = true\) not found"):
        scored.label_views(scene, [view])
    Image.fromarray(np.full((120, 160), 3, np.uint8)).save(folder / "0.score.png")
    with pytest.raises(DatasetError, match=r"maps/0\.score\.png: 160x120 differs from its label map's 80x60"):
        scored.label_views(scene, [view])
    featured = PrecomputedLabeler(LabelsConfig(labeler="precomputed", store_features=True,
                                               precomputed=PrecomputedConfig(folder="maps")), list(range(20)))
    np.save(folder / "0.feat.npy", np.zeros((60, 80), np.float16))
    with pytest.raises(DatasetError, match=r"maps/0\.feat\.npy: feature map .* must be a 3-D float array"):
        featured.label_views(scene, [view])
    label, score, feat = PrecomputedLabeler(cfg, list(range(20))).label_views(scene, [view])[0]
    assert label.shape == (60, 80) and (label == 3).all() and (score == 1).all() and feat is None


def _rooms_pipeline(tmp_path: Path, rooms: Path, extra: str = "") -> Path:
    path = tmp_path / "p.toml"
    path.write_text(ROOMS.format(root=rooms, store=tmp_path / "s.zarr", out=tmp_path / "run") + extra)
    return path


def test_precomputed_config_is_checked_before_any_scene(tmp_path, rooms):
    path = _rooms_pipeline(tmp_path, rooms)
    with pytest.raises(ConfigError, match=r"train.head = \"text\" needs class text embeddings, and labels.labeler = "
                                          r"\"precomputed\" has none: set labels.precomputed.text_embeddings .* or train "
                                          r"with train.head = \"linear\""):
        load_pipeline(path, {"labels.precomputed.text_embeddings": ""})
    with pytest.raises(ConfigError, match=r"'labels.precomputed.folder' = 'a/b' must be one folder name"):
        load_pipeline(path, {"labels.precomputed.folder": "a/b"})
    with pytest.raises(ConfigError, match=r"'partitions\[1\].consistency' = 1.5 must be a share in \(0, 1\]"):
        load_pipeline(path, {"partitions": [{"method": "felzenszwalb"}, {"method": "masks", "consistency": 1.5}]})
    with pytest.raises(ConfigError, match=r"'partitions\[0\].source' = 'sam' must be one of slic, precomputed"):
        load_pipeline(path, {"partitions": [{"method": "masks", "source": "sam"}], "train.partition": "masks"})
    with pytest.raises(DatasetError, match=r"scans/<scene>/nothing/<frame>\.png: no label maps of labels.labeler = "
                                           r"\"precomputed\" under .*; write them with your 2D model"):
        run(load_pipeline(path, {"labels.precomputed.folder": "nothing"}), scheduler="inline", progress=False)
    np.save(tmp_path / "text.npy", np.zeros((19, 4), np.float32))
    with pytest.raises(DatasetError, match=r"text\.npy: 19 rows, but the pipeline has 20 classes"):
        run(load_pipeline(path, {"labels.precomputed.text_embeddings": str(tmp_path / "text.npy")}),
            scheduler="inline", progress=False)


# ------------------------------------------------------------------------- nuScenes layout
CAR, DRIVEABLE = 17, 24  # raw lidarseg ids of the benchmark's car (3) and driveable surface (10)


def _nuscenes(root: Path) -> Path:
    """The reader tests' two keyframes with a 2,000-point wall 6 m ahead of the car in each sweep
    (left half car, right half road in lidarseg), label maps and mask files that agree, 10 px wide."""
    _dataset(root)
    y, z = np.meshgrid(np.arange(-1.77, 1.8, 0.06), np.arange(-1.5, 0.5, 0.06), indexing="ij")
    wall = np.stack([np.full(y.size, 6.0), y.ravel(), z.ravel(), np.zeros(y.size), np.zeros(y.size)], 1)
    raw = np.where(wall[:, 1] > 0, CAR, DRIVEABLE).astype(np.uint8)
    lidarseg = []
    for s in ("s0", "s1"):
        wall.astype(np.float32).tofile(root / "samples" / "LIDAR_TOP" / f"{s}.pcd.bin")
        raw.tofile(root / "lidarseg" / VERSION / f"{s}_lidarseg.bin")
        lidarseg.append({"token": f"ls_{s}", "sample_data_token": f"{s}_LIDAR_TOP",
                         "filename": f"lidarseg/{VERSION}/{s}_lidarseg.bin"})
        # image column u < 50 looks left of the camera's axis: y > 0, the car half
        label = np.where(np.arange(100) < 50, 3, 10)[None].repeat(80, 0).astype(np.uint8)
        label[:10] = 255  # the sky: no label
        for folder, image in (("labels2d", label), ("masks", (label != 3).astype(np.uint16) + 1)):
            (root / folder / "CAM_FRONT").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / folder / "CAM_FRONT" / f"{s}.png")
    (root / VERSION / "lidarseg.json").write_text(json.dumps(lidarseg))
    return root


NUSCENES = """
[dataset]
name = "nuscenes"
root = "{root}"
version = "{version}"
train = ["scene-0001_000"]
val = ["scene-0001_001"]
[store]
path = "{store}"
[[partitions]]
method = "masks"
source = "precomputed"
[[partitions]]
method = "felzenszwalb"
[labels]
labeler = "precomputed"
[train]
method = "hicl"
partition = "masks"
head = "linear"
voxel_size = 0.1
epochs = 1
batch_size = 1
num_workers = 0
width = 0.25
out_dir = "{out}"
[train.hicl]
queries_per_scene = 64
memory_size = 64
"""


def test_nuscenes_layout_with_a_precomputed_teacher_end_to_end(tmp_path):
    from train.engine.loop import fit
    from train.reports.evaluate import evaluate

    root = _nuscenes(tmp_path / "nuscenes")
    path = tmp_path / "n.toml"
    path.write_text(NUSCENES.format(root=root, version=VERSION, store=tmp_path / "n.zarr", out=tmp_path / "run"))
    pipeline = load_pipeline(path)
    summary = run(pipeline, scheduler="inline", progress=False)
    assert not summary.failures, summary.describe()
    assert "text" not in counts(summary)  # no embeddings file: the linear head needs none
    store = Store(pipeline.store.path)
    layout = Layout(store, pipeline)
    for scene in ("scene-0001_000", "scene-0001_001"):
        gt = store.read(scene, "points", ["gt"])["gt"]
        label = store.read(scene, layout.labels(scene), ["label"])["label"]
        masks = store.read(scene, layout.partition(scene, "masks"), ["segment"])["segment"]
        seen = label >= 0
        assert seen.mean() > 0.7 and (label[seen] == gt[seen]).mean() > 0.95
        assert len(np.unique(masks[masks >= 0])) == 2 and all(
            len(np.unique(gt[masks == s])) == 1 for s in (0, 1))
    fit(pipeline, max_steps=2)
    evaluate(pipeline, tmp_path / "run" / "last.pt", tmp_path / "eval", render=0)
    assert json.loads((tmp_path / "eval" / "run.json").read_text())["val scenes"] == 1
