"""2D→3D label transfer: projection, occlusion, fusion; round trips on real ScanNet and nuScenes."""

from __future__ import annotations

import numpy as np
import pytest

from preprocess.datasets.nuscenes import read_nuscenes_sample
from preprocess.datasets.scannet import read_scannet_scene
from preprocess.datasets.scene import Scene, View
from shared.render import render
from preprocess.labels.simulated import render_vertex_labels
from preprocess.geometry.projection import project, scale_intrinsic
from preprocess.labels.transfer import fuse, label_size, patch_index, transfer_labels
from shared.schema import PAIRS_POINT, PATCH_FEAT

K = np.array([[100.0, 0, 80], [0, 100.0, 60], [0, 0, 1]])  # a 160 x 120 camera


def test_project_pixels_front_and_bounds():
    pts = np.array([[0, 0, 2.0], [0.5, -0.3, 1.0], [0, 0, -2.0], [5.0, 0, 1.0], [0, 0, 0.0]])
    u, v, vis = project(pts, np.eye(4), K, 160, 120)
    np.testing.assert_array_equal(vis, [True, True, False, False, False])
    assert (u[0], v[0]) == (80, 60) and (u[1], v[1]) == (130, 30)
    # a camera moved 1 m forward sees the first point 1 m away, the second on its plane (dropped)
    T = np.eye(4)
    T[2, 3] = -1.0
    _, _, vis = project(pts, T, K, 160, 120)
    np.testing.assert_array_equal(vis, [True, False, False, False, False])


def test_project_depth_test_uses_its_own_resolution_and_tolerance():
    pts = np.array([[0, 0, 2.0], [0.2, 0, 2.0], [-0.2, 0, 2.0], [0, 0.2, 2.0]])
    depth = np.full((60, 80), 2.02, np.float32)  # half-resolution depth frame
    depth[30, 45] = 3.0  # point 1's depth pixel measures a surface 1 m off: not the point
    depth[30, 35] = 0.0  # point 2's depth pixel has no measurement
    dK = scale_intrinsic(K, (160, 120), (80, 60))
    _, _, vis = project(pts, np.eye(4), K, 160, 120, depth=(depth, dK), tolerance=0.05)
    np.testing.assert_array_equal(vis, [True, False, False, True])
    _, _, vis = project(pts, np.eye(4), K, 160, 120, depth=(depth, dK), tolerance=0.01)
    assert not vis.any()


def test_scale_intrinsic_matches_rendering_at_both_sizes():
    verts = np.array([[-1, -1, 3], [1, -1, 3], [0, 1, 3]], np.float64)
    faces = np.array([[0, 1, 2]], np.int32)
    small = scale_intrinsic(K, (160, 120), (40, 30))
    d_big, _ = render(verts, faces, np.eye(4), K, 160, 120)
    d_small, _ = render(verts, faces, np.eye(4), small, 40, 30)
    # every small pixel centre is inside the triangle iff the matching big pixel block's centre is
    assert abs((d_small > 0).mean() - (d_big > 0).mean()) < 0.03
    assert label_size(1296, 968, 320) == (320, 239)


def test_fuse_score_weighted_vote_counts_and_features():
    # features: a table of (patch) features per view and the row each hit takes from it
    hits = [
        (np.array([0, 1, 2]), np.array([1, 1, 0]), np.array([0.9, 0.2, 0.5]), (np.array([[1.0, 0], [0, 1]]), np.array([0, 0, 1]))),
        (np.array([0, 1]), np.array([2, 2]), np.array([0.3, 0.6]), (np.array([[0.0, 1]]), np.array([0, 0]))),
        (np.array([1, 2]), np.array([-1, 0]), np.array([0.9, 0.5]), (np.array([[5.0, 5], [0, 1]]), np.array([0, 1]))),
    ]
    out = fuse(4, 3, iter(hits))
    np.testing.assert_array_equal(out.label, [1, 2, 0, -1])
    np.testing.assert_array_equal(out.views, [2, 3, 2, 0])  # point 1 is seen, unlabelled, by the third view
    np.testing.assert_allclose(out.score.astype(float), [0.45, 0.3, 0.5, 0.0], atol=1e-3)
    np.testing.assert_allclose(out.feat.astype(float), [[0.5, 0.5], [0.5, 0.5], [0, 1], [0, 0]])
    assert out.label.dtype == np.int16 and out.score.dtype == np.float16 and out.views.dtype == np.uint16
    # zero scores: the number of views decides
    out = fuse(1, 2, [(np.array([0, 0, 0]), np.array([1, 0, 1]), np.zeros(3))])
    assert out.label[0] == 1 and "feat" not in out.as_dict()
    with pytest.raises(ValueError, match="outside"):
        fuse(2, 2, [(np.array([2]), np.array([0]), np.array([1.0]))])
    with pytest.raises(ValueError, match="label 5"):
        fuse(2, 2, [(np.array([1]), np.array([5]), np.array([1.0]))])
    with pytest.raises(ValueError, match="one row in 0..P-1"):
        fuse(2, 2, [(np.array([1]), np.array([0]), np.array([1.0]), (np.zeros((2, 3)), np.array([2])))])


