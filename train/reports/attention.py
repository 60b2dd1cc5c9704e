"""Attention maps like the seed's Figure 2: for one query point, its correlation with every
point of the same scene and of another scene, in oblique renders with one colour bar.

The correlation is the one the intra-/inter-scene losses train: softmax over a scene's points of
f_q · f_i / τ with the network's L2-normalised embeddings (HICL's embedding head). It spans
orders of magnitude, so it is shown as log10, red (high) to blue (low), on one scale for both
scenes. Any scans work (`python -m train attention model.pt --scans A B`), or two val scenes of
a pipeline's store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.config import Pipeline
from shared.errors import UserError
from shared.methods import HICL
from shared.scans import Scan
from shared.schema import POINTS, class_names
from shared.viz import colour_values, oblique_camera, render_view, save_figure
from train.engine.dataset import SceneDataset
from train.inference.model import TrainedModel
from train.reports.evaluate import stored_faces

CMAP = "turbo"


def correlation(query: np.ndarray, embeddings: np.ndarray, tau: float) -> np.ndarray:
    """softmax_i(f_q · f_i / τ) over a scene's points."""
    logits = embeddings @ query / tau
    w = np.exp(logits - logits.max())
    return w / w.sum()


def query_point(scan: Scan, query_class: str) -> int:
    """A point of `query_class` (ground truth) nearest the centre of that class's points, else 0."""
    if scan.gt is None or query_class not in scan.gt_classes:
        return 0
    members = np.flatnonzero(scan.gt == scan.gt_classes.index(query_class))
    if not len(members):
        return 0
    centre = scan.xyz[members].mean(axis=0)
    return int(members[np.argmin(np.linalg.norm(scan.xyz[members] - centre, axis=1))])


def attention_figure(model: TrainedModel, scan: Scan, other: Scan, out_png: str | Path, point: int | None = None,
                     query_class: str = "chair", tau: float | None = None) -> Path:
    """Write the two-panel figure; the query is `point`, or a point of `query_class` (see
    `query_point`), drawn black (the points within 15 cm). `tau`: the checkpoint's by default."""
    tau = tau if tau is not None else model.settings[HICL.section]["tau"]
    point = query_point(scan, query_class) if point is None else point
    embeddings = {name: model.embeddings_scan(s) for name, s in (("scene", scan), ("other", other))}
    query = embeddings["scene"][point]
    attention = {name: np.log10(np.maximum(correlation(query, e, tau), 1e-30)) for name, e in embeddings.items()}
    lo, hi = min(float(a.min()) for a in attention.values()), max(float(a.max()) for a in attention.values())
    panels = {}
    for title, name, s in ((f"intra-scene ({scan.name})", "scene", scan), (f"inter-scene ({other.name})", "other", other)):
        colours = colour_values(attention[name], CMAP, lo, hi)
        if name == "scene":
            colours[np.linalg.norm(s.xyz - s.xyz[point], axis=1) < 0.15] = 0
        shown = s.with_normals(model.normal_knn) if s.faces is None else s
        panels[title] = render_view(s.xyz, oblique_camera(s.xyz, 480), s.faces, shown.normal).image(colours)
    label = scan.gt_classes[scan.gt[point]] if scan.gt is not None and scan.gt[point] >= 0 else "unlabelled"
    return save_figure(out_png, panels, colorbar=(CMAP, lo, hi, f"log10 attention softmax(f_q · f_i / τ), τ = {tau:g}, "
                                                                 f"of query point {point} ({label}, black)"))


def store_scans(pipeline: Pipeline, indices: list[int], split: str = "val") -> list[Scan]:
    """Scenes of a split of the pipeline's store as scans (with faces and ground truth)."""
    dataset = SceneDataset(pipeline, split, with_gt=True, fields=(), augment=False)  # read only: no crop
    if max(indices) >= len(dataset):
        raise UserError(f"the {split} split has {len(dataset)} scenes; choose --scene/--other below that")
    scans = []
    for i in indices:
        data = dataset.read(i)
        normal = dataset.store.read(dataset.scenes[i], POINTS, ["normal"])["normal"]
        faces = stored_faces(dataset, i)
        scans.append(Scan(dataset.scenes[i], Path(pipeline.store.path), "points" if faces is None else "mesh", data["xyz"],
                          data["rgb"], normal, faces, data["gt"].astype(np.int64), class_names(pipeline)))
    return scans
