"""Evaluation pieces: exact IoU, mAcc and allAcc with an n/a class, voxel→point mapping, reports,
the ray-cast renders and figures, PLY."""

from __future__ import annotations

import json

import numpy as np
from plyfile import PlyData

from shared.metrics import IoUAccumulator
from train.engine.transforms import voxelize
from train.reports.evaluate import voxel_ceiling
from shared.ply import write_ply
from shared.classes import SCANNET
from shared.viz import (BACKGROUND, Camera, colour_labels, correct_wrong, distinct_palette, oblique_camera,
                        palette_for, render_view, save_figure)
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


def test_pointcept_accuracies_with_an_absent_class():
    pred, gt = hand_made()
    acc = IoUAccumulator(NAMES)
    acc.add(np.r_[pred, -1], np.r_[gt, 2])  # one chair point left unlabelled: a miss of its class
    r = acc.result()
    # wall 6/8, floor 5/6, chair 3/5 (the unlabelled one counts); sofa has no point: n/a
    assert np.allclose(r.acc[:3], [6 / 8, 5 / 6, 3 / 5]) and np.isnan(r.acc[3])
    assert np.isclose(r.macc, np.mean([6 / 8, 5 / 6, 3 / 5])) and np.isclose(r.all_acc, 14 / 19)
    assert r.as_dict()["mAcc"] == round(100 * r.macc, 2) and r.as_dict()["allAcc"] == round(100 * 14 / 19, 2)


def square(z: float, up: bool) -> tuple[np.ndarray, np.ndarray]:
    """A 2 m square at height z, its triangles facing up (or down)."""
    xyz = np.array([[-1, -1, z], [1, -1, z], [1, 1, z], [-1, 1, z]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [0, 2, 3]]) if up else np.array([[0, 2, 1], [0, 3, 2]])
    return xyz, faces


def looking_down(size: int = 40) -> Camera:
    """A camera 5 m above the origin looking straight down (image x = world x, image y = -world y)."""
    pose = np.eye(4)
    pose[:3, :3] = [[1, 0, 0], [0, -1, 0], [0, 0, -1]]
    pose[:3, 3] = [0, 0, 5]
    K = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], dtype=np.float64)
    return Camera(pose, K, size, size)


def test_ray_cast_render_sees_the_nearest_face_and_culls_back_faces():
    top, top_faces = square(1.0, up=True)
    low, low_faces = square(0.0, up=True)
    xyz, faces = np.r_[top, low], np.r_[top_faces, low_faces + 4]
    camera = looking_down()
    view = render_view(xyz, camera, faces)
    centre = view.index[20, 20]
    assert centre in range(4) and view.shade[20, 20] > 0.99  # the upper square, faced head-on
    assert view.index[0, 0] == -1  # outside both squares: background
    colours = np.array([[200, 0, 0]] * 4 + [[0, 0, 200]] * 4, dtype=np.uint8)
    image = view.image(colours)
    assert image[20, 20].tolist() == [200, 0, 0] and (image[0, 0] == BACKGROUND).all()
    flipped = render_view(np.r_[square(1.0, up=False)[0], low], camera, np.r_[square(1.0, up=False)[1], low_faces + 4])
    assert flipped.index[20, 20] >= 4  # the upper square faces away: culled, the lower one shows
    assert render_view(np.r_[square(1.0, up=False)[0], low], camera, np.r_[square(1.0, up=False)[1], low_faces + 4],
                       cull=False).index[20, 20] in range(4)


def test_points_render_as_splats_facing_the_camera():
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 21), np.linspace(-1, 1, 21)), -1).reshape(-1, 2)
    xyz = np.c_[grid, np.zeros(len(grid))]
    camera = looking_down(200)  # 40 px per metre at the grid: points 4 px apart, splats 10 px
    view = render_view(xyz, camera)
    assert (view.index[65:135, 65:135] >= 0).all()  # the splats close the surface: no holes
    v, u = np.mgrid[:200, :200] + 0.5
    seen = view.index >= 0
    where = np.c_[(u[seen] - 100) / 40, -(v[seen] - 100) / 40]  # the world x, y each pixel shows
    assert np.abs(xyz[view.index[seen], :2] - where).max() <= 0.125 + 1 / 40  # inside the point's square
    turned = render_view(xyz, camera, normals=np.tile([0.0, 0.0, -1.0], (len(xyz), 1)))
    assert (turned.index == -1).all()  # normals facing away: culled


def test_oblique_camera_frames_the_scan():
    rng = np.random.default_rng(0)
    xyz = rng.uniform([0, 0, 0], [6, 4, 3], (5000, 3))
    camera = oblique_camera(xyz, width=300)
    cam = (xyz - camera.position) @ camera.world_to_camera[:3, :3].T
    uv = cam[:, :2] / cam[:, 2:] @ camera.intrinsic[:2, :2].T + camera.intrinsic[:2, 2]
    assert (cam[:, 2] > 0).all() and uv[:, 0].min() >= 0 and uv[:, 0].max() <= 300
    assert uv[:, 1].min() >= 0 and uv[:, 1].max() <= camera.height and np.ptp(uv[:, 0]) > 0.9 * 300


def test_colours_keep_benchmark_palettes_and_mark_mistakes():
    assert colour_labels(np.array([0, 1, 19, -1]), SCANNET.palette).tolist() == [
        [174, 199, 232], [152, 223, 138], [82, 84, 163], [128, 128, 128]]
    chosen = palette_for(("chair", "lamp", "wall"), SCANNET.names, SCANNET.palette)
    assert chosen[0].tolist() == [188, 189, 34] and chosen[2].tolist() == [174, 199, 232]
    assert not (SCANNET.palette == chosen[1]).all(axis=1).any()  # a new name gets a colour of its own
    assert len(np.unique(distinct_palette(12), axis=0)) == 12
    marks = correct_wrong(np.array([1, 2, 3]), np.array([1, 0, -1]))
    assert marks.tolist() == [[200, 200, 200], [215, 50, 40], [128, 128, 128]]


def test_figure_is_a_small_png_with_exact_legend_colours(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    panels = {name: rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for name in ("a", "b", "c")}
    legend = [("wall", SCANNET.palette[0]), ("chair", SCANNET.palette[4])]
    path = save_figure(tmp_path / "f.png", panels, legend, title="t")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert image.width == 3 * 160 + 2 * 6
    for colour in legend:
        assert (pixels == colour[1]).all(axis=1).any(), colour


def test_binary_ply_round_trip(tmp_path):
    xyz = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    label = (np.arange(50) % 5 - 1).astype(np.int32)
    path = write_ply(tmp_path / "p.ply", xyz, colour_labels(label, distinct_palette(4)), label=label)
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
