"""The simulated-clip labeler: seeded, exact without noise, MaskCLIP-like noise by default."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from preprocess.datasets.scene import Scene, View
from preprocess.labels.labelers import labels_for_scene, make_labeler, text_embeddings
from preprocess.labels.simulated import (
    confusion_matrix,
    render_vertex_labels,
    simulate_view,
    simulated_text_embeddings,
)
from shared.classes import SCANNET_NAMES
from shared.config import LabelsConfig, SimulatedCLIPConfig

CLASS = {n: i for i, n in enumerate(SCANNET_NAMES)}


def _box(lo, hi, step: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Closed axis-aligned box as a triangle mesh with a vertex about every `step` metres."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    verts, faces = [], []
    for axis in range(3):
        a, b = [i for i in range(3) if i != axis]
        na = max(1, int(np.ceil((hi[a] - lo[a]) / step)))
        nb = max(1, int(np.ceil((hi[b] - lo[b]) / step)))
        ga, gb = np.meshgrid(np.linspace(lo[a], hi[a], na + 1), np.linspace(lo[b], hi[b], nb + 1), indexing="ij")
        for side in (lo[axis], hi[axis]):
            v = np.zeros((ga.size, 3))
            v[:, axis], v[:, a], v[:, b] = side, ga.ravel(), gb.ravel()
            i = np.arange(na)[:, None] * (nb + 1) + np.arange(nb)[None, :]
            i = i.ravel()
            q = np.stack([i, i + nb + 1, i + nb + 2, i + 1], axis=1)
            base = sum(len(x) for x in verts)
            faces.append(np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]]) + base)
            verts.append(v)
    return np.concatenate(verts), np.concatenate(faces)


def _look_at(eye, target) -> np.ndarray:
    """world_to_camera (OpenCV axes) of a camera at `eye` looking at `target`, z up."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, np.cross(z, x), z])
    T[:3, 3] = -T[:3, :3] @ eye
    return T


def synthetic_room(num_views: int = 12, step: float = 0.1) -> Scene:
    """A 6 x 5 x 3 m room with furniture of 14 ScanNet classes and cameras looking around it."""
    # Surfaces stay >= 0.1 m apart (furniture floats, wall items stand off the walls) so that no
    # vertex lies on another object's surface, where the depth test could not tell them apart.
    parts = [
        ("floor", (0, 0, -0.1), (6, 5, 0)), ("wall", (-0.2, 0, 0.1), (-0.1, 5, 3)),
        ("wall", (6.1, 0, 0.1), (6.2, 5, 3)), ("wall", (0, -0.2, 0.1), (6, -0.1, 3)),
        ("wall", (0, 5.1, 0.1), (6, 5.2, 3)), ("door", (2, 4.9, 0.2), (3, 5.0, 2.1)),
        ("window", (5.9, 1, 1), (6.0, 3, 2.2)), ("picture", (0, 1.5, 1.2), (0.1, 2.5, 2)),
        ("curtain", (5.8, 3.2, 0.2), (5.9, 4.2, 2.6)), ("table", (2, 2, 0.1), (3.5, 3, 0.75)),
        ("chair", (1.4, 2.2, 0.1), (1.9, 2.7, 0.9)), ("bed", (4, 0.2, 0.1), (5.7, 2.2, 0.6)),
        ("sofa", (0.2, 3.2, 0.1), (1, 4.8, 0.8)), ("cabinet", (0.2, 0.1, 0.1), (1.2, 0.6, 1.0)),
        ("bookshelf", (1.4, 0.1, 0.1), (2.4, 0.4, 2.0)), ("desk", (3.2, 4.1, 0.1), (4.6, 4.8, 0.75)),
        ("otherfurniture", (4.8, 4.2, 0.1), (5.3, 4.8, 1.2)), ("counter", (2.6, 0.1, 0.1), (3.8, 0.6, 0.9)),
    ]
    verts, faces, gt = [], [], []
    for name, lo, hi in parts:
        v, f = _box(lo, hi, step)
        faces.append(f + sum(len(x) for x in verts))
        verts.append(v)
        gt.append(np.full(len(v), CLASS[name], np.int16))
    xyz = np.concatenate(verts).astype(np.float32)
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    angles = np.linspace(0, 2 * np.pi, num_views, endpoint=False)
    views = []
    for k, a in enumerate(angles):
        eye = (3 + 1.2 * np.cos(a), 2.5 + 1.0 * np.sin(a), 1.6)
        target = (3 + 3 * np.cos(a + 2.5), 2.5 + 2.5 * np.sin(a + 2.5), 0.6)
        views.append(View(f"{k:05d}", _look_at(eye, target), K, 640, 480, lambda: np.zeros((480, 640, 3), np.uint8)))
    return Scene("synthetic_room", xyz, np.zeros_like(xyz, np.uint8), np.concatenate(faces).astype(np.int32),
                 np.concatenate(gt), views=views)


