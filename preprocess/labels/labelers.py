"""The 2D labelers behind one interface, and pseudo-labels of a whole scene.

`labels_for_scene` is what the `labels` pipeline stage calls per scene: label the selected
views, transfer the label maps to the points, fuse them (see `transfer.py`).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Protocol

import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

from preprocess.datasets.scene import Scene, View
from preprocess.labels.checks import teacher_fixes
from preprocess.labels.maskclip import MaskCLIP
from preprocess.labels.precomputed import read_label_maps
from preprocess.labels.simulated import (
    SceneModel,
    confusion_matrix,
    measured_vertices,
    render_vertex_labels,
    scene_model,
    seed_for,
    simulate_view,
)
from preprocess.geometry.projection import scale_intrinsic
from preprocess.labels.transfer import label_size, transfer_labels
from shared.config import LabelsConfig, Pipeline
from shared.errors import ConfigError, pick
from shared.labelers import LABELERS
from shared.text_space import CLIPWeightsError, load_clip, simulated_text_embeddings

LabelMaps = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # label i16, score f16, feature f16 | None


class Labeler(Protocol):
    def label_views(self, scene: Scene, views: list[View]) -> list[LabelMaps]: ...


class SimulatedCLIPLabeler:
    """MaskCLIP-like labels simulated from the scene's ground truth (see `simulated.py`); needs a
    mesh with per-vertex `gt` (and uses its instances where the dataset has them). The scene's
    systematic logits are drawn once, seeded by (seed, scene id), and every view's noise by (seed,
    scene id, view name), so a view gets the same labels whatever else is labelled with it. A view
    with a depth frame shows what its camera measured (`measured_vertices`), one without the
    rendered mesh (`render_vertex_labels`)."""

    def __init__(self, cfg: LabelsConfig, class_names: list[str] | tuple[str, ...]):
        self.cfg = cfg
        self.sim = cfg.simulated
        self.confusions = confusion_matrix(class_names)
        self.text = simulated_text_embeddings(len(class_names), self.sim.feature_dim, self.sim.seed)
        self._scene: tuple[str, SceneModel, cKDTree] | None = None  # the last scene's draws and vertex tree

    def scene_model(self, scene: Scene) -> SceneModel:
        """The scene's systematic draws (objects, confusions, surface field), made once per
        scene, not per batch of views."""
        return self._state(scene)[1]

    def _state(self, scene: Scene) -> tuple[str, SceneModel, cKDTree]:
        if self._scene is None or self._scene[0] != scene.scene_id:
            rng = np.random.default_rng(seed_for(self.sim.seed, scene.scene_id))
            model = scene_model(scene.xyz, scene.faces, scene.gt, scene.instance, self.confusions, self.sim, rng)
            self._scene = (scene.scene_id, model, cKDTree(scene.xyz))
        return self._scene

    def label_views(self, scene: Scene, views: list[View]) -> list[LabelMaps]:
        if scene.faces is None or scene.gt is None:
            raise ConfigError(
                f"scene {scene.scene_id}: the simulated labeler renders ground-truth label images and needs a "
                "mesh with per-vertex gt; choose another labels.labeler for this dataset (README: any 2D model "
                "as the teacher)"
            )
        _, model, vertex_tree = self._state(scene)
        vertex = np.arange(len(scene.xyz), dtype=np.int64)
        out = []
        for view in views:
            w, h = label_size(view.width, view.height, self.cfg.label_width)
            K = scale_intrinsic(view.intrinsic, (view.width, view.height), (w, h))
            if view.load_depth is not None:
                shown = measured_vertices(vertex_tree, view.load_depth(), view.world_to_camera, K, w, h)
            else:
                shown = render_vertex_labels(scene.xyz, scene.faces, vertex, view.world_to_camera, K, w, h, scene.raycaster)
            rng = np.random.default_rng(seed_for(self.sim.seed, scene.scene_id, view.name))
            jitter = self.sim.view_noise * rng.standard_normal(len(model.looks))
            out.append(
                simulate_view(
                    model.logits(np.maximum(shown, 0), self.sim.margin, jitter), shown >= 0, rng,
                    text_embeddings=self.text if self.cfg.store_features else None,
                    patch=self.sim.patch, patch_noise=self.sim.patch_noise, feature_noise=self.sim.feature_noise,
                )
            )
        return out


class MaskCLIPLabeler:
    """MaskCLIP on the views' colour images (weights loaded once per process)."""

    def __init__(self, cfg: LabelsConfig, class_names: list[str] | tuple[str, ...]):
        m = cfg.maskclip
        names = list(m.class_names) or list(class_names)
        if len(names) != len(class_names):
            raise ConfigError(
                f"labels.maskclip.class_names has {len(names)} names but the dataset has {len(class_names)} classes"
            )
        self.cfg = cfg
        model, tokenizer = load_clip(m.model, m.pretrained, m.device)
        self.maskclip = MaskCLIP(model, tokenizer, names, list(m.templates))

    def label_views(self, scene: Scene, views: list[View]) -> list[LabelMaps]:
        width = self.cfg.maskclip.input_width
        images = [_resize(view.load_color(), width) for view in views]
        sizes = [label_size(v.width, v.height, self.cfg.label_width) for v in views]
        return self.maskclip.label_images(
            images, batch_size=self.cfg.maskclip.batch_size, out_sizes=sizes, return_features=self.cfg.store_features
        )


