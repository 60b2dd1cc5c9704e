"""The simulated-clip labeler: a model of MaskCLIP, seeded, exact without noise, with statistics
(score AUC, labelled share of ignore-gt points, refinement with unit weights) like real MaskCLIP's
and no oracle: the score is the softmax of the simulated logits and nothing else."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from preprocess.datasets.scene import Scene, View
from preprocess.labels.labelers import SimulatedCLIPLabeler, labels_for_scene, make_labeler, text_embeddings
from preprocess.labels.simulated import (
    apparent_classes,
    confusion_matrix,
    mesh_instances,
    render_vertex_labels,
    scene_model,
    simulate_view,
    softmax,
    view_logits,
)
from preprocess.geometry.projection import scale_intrinsic
from preprocess.labels.transfer import label_size
from shared.text_space import simulated_text_embeddings
from preprocess.partition.felzenszwalb import felzenszwalb
from preprocess.reports import LabelQuality
from shared.classes import SCANNET_NAMES
from shared.config import LabelsConfig, SimulatedCLIPConfig
from shared.refine import refine_labels

CLASS = {n: i for i, n in enumerate(SCANNET_NAMES)}
QUIET = dict(confusion=0.0, instance_noise=0.0, surface_noise=0.0, view_noise=0.0, patch_noise=0.0)  # noise-free


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
    """A 6 x 5 x 3 m room with furniture of 14 ScanNet classes, a lamp outside the benchmark
    classes (ground truth -1) on the table, and cameras looking around it."""
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
        (None, (2.5, 2.3, 0.85), (3.0, 2.7, 1.3)),  # a lamp: not a benchmark class
    ]
    verts, faces, gt = [], [], []
    for name, lo, hi in parts:
        v, f = _box(lo, hi, step)
        faces.append(f + sum(len(x) for x in verts))
        verts.append(v)
        gt.append(np.full(len(v), -1 if name is None else CLASS[name], np.int16))
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


@pytest.fixture(scope="module")
def room() -> Scene:
    return synthetic_room()


def _config(**simulated) -> LabelsConfig:
    return LabelsConfig(frame_skip=1, simulated=SimulatedCLIPConfig(**simulated))


def _surface(scene: Scene, view: View, cfg: SimulatedCLIPConfig, size=(320, 240)) -> tuple[np.ndarray, np.ndarray]:
    """(systematic logits of the surface each pixel shows (H,W,C), vertex id per pixel (H,W))."""
    labeler = SimulatedCLIPLabeler(LabelsConfig(simulated=cfg), SCANNET_NAMES)
    K = scale_intrinsic(view.intrinsic, (view.width, view.height), size)
    shown = render_vertex_labels(scene.xyz, scene.faces, np.arange(len(scene.xyz)), view.world_to_camera, K, *size)
    return labeler.scene_model(scene).logits(np.maximum(shown, 0), cfg.margin), shown


def test_same_seed_same_labels_and_features(room):
    surface, shown = _surface(room, room.views[0], SimulatedCLIPConfig())
    text = simulated_text_embeddings(20, 64, seed=3)
    a = simulate_view(surface, shown >= 0, np.random.default_rng(7), text_embeddings=text)
    b = simulate_view(surface, shown >= 0, np.random.default_rng(7), text_embeddings=text)
    c = simulate_view(surface, shown >= 0, np.random.default_rng(8), text_embeddings=text)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert (a[0] != c[0]).any()
    assert a[2].shape == (15, 20, 64)
    np.testing.assert_allclose(np.linalg.norm(a[2].astype(np.float32), axis=-1), 1.0, atol=2e-3)


def test_score_is_the_softmax_of_the_simulated_logits(room):
    surface, shown = _surface(room, room.views[2], SimulatedCLIPConfig())
    logits, _ = view_logits(surface, shown >= 0, np.random.default_rng(5))
    label, score, _ = simulate_view(surface, shown >= 0, np.random.default_rng(5))
    np.testing.assert_array_equal(label, logits.argmax(axis=-1))
    np.testing.assert_allclose(score.astype(np.float64), softmax(logits).max(axis=-1), atol=1e-3, rtol=1e-3)
    assert (label >= 0).all()  # every pixel gets a class, whatever it shows


def test_zero_noise_reproduces_ground_truth(room):
    out = labels_for_scene(room, _config(patch=1, **QUIET), SCANNET_NAMES)
    seen = out["views"] > 0
    assert seen.mean() > 0.2 and ((out["label"] >= 0) == seen).all()
    benchmark = seen & (room.gt >= 0)
    np.testing.assert_array_equal(out["label"][benchmark], room.gt[benchmark])
    # the lamp (ignore-gt) is labelled too, as the table it stands on
    lamp = seen & (room.gt < 0)
    assert lamp.any() and (out["label"][lamp] == CLASS["table"]).all()


def test_one_objects_confusion_is_the_same_in_every_view(room):
    """Per-pixel logits of every view are the scene's per-vertex logits (patch 1, no view noise):
    a vertex seen by two views gets the same label in both, and (no surface variation) a mistaken
    object reads as the same wrong class wherever it is seen."""
    cfg = SimulatedCLIPConfig(patch=1, patch_noise=0.0, view_noise=0.0, surface_noise=0.0, confusion=0.5)
    labeler = SimulatedCLIPLabeler(LabelsConfig(simulated=cfg), SCANNET_NAMES)
    vertex_label = labeler.scene_model(room).logits(np.arange(len(room.xyz)), cfg.margin).argmax(axis=1)
    objects = mesh_instances(room.xyz, room.faces, room.gt)
    mistaken = [k for k in range(objects.max() + 1) if (room.gt[objects == k] >= 0).all()
                and (vertex_label[objects == k] != room.gt[objects == k]).mean() > 0.5]
    assert mistaken  # half the objects read as a confusable class
    per_view = []
    for view in room.views[:4]:
        w, h = label_size(view.width, view.height, 320)
        label, _, _ = labeler.label_views(room, [view])[0]
        K = scale_intrinsic(view.intrinsic, (view.width, view.height), (w, h))
        shown = render_vertex_labels(room.xyz, room.faces, np.arange(len(room.xyz)), view.world_to_camera, K, w, h)
        np.testing.assert_array_equal(label[shown >= 0], vertex_label[shown[shown >= 0]])
        per_view.append({k: np.bincount(label[(shown >= 0) & (objects[shown] == k)], minlength=20).argmax()
                         for k in mistaken if ((shown >= 0) & (objects[shown] == k)).sum() > 100})
    shared = [k for k in mistaken if sum(k in v for v in per_view) >= 2]
    assert shared
    for k in shared:
        read_as = {v[k] for v in per_view if k in v}
        assert len(read_as) == 1 and room.gt[objects == k][0] not in read_as


def test_features_follow_the_logits():
    """With orthonormal text embeddings and no feature noise a patch feature is the normalised
    softmax of its logits: features change with the logits and rank classes as they do."""
    surface = np.zeros((4, 8, 3))
    surface[:, :4] = [3.0, 1.0, 0.0]
    surface[:, 4:] = [0.0, 1.0, 2.0]
    text = np.eye(3, dtype=np.float32)
    _, patches = view_logits(surface, np.ones((4, 8), bool), np.random.default_rng(0), patch=4, patch_noise=0.5)
    _, _, feature = simulate_view(surface, np.ones((4, 8), bool), np.random.default_rng(0), text, patch=4,
                                  patch_noise=0.5, feature_noise=0.0)
    p = softmax(patches)
    np.testing.assert_allclose(feature.astype(np.float64), p / np.linalg.norm(p, axis=-1, keepdims=True), atol=2e-3)
    assert feature[0, 0].argmax() == 0 and feature[0, 1].argmax() == 2


def test_objects_outside_the_benchmark_look_like_their_surroundings():
    # vertices 0-3: a bed (class 3) and a floor (class 1) vertex; 4-6: a pillow (ignore) on the bed
    xyz = np.array([[0, 0, 0.5], [0.2, 0, 0.5], [0.4, 0, 0.5], [5, 0, 0], [0, 0, 0.6], [0.2, 0, 0.6], [0.4, 0, 0.6]])
    gt = np.array([3, 3, 3, 1, -1, -1, -1])
    objects = np.array([0, 0, 0, 1, 2, 2, 2])
    looks = apparent_classes(xyz, gt, objects, 20, np.random.default_rng(0))
    np.testing.assert_array_equal(looks, [3, 1, 3])


def test_objects_from_annotations_or_connected_regions():
    # two triangles of class 0 sharing an edge, one of class 0 far away, one of class 1 touching
    xyz = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [5, 5, 0], [6, 5, 0], [5, 6, 0],
                    [1.01, 1, 0], [2, 1, 0], [1.01, 2, 0]], float)
    faces = np.array([[0, 1, 2], [1, 3, 2], [4, 5, 6], [7, 8, 9]])
    gt = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    objects = mesh_instances(xyz, faces, gt)
    assert len(set(objects[:4])) == 1 and len(set(objects)) == 3
    # touching parts of one class are one object
    touching = mesh_instances(xyz, faces, np.array([0] * 10), touch=0.02)
    assert len(set(touching[:4]) | set(touching[7:])) == 1
    # annotated instances win where they exist
    annotated = mesh_instances(xyz, faces, gt, np.array([5, 5, 6, 6, -1, -1, -1, -1, -1, -1]))
    assert annotated[0] == annotated[1] != annotated[2] == annotated[3] and annotated[4] not in annotated[:4]


def test_label_quality_statistics_are_maskclip_like(room):
    """The honesty checks of issue 13 on the test room, with the default model: every seen point
    is labelled, ignore-gt ones included; the score carries some but not oracle information about
    correctness; the refinement does as well with unit weights as with the scores."""
    cfg = dataclasses.replace(_config(), store_features=True, simulated=SimulatedCLIPConfig(feature_dim=32))
    out = labels_for_scene(room, cfg, SCANNET_NAMES)
    segment = felzenszwalb(room.xyz, room.faces, k=0.01, min_verts=20)
    quality = LabelQuality(SCANNET_NAMES)
    refined = refine_labels(out["label"], out["score"].astype(np.float32), segment, len(SCANNET_NAMES))
    quality.add(out["label"], out["score"], out["views"], room.gt, refined, segment)
    stats = quality.statistics()
    assert stats["ignore_to_benchmark_ratio"] >= 0.9
    assert 0.5 < stats["score_auc"] < 0.85
    # One small room of boxes is noisier than the 10 generated rooms (there: within a point); the
    # old simulator's score oracle made the gap 9 points on the real scene0000_00.
    assert abs(stats["miou_refined_scores_seen"] - stats["miou_refined_unit_seen"]) <= 0.05
    assert 0.15 <= stats["miou_raw_seen"] <= 0.6
    assert out["feat"].shape == (len(room.xyz), 32) and out["feat"].dtype == np.float16
    # the fused features point towards the text embedding of the fused label more often than not
    text = text_embeddings(cfg, SCANNET_NAMES)
    seen = out["label"] >= 0
    nearest = (out["feat"][seen].astype(np.float32) @ text.T).argmax(axis=1)
    assert (nearest == out["label"][seen]).mean() > 0.5
    again = labels_for_scene(room, cfg, SCANNET_NAMES)
    np.testing.assert_array_equal(again["label"], out["label"])


def test_label_quality_auc_counts_ties_half():
    quality = LabelQuality(("a", "b"))
    label, gt = np.array([0, 0, 0, 0, 1]), np.array([0, 0, 1, 1, 1])
    quality.add(label, np.array([0.9, 0.5, 0.5, 0.2, 0.7]), np.ones(5), gt)
    # correct: 0.9, 0.7, 0.5 (second point and the last); wrong: 0.5, 0.2
    # pairs (correct > wrong): 0.9>0.5, 0.9>0.2, 0.7>0.5, 0.7>0.2, 0.5>0.2, 0.5=0.5 (half) -> 5.5 / 6
    assert quality.score_auc() == pytest.approx(5.5 / 6)
    stats = quality.statistics()
    assert stats["labelled_share_benchmark"] == 1.0 and np.isnan(stats["labelled_share_ignore"])


def test_confusion_table_is_plausible_and_stochastic():
    M = confusion_matrix(SCANNET_NAMES)
    assert M[CLASS["wall"], CLASS["door"]] > 0 and M[CLASS["table"], CLASS["desk"]] > 0
    assert M[CLASS["wall"], CLASS["toilet"]] == 0
    np.testing.assert_allclose(M.sum(axis=1), 1.0)
    assert (np.diag(M) == 0).all()


def test_scene_model_confusion_rate_follows_the_parameter(room):
    """Over many scenes' draws, the share of mistaken objects is `confusion` (no other noise)."""
    objects = mesh_instances(room.xyz, room.faces, room.gt)
    M = confusion_matrix(SCANNET_NAMES)
    mistaken = []
    for seed in range(40):
        cfg = SimulatedCLIPConfig(confusion=0.3, instance_noise=0.0, surface_noise=0.0)
        model = scene_model(room.xyz, room.faces, room.gt, None, M, cfg, np.random.default_rng(seed))
        first = np.array([np.flatnonzero(objects == k)[0] for k in range(objects.max() + 1)])
        logits = model.logits(first, cfg.margin)
        benchmark = room.gt[first] >= 0
        mistaken.append((logits.argmax(axis=1) != room.gt[first])[benchmark])
    assert np.mean(mistaken) == pytest.approx(0.3, abs=0.06)


def test_simulated_labeler_needs_a_labelled_mesh(room):
    labeler = make_labeler(LabelsConfig(), SCANNET_NAMES)
    bare = dataclasses.replace(room, gt=None)
    with pytest.raises(ValueError, match="needs a mesh with per-vertex gt"):
        labeler.label_views(bare, bare.views[:1])
    with pytest.raises(ValueError, match="not one of"):
        make_labeler(LabelsConfig(labeler="sam"), SCANNET_NAMES)


def test_labelling_a_scene_builds_one_ray_casting_structure(room, monkeypatch):
    """Without depth frames the simulated labeler renders each view and the transfer renders it
    again for occlusion: both cast at the scene's one structure (`Scene.raycaster`)."""
    import shared.render as render_module

    built = []

    class Counted(render_module.MeshRaycaster):
        def __init__(self, *args, **kwargs):
            built.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(render_module, "MeshRaycaster", Counted)
    scene = dataclasses.replace(room, views=[dataclasses.replace(v, load_depth=None) for v in room.views])
    out = labels_for_scene(scene, _config(), SCANNET_NAMES)
    assert len(scene.views) > 1 and (out["views"] > 0).mean() > 0.2
    assert len(built) == 1
