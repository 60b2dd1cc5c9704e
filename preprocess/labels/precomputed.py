"""Any 2D model as the teacher: per-frame label maps (and optional confidence and feature maps)
that another program wrote, read in the layout the README documents.

Per view, in its per-frame folder (`View.frame_file`: ScanNet layout `<scene>/<folder>/<frame>`,
nuScenes `<root>/<folder>/<CAM>/<image stem>`):
    <frame>.png        8- or 16-bit class ids in the pipeline's class order; `ignore` values = no label
    <frame>.score.png  (with labels.precomputed.scores) 8- or 16-bit confidence, 0..255 or 0..65535 -> [0, 1]
    <frame>.feat.npy   (with labels.store_features) (h', w', D) float features, any h' x w' of the same aspect
The label map may have any size with the camera's aspect ratio and is used at that size (see
`preprocess.io.frames`); the score map must have the label map's size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from preprocess.datasets.scene import View
from preprocess.io.frames import check_aspect, read_id_png, read_npy
from shared.config import PrecomputedConfig
from shared.errors import DatasetError

FIX = "write it with your 2D model (README: any 2D model as the teacher)"


def read_label_maps(
    view: View, cfg: PrecomputedConfig, num_classes: int, features: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(label i16 (h, w) -1 = none, score f16 (h, w), feature f16 (h', w', D) or None) of a view."""
    path = view.frame_file(cfg.folder, ".png")
    raw = read_id_png(path, "label map", FIX).astype(np.int64)
    check_aspect(path, raw.shape, view)
    none = np.isin(raw, cfg.ignore)
    bad = ~none & (raw >= num_classes)
    if bad.any():
        raise DatasetError(
            f"{path}: holds class id {int(raw[bad].max())}, but the pipeline has {num_classes} classes (ids 0.."
            f"{num_classes - 1} in its class order) and no-label values {cfg.ignore}; map your model's classes to "
            "the pipeline's, or list the value in labels.precomputed.ignore"
        )
    label = np.where(none, -1, raw).astype(np.int16)
    score = np.ones(raw.shape, np.float16)
    if cfg.scores:
        score_path = view.frame_file(cfg.folder, ".score.png")
        raw_score = read_id_png(score_path, "score map (labels.precomputed.scores = true)", FIX)
        if raw_score.shape != raw.shape:
            raise DatasetError(f"{score_path}: {raw_score.shape[1]}x{raw_score.shape[0]} differs from its label map's "
                               f"{raw.shape[1]}x{raw.shape[0]}; write both at one size")
        score = (raw_score / (255.0 if raw_score.dtype == np.uint8 else 65535.0)).astype(np.float16)
    feat = None
    if features:
        feat_path = view.frame_file(cfg.folder, ".feat.npy")
        feat = read_npy(feat_path, "feature map (labels.store_features = true)", FIX, ndim=3)
        check_aspect(feat_path, feat.shape, view)
        feat = feat.astype(np.float16)
    return label, score, feat


def read_text_embeddings(path: str | Path, num_classes: int) -> np.ndarray:
    """(C, D) float32 class embeddings from a .npy file, one row per class in the pipeline's order."""
    path = Path(path)
    emb = read_npy(path, "text embeddings (labels.precomputed.text_embeddings)",
                   "save your 2D model's class embeddings as a (classes, D) array with numpy.save", ndim=2)
    if emb.shape[0] != num_classes:
        raise DatasetError(f"{path}: {emb.shape[0]} rows, but the pipeline has {num_classes} classes; "
                           "write one row per class in the pipeline's class order")
    return emb.astype(np.float32)