class PrecomputedLabeler:
    """Label maps (and optional scores and features) another 2D model wrote per frame (see
    `precomputed.py` for the layout): any segmenter becomes the teacher, read as files."""

    def __init__(self, cfg: LabelsConfig, class_names: list[str] | tuple[str, ...]):
        self.cfg, self.num_classes = cfg, len(class_names)

    def label_views(self, scene: Scene, views: list[View]) -> list[LabelMaps]:
        return [read_label_maps(view, self.cfg.precomputed, self.num_classes, self.cfg.store_features)
                for view in views]


def _resize(image: np.ndarray, width: int) -> np.ndarray:
    """The image at `width` pixels across (aspect kept): the ViT's cost grows with the square
    of the patch count, and CLIP's patches see objects best near its training scale."""
    if width <= 0 or image.shape[1] == width:
        return image
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


@contextmanager
def teacher_advice(pipeline: Pipeline) -> Iterator[None]:
    """A CLIP-weights failure met while labelling a scene, as a one-line ConfigError naming the
    fixes that fit the dataset (the preflight check cannot see every such failure: a corrupt
    checkpoint, or a worker machine without the weights)."""
    try:
        yield
    except CLIPWeightsError as e:
        raise ConfigError(f"{e}; or {teacher_fixes(pipeline, but=pipeline.labels.labeler)}") from None


def make_labeler(labels_cfg: LabelsConfig, class_names: list[str] | tuple[str, ...]) -> Labeler:
    """The labeler named by `labels_cfg.labeler` for these classes."""
    return pick(LABELERS, labels_cfg.labeler, "labels.labeler").make(labels_cfg, tuple(class_names))


def select_views(scene: Scene, frame_skip: int = 20) -> list[View]:
    """The views to label: every `frame_skip`-th frame of a mesh scene's video (ScanNet);
    all cameras of a LiDAR sweep (nuScenes), which are not a video."""
    if frame_skip < 1:
        raise ConfigError(f"labels.frame_skip must be >= 1, got {frame_skip}")
    return scene.views[::frame_skip] if scene.faces is not None else list(scene.views)


def labels_for_scene(
    scene: Scene,
    labels_cfg: LabelsConfig,
    class_names: list[str] | tuple[str, ...],
    timings: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Pseudo-labels of one scene: {"label" i16 (N,) -1 unseen, "score" f16, "views" u16
    [, "feat" f16 (N,D) when labels.store_features][, the pixel-point pairs (`transfer.Pairs`)
    when labels.store_pairs]}. Views are labelled a batch at a time so memory stays bounded on
    long videos. `timings`, when given, receives "labeler_seconds" (the 2D labeler: a model's
    inference, or the simulation) and "transfer_seconds" (the rest: depth frames, projection,
    fusion), so the two costs can be told apart."""
    start_time = time.perf_counter()
    labeler = make_labeler(labels_cfg, class_names)
    views = select_views(scene, labels_cfg.frame_skip)
    step = LABELERS[labels_cfg.labeler].batch_size(labels_cfg)
    labeler_seconds = time.perf_counter() - start_time  # a model's weights load here

    def maps() -> Iterator[LabelMaps]:
        nonlocal labeler_seconds
        for start in range(0, len(views), step):
            batch_start = time.perf_counter()
            batch = labeler.label_views(scene, views[start : start + step])
            labeler_seconds += time.perf_counter() - batch_start
            yield from batch

    fused = transfer_labels(scene, views, maps(), len(class_names), tolerance=labels_cfg.depth_tolerance,
                            keep_pairs=labels_cfg.store_pairs)
    if timings is not None:
        timings["labeler_seconds"] = labeler_seconds
        timings["transfer_seconds"] = time.perf_counter() - start_time - labeler_seconds
    return fused.as_dict()


def text_embeddings(labels_cfg: LabelsConfig, class_names: list[str] | tuple[str, ...]) -> np.ndarray:
    """(C, D) class embeddings for the trainer's text head, from the labeler `labels_cfg` names
    (CLIP's text tower for MaskCLIP, the fixed random ones of the simulated labeler, the file of
    a precomputed teacher)."""
    return pick(LABELERS, labels_cfg.labeler, "labels.labeler").text_embeddings(labels_cfg, tuple(class_names))
