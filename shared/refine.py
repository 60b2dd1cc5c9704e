"""Intra-set pseudo-label refinement (method.md §2).

Preprocessing's `refine` stage makes the refined labels (the only producer: the trainer and
the reports read what it stored) and the label-quality report re-votes with unit weights; the
trainer's eval report uses `set_labels` with voxels as the sets (its voxel ceiling). So it lives
in shared/ and needs only NumPy and Numba. Everything is one pass over the points plus per-set tables: O(points + sets × classes)
time and memory, or O(points × D + sets × D) with visual weighting.

Conventions:
- `label` is -1 for unseen points, else a class id in [0, num_classes).
- `segment` is the set id per point in [0, S); -1 means "in no set" and such a point keeps y0.
- Ties between classes with equal vote weight go to the lowest class id (np.argmax), so the
  result never depends on point order.
- A set is refined when its total vote weight is positive and the winner's share >= rho; a set
  whose votes all weigh zero (no seen points, zero scores, or visually unlike votes) keeps y0.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _cosine_to_set_mean(segment: np.ndarray, seen: np.ndarray, features: np.ndarray, num_sets: int) -> np.ndarray:
    """cos(c_i, c̄_g) for every seen point; c̄_g is the mean feature of g's seen points.

    Only seen points carry a CLIP feature, so only they enter the mean. The sum is used in place
    of the mean: cosine ignores the scale.
    """
    n, d = features.shape
    sums = np.zeros((num_sets, d))
    for i in range(n):
        g = segment[i]
        if g >= 0 and seen[i]:
            for k in range(d):
                sums[g, k] += features[i, k]
    set_norm = np.zeros(num_sets)
    for g in range(num_sets):
        acc = 0.0
        for k in range(d):
            acc += sums[g, k] * sums[g, k]
        set_norm[g] = np.sqrt(acc)
    out = np.zeros(n)
    for i in range(n):
        g = segment[i]
        if g < 0 or not seen[i]:
            continue
        dot = 0.0
        sq = 0.0
        for k in range(d):
            dot += features[i, k] * sums[g, k]
            sq += features[i, k] * features[i, k]
        den = np.sqrt(sq) * set_norm[g]
        if den > 0.0:
            out[i] = dot / den
    return out


def set_labels(
    label: np.ndarray,
    score: np.ndarray,
    segment: np.ndarray,
    num_classes: int,
    rho: float = 0.5,
    features: np.ndarray | None = None,
) -> np.ndarray:
    """Refined label per set, i16 (S,) with S = segment.max() + 1; -1 where the set is not refined.

    Vote h_g[c] = Σ_{i∈g, y0_i=c} w_i over seen points, w_i = s0_i, or with `features` (N, D)
    w_i = s0_i · max(0, cos(c_i, c̄_g)) so points visually unlike their set count less.
    The set takes argmax_c h_g[c] (lowest class on ties) when Σ h_g > 0 and
    max h_g / Σ h_g >= rho.
    """
    label = np.asarray(label)
    segment = np.asarray(segment, dtype=np.int64)
    if not (label.shape == segment.shape == np.shape(score)) or label.ndim != 1:
        raise ValueError(f"label, score and segment must be equal-length 1-D arrays, got "
                         f"{label.shape}, {np.shape(score)}, {segment.shape}")
    num_sets = int(segment.max()) + 1 if segment.size else 0
    if num_sets <= 0:
        return np.zeros(0, dtype=np.int16)

    seen = (label >= 0) & (segment >= 0)
    weight = np.asarray(score, dtype=np.float64)
    if features is not None:
        feats = np.ascontiguousarray(features, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[0] != label.shape[0]:
            raise ValueError(f"features must be (N, D) with N = {label.shape[0]}, got {feats.shape}")
        weight = weight * np.maximum(_cosine_to_set_mean(segment, seen, feats, num_sets), 0.0)

    votes = np.bincount(
        segment[seen] * num_classes + label[seen].astype(np.int64),
        weights=weight[seen],
        minlength=num_sets * num_classes,
    ).reshape(num_sets, num_classes)
    winner = votes.argmax(axis=1)  # first maximum = lowest class id on ties
    best = votes[np.arange(num_sets), winner]
    total = votes.sum(axis=1)
    refined = (total > 0) & (best >= rho * total)
    return np.where(refined, winner, -1).astype(np.int16)


def refine_labels(
    label: np.ndarray,
    score: np.ndarray,
    segment: np.ndarray,
    num_classes: int,
    rho: float = 0.5,
    features: np.ndarray | None = None,
) -> np.ndarray:
    """Refined per-point labels ŷ, i16 (N,): every point of a refined set (unseen ones too) takes
    the set's label; points of unrefined sets and points in no set keep y0. See `set_labels`."""
    per_set = set_labels(label, score, segment, num_classes, rho, features)
    segment = np.asarray(segment, dtype=np.int64)
    out = np.asarray(label).astype(np.int16, copy=True)
    in_set = segment >= 0
    target = per_set[segment[in_set]]
    take = target >= 0
    idx = np.flatnonzero(in_set)[take]
    out[idx] = target[take]
    return out