def _two_boxes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A small box in front of a big one (gt 0 and 1), both facing a camera at the origin."""
    import open3d as o3d

    verts, faces, gt = [], [], []
    for k, (size, centre) in enumerate([((0.6, 0.6, 0.6), (0, 0, 2.0)), ((3.0, 2.0, 0.4), (0, 0, 4.0))]):
        box = o3d.geometry.TriangleMesh.create_box(*size).subdivide_midpoint(3)
        v = np.asarray(box.vertices) - np.array(size) / 2 + centre
        faces.append(np.asarray(box.triangles) + sum(len(x) for x in verts))
        verts.append(v)
        gt.append(np.full(len(v), k, np.int16))
    return np.concatenate(verts).astype(np.float32), np.concatenate(faces).astype(np.int32), np.concatenate(gt)


def test_generated_scene_with_depth_frames_matches_mesh_occlusion():
    xyz, faces, gt = _two_boxes()
    # colour camera 320 x 240; depth frames and label maps at 160 x 120 (at equal size, so
    # that silhouette vertices are judged at the label map's resolution)
    cK = scale_intrinsic(K, (160, 120), (320, 240))
    poses = []
    for x in (-0.5, 0.0, 0.5):
        T = np.eye(4)
        T[0, 3] = -x
        poses.append(T)

    def depth_loader(T):
        return lambda: (render(xyz, faces, T, K, 160, 120)[0], K)

    with_depth = [View(f"{i}", T, cK, 320, 240, lambda: None, depth_loader(T)) for i, T in enumerate(poses)]
    mesh_only = [View(f"{i}", T, cK, 320, 240, lambda: None) for i, T in enumerate(poses)]
    maps = []
    for T in poses:
        lab = render_vertex_labels(xyz, faces, gt, T, K, 160, 120)
        maps.append((lab, np.full(lab.shape, 0.8, np.float16), None))
    a = transfer_labels(Scene("d", xyz, np.zeros_like(xyz, np.uint8), faces, gt, views=with_depth), with_depth, maps, 2)
    b = transfer_labels(Scene("m", xyz, np.zeros_like(xyz, np.uint8), faces, gt, views=mesh_only), mesh_only, maps, 2)
    seen = a.label >= 0
    assert 0.2 < seen.mean() < 0.6  # back faces and the big box behind the small one stay unseen
    np.testing.assert_array_equal(a.label[seen], gt[seen])
    np.testing.assert_array_equal(a.label, b.label)
    # the big box's vertices straight behind the small box are never seen
    hidden = (gt == 1) & (np.abs(xyz[:, 0]) < 0.1) & (np.abs(xyz[:, 1]) < 0.1) & (xyz[:, 2] < 4.0)
    assert hidden.any() and not seen[hidden].any()


@pytest.mark.realdata
def test_round_trip_on_real_scannet_scene(scannet_scene0000):
    scene = read_scannet_scene(scannet_scene0000)
    assert len(scene.views) == 3 and all(v.load_depth is None for v in scene.views)
    maps = []
    for view in scene.views:
        w, h = label_size(view.width, view.height, 320)
        Kl = scale_intrinsic(view.intrinsic, (view.width, view.height), (w, h))
        lab = render_vertex_labels(scene.xyz, scene.faces, scene.gt, view.world_to_camera, Kl, w, h)
        maps.append((lab, np.ones(lab.shape, np.float16), None))
    out = transfer_labels(scene, scene.views, maps, 20, tolerance=0.05)
    seen = (out.label >= 0) & (scene.gt >= 0)
    accuracy = (out.label[seen] == scene.gt[seen]).mean()
    print(f"scene0000_00 round trip: {seen.sum()} labelled vertices seen, accuracy {accuracy:.4f}")
    assert seen.sum() > 5000
    assert accuracy >= 0.99


@pytest.mark.realdata
def test_nuscenes_cameras_reach_about_half_the_points(shared_data):
    root = shared_data / "nuscenes"
    if not (root / "v1.0-mini").is_dir():
        pytest.skip("nuScenes sample not found")
    scene = read_nuscenes_sample(root, "v1.0-mini", "scene-0916_000")
    assert len(scene.views) == 6
    maps = []
    for k, view in enumerate(scene.views):
        w, h = label_size(view.width, view.height, 320)
        maps.append((np.full((h, w), k, np.int16), np.ones((h, w), np.float16), None))
    out = transfer_labels(scene, scene.views, maps, 6)
    reached = (out.label >= 0).mean()
    print(f"nuScenes scene-0916_000: {reached:.3f} of {len(scene.xyz)} points reached by the 6 cameras")
    assert 0.35 <= reached <= 0.65
    for k, view in enumerate(scene.views):  # a camera labels only points in front of it
        mine = out.label == k
        T = view.world_to_camera
        z = scene.xyz[mine] @ T[2, :3] + T[2, 3]
        assert mine.any() and (z > 0).all()


def test_pairs_are_the_hits_the_vote_counted():
    """Every (point, labelled pixel) pair, with the pixel's label, score and patch feature: fusing
    the pairs again gives the stored vote, and a point seen in two views that disagree has two
    pairs, one per label."""
    xyz, faces, gt = _two_boxes()
    views, maps = [], []
    rng = np.random.default_rng(0)
    for k, x in enumerate((-0.5, 0.0, 0.5)):
        T = np.eye(4)
        T[0, 3] = -x
        views.append(View(f"{k}", T, K, 160, 120, lambda: None))
        lab = render_vertex_labels(xyz, faces, gt, T, K, 160, 120)
        if k == 1:
            lab = np.where(lab >= 0, 2 - lab, -1).astype(np.int16)  # this view calls the boxes 2 and 1
        if k == 2:
            lab[:, :40] = -1  # a band the labeler left unlabelled
        feats = rng.normal(size=(120 // 16 + 1, 160 // 16, 4)).astype(np.float16)  # a patch grid
        maps.append((lab, rng.uniform(0.2, 1.0, lab.shape).astype(np.float16), feats))
    scene = Scene("p", xyz, np.zeros_like(xyz, np.uint8), faces, gt, views=views)
    fused = transfer_labels(scene, views, maps, 3, keep_pairs=True)
    pairs = fused.pairs
    assert transfer_labels(scene, views, maps, 3).pairs is None
    assert pairs.point.dtype == np.int32 and pairs.view.dtype == np.uint16 and pairs.label.dtype == np.int16
    # one pair per view that labelled a point; `views` also counts the views that saw it unlabelled (view 2's band)
    labelled = np.bincount(pairs.point, minlength=len(xyz))
    assert (pairs.label >= 0).all() and (labelled <= fused.views).all() and (labelled < fused.views).any()
    order = np.lexsort((pairs.point, pairs.view))
    assert np.array_equal(order, np.arange(len(order)))  # by view, then by point
    again = fuse(len(xyz), 3, [(pairs.point[pairs.view == k], pairs.label[pairs.view == k], pairs.score[pairs.view == k],
                                (pairs.patch_feat, pairs.patch[pairs.view == k])) for k in range(3)])
    np.testing.assert_array_equal(again.label, fused.label)
    np.testing.assert_array_equal(again.score, fused.score)
    np.testing.assert_array_equal(again.feat, fused.feat)
    # points both view 0 and view 1 see: one pair each, with the two views' different labels
    both = np.intersect1d(pairs.point[pairs.view == 0], pairs.point[pairs.view == 1])
    assert len(both) > 20
    first, second = (pairs.label[pairs.view == k][np.isin(pairs.point[pairs.view == k], both)] for k in (0, 1))
    np.testing.assert_array_equal(second, 2 - first)
    assert len(pairs.patch_feat) <= 3 * 8 * 10 and len(np.unique(pairs.patch)) == len(pairs.patch_feat)
    stored = fused.as_dict()
    assert stored[PAIRS_POINT] is pairs.point and stored[PATCH_FEAT] is pairs.patch_feat


def test_patch_index_maps_pixels_proportionally():
    u, v = np.array([0, 3, 3, 159]), np.array([0, 1, 119, 60])
    # a 2 x 2 grid over a 4 x 4 image, and a 8 x 10 grid over a 160 x 120 image
    np.testing.assert_array_equal(patch_index((2, 2), u[:2], v[:2], 4, 4), [0, 1])
    np.testing.assert_array_equal(patch_index((8, 10), u[2:], v[2:], 160, 120), [7 * 10 + 0, 4 * 10 + 9])
