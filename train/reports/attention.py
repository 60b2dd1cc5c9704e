"""Attention maps like the seed's Figure 2: for one query point, its correlation with every
point of the same scene and of another scene, red (high) to blue (low).

The correlation is the one the intra-/inter-scene losses train: softmax over points of
f_q · f_i / τ with the network's L2-normalised embeddings, shown on a per-scene min-max scale.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

from shared.config import Pipeline
from shared.errors import UserError
from shared.schema import class_names
from train.engine.dataset import SceneDataset
from train.engine.loader import make_loader
from train.reports.evaluate import load_model
from shared.viz import render_topdown, save_panels


@torch.no_grad()
def point_embeddings(pipeline: Pipeline, checkpoint: str | Path, scenes: list[int], split: str = "val") -> tuple[SceneDataset, dict[int, np.ndarray]]:
    """Per-point embeddings (N, D) of the chosen scenes of a split, from the HICL embedding head."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dataset = SceneDataset(pipeline, split, with_gt=True, fields=())
    method = load_model(pipeline, checkpoint, dataset, device)
    if "embed" not in method.model.heads:
        raise UserError(f"{checkpoint}: method {pipeline.train.method!r} has no embedding head; attention maps need a hicl model")
    method.model.eval()
    out = {}
    for i, batch in enumerate(make_loader(dataset, batch_size=1, num_workers=0)):
        if i not in scenes:
            continue
        batch = batch.to(device)
        with method.precision.autocast():
            embed = F.normalize(method.model(method.sparse_input(batch))["embed"].float(), dim=1)
        out[i] = embed.cpu().numpy()[batch.inverse[0]]
    return dataset, out


def correlation(query: np.ndarray, embeddings: np.ndarray, tau: float) -> np.ndarray:
    """softmax_i(f_q · f_i / τ) over a scene's points."""
    logits = embeddings @ query / tau
    w = np.exp(logits - logits.max())
    return w / w.sum()


def _colour(values: np.ndarray) -> np.ndarray:
    lo, hi = values.min(), values.max()
    scaled = (values - lo) / max(hi - lo, 1e-12)
    return (matplotlib.colormaps["coolwarm"](scaled)[:, :3] * 255).astype(np.uint8)


def attention_figure(
    pipeline: Pipeline, checkpoint: str | Path, out_png: str | Path, scene: int = 0, other: int = 1,
    point: int | None = None, query_class: str = "chair",
) -> Path:
    """Write the two-panel figure; the query is `point`, or a point of `query_class` (ground
    truth) nearest the scene's centre of that class, or else the scene's first point."""
    dataset, emb = point_embeddings(pipeline, checkpoint, [scene, other])
    if scene not in emb or other not in emb:
        raise UserError(f"the val split has {len(dataset)} scenes; choose --scene/--other below that")
    data = dataset.read(scene)
    names = class_names(pipeline)
    if point is None:
        cls = names.index(query_class) if query_class in names else -1
        members = np.flatnonzero(data["gt"] == cls)
        if len(members):
            centre = data["xyz"][members].mean(axis=0)
            point = int(members[np.argmin(np.linalg.norm(data["xyz"][members] - centre, axis=1))])
        else:
            point = 0
    query = emb[scene][point]
    tau = pipeline.train.hicl.tau
    panels = {}
    for title, i in ((f"intra-scene ({dataset.scenes[scene]})", scene), (f"inter-scene ({dataset.scenes[other]})", other)):
        xyz = dataset.read(i)["xyz"]
        colours = _colour(np.log(correlation(query, emb[i], tau)))
        if i == scene:  # mark the query with a black cross of points
            near = np.linalg.norm(xyz[:, :2] - xyz[point, :2], axis=1) < 0.08
            colours[near] = 0
        panels[title] = render_topdown(xyz, colours)
    label = names[data["gt"][point]] if data["gt"][point] >= 0 else "unlabelled"
    return save_panels(out_png, panels, legend=[f"query point {point} ({label}); red = high correlation, blue = low"])
