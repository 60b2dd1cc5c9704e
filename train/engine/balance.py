"""Class balance: weights that let a split's rare classes count (networks trained on the pseudo-
labels score 0 on the rare classes whose labels have 3-30 IoU: issue 22).

- `class_weights`: 1/sqrt(frequency) per class of the training targets, the CE's weights
  (train.class_weights = "inverse-sqrt").
- `voxel_weights`: the same weights per voxel, how likely a voxel is to be a training crop's
  centre (train.crop_centre = "class-balanced").
"""

from __future__ import annotations

import numpy as np

from shared.errors import UserError


def class_weights(counts: np.ndarray) -> np.ndarray:
    """(C,) f64 1/sqrt(frequency) per class, mean 1 over the classes with any count, 0 for the others
    (a class never seen as a target gets no weight; it has no loss term to weigh anyway)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise UserError("class weights: the training targets hold no labelled point; check the pseudo-labels with `python -m preprocess label-quality`")
    weight = np.zeros_like(counts)
    weight[present] = 1.0 / np.sqrt(counts[present] / counts.sum())
    weight[present] /= weight[present].mean()
    return weight


def voxel_weights(labels: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(M,) f64 the weight of each voxel's target class (`labels`, (M,)); a voxel without a target
    (-1, or no class of `weight`) gets the mean weight of the classes present, so unlabelled space
    is neither favoured nor shunned."""
    labels = labels.astype(np.int64)
    known = (labels >= 0) & (labels < len(weight))
    out = np.full(len(labels), weight[weight > 0].mean())
    out[known] = weight[labels[known]]
    return out
