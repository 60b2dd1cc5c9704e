"""Evaluation pieces: exact IoU with an n/a class, voxel→point mapping, reports, renders, PLY."""

from __future__ import annotations

import json

import numpy as np
from plyfile import PlyData

from shared.metrics import IoUAccumulator
from train.engine.transforms import voxelize
from train.reports.evaluate import voxel_ceiling
from shared.ply import write_ply
from shared.viz import colour_labels, render_topdown
from train.reports.tables import write_report

NAMES = ("wall", "floor", "chair", "sofa")


def hand_made() -> tuple[np.ndarray, np.ndarray]:
    """gt/pred pairs with a known confusion: class 3 (sofa) is neither present nor predicted."""
    pairs = [(0, 0)] * 6 + [(0, 1)] * 2 + [(1, 1)] * 5 + [(1, 2)] * 1 + [(2, 2)] * 3 + [(2, 0)] * 1
    pairs += [(-1, 3)] * 7  # ignored ground truth: dropped before counting, whatever the prediction
    gt, pred = np.array(pairs).T
    return pred, gt


def test_exact_iou_with_na_class():
    pred, gt = hand_made()
    acc = IoUAccumulator(NAMES)
    acc.add(pred[:10], gt[:10])  # additive across scenes
    acc.add(pred[10:], gt[10:])
    r = acc.result()
    assert r.confusion.tolist() == [[6, 2, 0, 0], [0, 5, 1, 0], [1, 0, 3, 0], [0, 0, 0, 0]]
    # wall 6/(6+1+2), floor 5/(5+2+1), chair 3/(3+1+1); sofa n/a and out of the mean
    expected = [6 / 9, 5 / 8, 3 / 5]
    assert np.allclose(r.iou[:3], expected) and np.isnan(r.iou[3])
    assert np.isclose(r.miou, np.mean(expected))


def test_voxel_predictions_reach_every_point():
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 1, (4000, 3))
    gt = (xyz[:, 0] > 0.5).astype(np.int64)  # a boundary on a voxel face: voxels are pure
    coords, index, inverse = voxelize(xyz, 0.25)
    voxel_pred = gt[index]
    acc = IoUAccumulator(NAMES[:2])
    acc.add(voxel_pred[inverse], gt)
    assert np.allclose(acc.result().iou, 1.0)


def test_report_files(tmp_path):
    pred, gt = hand_made()
    acc = IoUAccumulator(NAMES)
    acc.add(pred, gt)
    paths = write_report(tmp_path, {"hicl": acc.result()}, {"checkpoint": "x.pt", "val scenes": 1})
    assert {p.name for p in paths} == {"results.md", "results.csv", "results.json", "confusion.png", "run.json"}
    md = (tmp_path / "results.md").read_text()
    assert "| hicl |" in md and "n/a" in md and "TP/(TP+FP+FN)" in md
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["rows"]["hicl"]["classes"]["sofa"] is None and "convention" in run


def test_topdown_render_keeps_the_highest_point():
    xyz = np.array([[0, 0, 0.0], [0, 0, 1.0], [1, 1, 0.5], [1, 1, 0.2]])
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], dtype=np.uint8)
    image = render_topdown(xyz, rgb, size=4)
    assert image.shape == (4, 4, 3)
    assert image[3, 0].tolist() == [0, 255, 0]  # (0,0): bottom-left, green point on top
    assert image[0, 3].tolist() == [0, 0, 255]  # (1,1): top-right, z=0.5 beats z=0.2
    assert (image[1:3, 1:3] == 255).all()  # empty pixels are background


def test_binary_ply_round_trip(tmp_path):
    xyz = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    label = (np.arange(50) % 5 - 1).astype(np.int32)
    path = write_ply(tmp_path / "p.ply", xyz, colour_labels(label, 4), label=label)
    ply = PlyData.read(str(path))
    assert not ply.text
    v = ply["vertex"]
    assert np.allclose(np.c_[v["x"], v["y"], v["z"]], xyz) and np.array_equal(v["label"], label)
    assert (np.c_[v["red"], v["green"], v["blue"]][label < 0] == 128).all()


def test_voxel_ceiling_is_the_majority_class_of_each_voxel():
    # voxel 0: wall x3, picture x2 -> wall; voxel 1: picture x1, ignored x2 -> picture;
    # voxel 2: ignored only -> -1; voxel 3: a wall/floor tie -> the lower id (wall)
    gt = np.array([0, 2, 0, 2, 0, 2, -1, -1, -1, 0, 1])
    inverse = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 3])
    assert voxel_ceiling(gt, inverse, 3).tolist() == [0, 0, 0, 0, 0, 2, 2, 2, -1, 0, 0]
    acc = IoUAccumulator(("wall", "floor", "picture"))
    acc.add(voxel_ceiling(gt, inverse, 3), gt)
    # wall: TP 4, FP 2 (pictures in voxel 0) + 1 (floor in voxel 3); floor: 0; picture: 1/(1+2)
    assert np.allclose(acc.result().iou, [4 / 7, 0.0, 1 / 3])
