"""`python -m train query CHECKPOINT SCENE "a red chair" ...`: where in a scan each phrase is.

For a model whose head lives in a text space, every point's score against the phrase's text
embedding is the head's logit for it (the scaled cosine of the projected feature and the
phrase for a text head, their dot product for CLIP2Scene's). Writes per phrase a PLY with the
score as a `similarity` vertex property and colours on one scale, and a PNG: the scan, then one
oblique render per phrase with a colour bar.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from shared.ply import write_ply
from shared.scans import read_scan
from shared.viz import colour_values, oblique_camera, render_view, save_figure
from train.inference.model import TrainedModel

CMAP = "viridis"


def slug(phrase: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", phrase.lower()).strip("-") or "query"


def query_scene(model: TrainedModel, scene: str | Path, phrases: list[str], out: str | Path, tta: int = 1,
                clip_weights: str = "", width: int = 480) -> list[Path]:
    """Score every point of `scene` against each phrase; returns the files written."""
    out = Path(out)
    scan = read_scan(scene)
    scores = model.similarity_scan(scan, model.embed(list(phrases), clip_weights), tta)
    lo, hi = float(scores.min()), float(scores.max())
    written = []
    for k, phrase in enumerate(phrases):
        colours = colour_values(scores[:, k], CMAP, lo, hi)
        written.append(write_ply(out / f"{scan.name}_{slug(phrase)}.ply", scan.xyz, colours, scan.faces,
                                 similarity=scores[:, k].astype(np.float32)))
    shown = scan.with_normals(model.normal_knn) if scan.faces is None and scan.kind != "sweep" else scan
    view = render_view(shown.xyz, oblique_camera(shown.xyz, width), shown.faces, shown.normal)
    panels = {}
    if scan.rgb is not None:
        panels[scan.name] = view.image(scan.rgb, smooth=True)
    for k, phrase in enumerate(phrases):
        panels[f'"{phrase}"'] = view.image(colour_values(scores[:, k], CMAP, lo, hi))
    label = f"score (the head's logit: {model.head.score})" if model.text_space else "score"
    written.append(save_figure(out / f"{scan.name}_query.png", panels, colorbar=(CMAP, lo, hi, label),
                               columns=min(len(panels), 3)))
    return written