def miou(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    """Mean IoU over classes with a non-empty union (the project's convention), -1 dropped."""
    keep = (gt >= 0) & (pred >= 0)
    cm = np.bincount(gt[keep] * num_classes + pred[keep], minlength=num_classes**2).reshape(num_classes, num_classes)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


@pytest.fixture(scope="module")
def room() -> Scene:
    return synthetic_room()


def _gt_image(scene: Scene, view: View, size=(320, 240)) -> np.ndarray:
    K = view.intrinsic * np.array([[size[0] / view.width], [size[1] / view.height], [1.0]])
    return render_vertex_labels(scene.xyz, scene.faces, scene.gt, view.world_to_camera, K, *size)


def test_same_seed_same_labels_and_features(room):
    gt = _gt_image(room, room.views[0])
    M = confusion_matrix(SCANNET_NAMES)
    text = simulated_text_embeddings(20, 64, seed=3)
    a = simulate_view(gt, M, np.random.default_rng(7), text_embeddings=text)
    b = simulate_view(gt, M, np.random.default_rng(7), text_embeddings=text)
    c = simulate_view(gt, M, np.random.default_rng(8), text_embeddings=text)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert (a[0] != c[0]).any()
    assert a[2].shape == (15, 20, 64)
    np.testing.assert_allclose(np.linalg.norm(a[2].astype(np.float32), axis=-1), 1.0, atol=2e-3)


def test_zero_noise_reproduces_ground_truth(room):
    gt = _gt_image(room, room.views[3])
    label, score, _ = simulate_view(gt, confusion_matrix(SCANNET_NAMES), np.random.default_rng(0),
                                    patch=1, confusion=0.0, region_px=64, bleed_px=0, flip_prob=0.0)
    np.testing.assert_array_equal(label, gt)
    assert (score[gt >= 0] >= 0.6 - 1e-3).all() and (score[gt < 0] == 0).all()
    cfg = LabelsConfig(frame_skip=1, simulated=SimulatedCLIPConfig(patch=1, confusion=0.0, bleed_px=0, flip_prob=0.0))
    out = labels_for_scene(room, cfg, SCANNET_NAMES)
    seen = out["label"] >= 0
    assert seen.mean() > 0.2
    np.testing.assert_array_equal(out["label"][seen], room.gt[seen])


def test_noise_lowers_scores_and_follows_confusions(room):
    gt = _gt_image(room, room.views[1])
    M = confusion_matrix(SCANNET_NAMES)
    label, score, _ = simulate_view(gt, M, np.random.default_rng(1), bleed_px=0)
    coarse, coarse_score, _ = simulate_view(gt, M, np.random.default_rng(1), confusion=0.0, flip_prob=0.0, bleed_px=0)
    wrong = (label != coarse) & (coarse >= 0)
    assert wrong.mean() > 0.1
    assert score[wrong].astype(float).mean() < score[~wrong & (coarse >= 0)].astype(float).mean()
    # every swap goes to a class the confusion matrix allows
    assert (M[coarse[wrong], label[wrong]] > 0).all()
    assert M[CLASS["wall"], CLASS["door"]] > 0 and M[CLASS["table"], CLASS["desk"]] > 0
    np.testing.assert_allclose(M.sum(axis=1), 1.0)
    assert (np.diag(M) == 0).all()


def test_default_noise_gives_maskclip_like_fused_miou(room):
    cfg = LabelsConfig(frame_skip=1, store_features=True, simulated=SimulatedCLIPConfig(feature_dim=32))
    out = labels_for_scene(room, cfg, SCANNET_NAMES)
    seen = out["label"] >= 0
    score = miou(out["label"].astype(np.int64), room.gt.astype(np.int64), 20)
    print(f"simulated-clip fused pseudo-label mIoU at defaults: {score:.3f}, seen {seen.mean():.3f}")
    assert 0.25 <= score <= 0.45
    assert out["views"][seen].min() >= 1 and (out["views"][~seen] == 0).all()
    assert out["feat"].shape == (len(room.xyz), 32) and out["feat"].dtype == np.float16
    # the fused features point towards the text embedding of the fused label more often than not
    text = text_embeddings(cfg, SCANNET_NAMES)
    nearest = (out["feat"][seen].astype(np.float32) @ text.T).argmax(axis=1)
    assert (nearest == out["label"][seen]).mean() > 0.5
    again = labels_for_scene(room, cfg, SCANNET_NAMES)
    np.testing.assert_array_equal(again["label"], out["label"])


def test_simulated_labeler_needs_a_labelled_mesh(room):
    labeler = make_labeler(LabelsConfig(), SCANNET_NAMES)
    bare = dataclasses.replace(room, gt=None)
    with pytest.raises(ValueError, match="needs a mesh with per-vertex gt"):
        labeler.label_views(bare, bare.views[:1])
    with pytest.raises(ValueError, match="not one of"):
        make_labeler(LabelsConfig(labeler="sam"), SCANNET_NAMES)
