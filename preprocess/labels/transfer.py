"""2D → 3D label transfer: the label maps read at the pixels the views see each point at
(`preprocess.geometry.projection`), and the score-weighted vote of all views that see it;
optionally every (point, pixel) pair the vote counted, for methods that train on the pairs
themselves (CLIP2Scene).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

import numba
import numpy as np

from preprocess.datasets.scene import Scene, View
from preprocess.geometry.projection import visible_pixels
from shared import schema


def label_size(width: int, height: int, label_width: int = 320) -> tuple[int, int]:
    """(width, height) of a label map `label_width` wide with the camera's aspect ratio kept."""
    return int(label_width), max(1, int(round(height * label_width / width)))


Features = tuple[np.ndarray, np.ndarray]  # (table (P,D), row of the table per hit (M,))


@dataclass(frozen=True)
class Pairs:
    """Every (point, labelled pixel) pair a fusion counted, ordered by view, then by point:
    point i32, view u16 (index into the labelled views), label i16 and score f16 of the pixel,
    (P,) each; where the views had feature maps, patch i32 (P,), the row of patch_feat f16 (R,D)
    holding the pixel's patch feature (only patches some pair points at are kept).
    The store's names for these arrays are shared.schema's PAIRS_* and PATCH_FEAT."""

    point: np.ndarray
    view: np.ndarray
    label: np.ndarray
    score: np.ndarray
    patch: np.ndarray | None = None
    patch_feat: np.ndarray | None = None

    def as_dict(self) -> dict[str, np.ndarray]:
        out = {schema.PAIRS_POINT: self.point, schema.PAIRS_VIEW: self.view,
               schema.PAIRS_LABEL: self.label, schema.PAIRS_SCORE: self.score}
        if self.patch is not None:
            out.update({schema.PAIRS_PATCH: self.patch, schema.PATCH_FEAT: self.patch_feat})
        return out


@dataclass(frozen=True)
class Fused:
    """Per-point result of fusing all views: label i16 (-1 where no view labelled the point),
    score f16 in [0,1] (the winning class's score-weighted vote divided by the number of views
    that labelled the point), views u16 (how many views saw it, labelled there or not, so that
    a labeler's unlabelled pixels can be told from points no camera saw) and, where features were
    given, their mean f16 (N,D), and where asked for, the pairs the vote counted."""

    label: np.ndarray
    score: np.ndarray
    views: np.ndarray
    feat: np.ndarray | None = None
    pairs: Pairs | None = None

    def as_dict(self) -> dict[str, np.ndarray]:
        out = {"label": self.label, "score": self.score, "views": self.views}
        if self.feat is not None:
            out["feat"] = self.feat
        if self.pairs is not None:
            out.update(self.pairs.as_dict())
        return out


@numba.njit(cache=True, nogil=True)
def _add_rows(acc: np.ndarray, count: np.ndarray, index: np.ndarray, table: np.ndarray, rows: np.ndarray,
              label: np.ndarray) -> None:
    """acc[index[k]] += table[rows[k]] and count[index[k]] += 1 for every k with label >= 0
    (np.add.at without its slowness, and without an (M, D) copy of the gathered rows)."""
    for k in range(index.shape[0]):
        if label[k] < 0:
            continue
        a = acc[index[k]]
        t = table[rows[k]]
        for d in range(a.shape[0]):
            a[d] += t[d]
        count[index[k]] += 1


@numba.njit(cache=True, nogil=True)
def _vote(votes: np.ndarray, counts: np.ndarray, views: np.ndarray, idx: np.ndarray, label: np.ndarray,
          score: np.ndarray) -> None:
    """One view's hits: views[i] += 1, and votes[i, label] += score + 1e-6 and counts[i] += 1
    where label >= 0 (O(hits), where a bincount over N x C would cost O(N C) per view)."""
    for k in range(idx.shape[0]):
        views[idx[k]] += 1
        if label[k] >= 0:
            votes[idx[k], label[k]] += np.float32(score[k] + 1e-6)
            counts[idx[k]] += 1


def fuse(
    num_points: int,
    num_classes: int,
    hits: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray, Features | None]],
) -> Fused:
    """Score-weighted vote over views.

    num_points: N. num_classes: C (labels outside 0..C-1 are rejected; -1 hits are skipped).
    hits: one entry per view, (point index (M,), label (M,), score (M,)[, features or None])
        for the points that view sees; features are (table (P,D), row (M,)): hit k's feature
        is table[row[k]] (a view's patch features and the patch each point falls in). A
        generator keeps only one view in memory.
    Each view adds its score to the (point, label) accumulator (N x C float32); a tiny
    per-view count term breaks ties where every score is zero. Features, where given for
    every view, are averaged over the views that saw the point.
    """
    votes = np.zeros((num_points, num_classes), dtype=np.float32)
    counts = np.zeros(num_points, dtype=np.int64)  # views that labelled the point
    views = np.zeros(num_points, dtype=np.int64)  # views that saw it
    feat_sum: np.ndarray | None = None
    feat_count = np.zeros(num_points, dtype=np.int64)
    for hit in hits:
        idx, label, score = (np.asarray(a) for a in hit[:3])
        feat = hit[3] if len(hit) > 3 else None
        if not (idx.shape == label.shape == score.shape) or idx.ndim != 1:
            raise ValueError(f"fuse: point index, label and score must be equal-length 1-D, got {idx.shape}, {label.shape}, {score.shape}")
        if len(idx) and (idx.min() < 0 or idx.max() >= num_points):
            raise ValueError(f"fuse: point index outside 0..{num_points - 1}")
        if len(label) and label.max() >= num_classes:
            raise ValueError(f"fuse: label {int(label.max())} outside 0..{num_classes - 1}")
        idx64, label64 = idx.astype(np.int64), label.astype(np.int64)
        _vote(votes, counts, views, idx64, label64, score.astype(np.float64))
        if feat is not None:
            table, rows = np.ascontiguousarray(feat[0], dtype=np.float32), np.asarray(feat[1])
            if table.ndim != 2 or rows.shape != idx.shape or (len(rows) and not 0 <= rows.min() <= rows.max() < len(table)):
                raise ValueError(f"fuse: features need a (P,D) table and one row in 0..P-1 per hit, got {table.shape}, {rows.shape}")
            if feat_sum is None:
                feat_sum = np.zeros((num_points, table.shape[1]), dtype=np.float32)
            _add_rows(feat_sum, feat_count, idx64, table, rows.astype(np.int64), label64)
    seen = counts > 0
    label = np.where(seen, votes.argmax(axis=1), -1).astype(np.int16)
    best = votes.max(axis=1) if num_classes else np.zeros(num_points, np.float32)
    score = np.where(seen, np.clip(best / np.maximum(counts, 1), 0.0, 1.0), 0.0).astype(np.float16)
    feat_mean = None
    if feat_sum is not None:
        feat_sum /= np.maximum(feat_count, 1)[:, None]  # in place: (N, D) is the largest array here
        feat_mean = feat_sum.astype(np.float16)
    return Fused(label, score, np.minimum(views, np.iinfo(np.uint16).max).astype(np.uint16), feat_mean)


def patch_index(grid: tuple[int, int], u: np.ndarray, v: np.ndarray, width: int, height: int) -> np.ndarray:
    """Row of a (gh, gw) map flattened to gh*gw rows (e.g. per-patch CLIP features) that holds
    pixel (u, v) of a `width` x `height` image: pixels are mapped proportionally."""
    gh, gw = grid
    return ((v.astype(np.int64) * gh) // height) * gw + (u.astype(np.int64) * gw) // width


def view_hits(
    scene: Scene,
    view: View,
    label_map: np.ndarray,
    score_map: np.ndarray,
    feature_map: np.ndarray | None = None,
    tolerance: float = 0.05,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(point index, label, score, patch or None) of the points of `scene` that `view` sees,
    read off label/score maps made at any size with the view's aspect ratio; patch is the row
    of `feature_map` (any (gh, gw, D) grid) flattened to (gh*gw, D) under each point's pixel
    (occlusion: see `visible_pixels`).
    """
    h, w = label_map.shape
    if score_map.shape != label_map.shape:
        raise ValueError(f"view {view.name}: score map {score_map.shape} differs from label map {label_map.shape}")
    idx, u, v = visible_pixels(scene, view, w, h, tolerance)
    patch = None if feature_map is None else patch_index(feature_map.shape[:2], u, v, w, h)
    return idx, label_map[v, u], score_map[v, u], patch


def _view_pairs(view: int, idx: np.ndarray, label: np.ndarray, score: np.ndarray, patch: np.ndarray | None,
                feature_map: np.ndarray | None, first_row: int) -> Pairs:
    """The pairs of one view: its labelled hits (what `fuse` counts), patch rows from `first_row` on."""
    keep = label >= 0
    rows = feats = None
    if patch is not None:
        used, rows = np.unique(patch[keep], return_inverse=True)
        feats = feature_map.reshape(-1, feature_map.shape[-1])[used].astype(np.float16)
        rows = (rows.ravel() + first_row).astype(np.int32)
    return Pairs(idx[keep].astype(np.int32), np.full(int(keep.sum()), view, np.uint16), label[keep].astype(np.int16),
                 score[keep].astype(np.float16), rows, feats)


def _concat_pairs(parts: list[Pairs]) -> Pairs:
    """The views' pairs as one (features only where every view had them)."""
    if not parts:
        return _view_pairs(0, np.zeros(0, np.int64), np.zeros(0, np.int16), np.zeros(0, np.float16), None, None, 0)

    def cat(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        return None if any(a is None for a in arrays) else np.concatenate(arrays)

    return Pairs(*(cat(f.name) for f in dataclasses.fields(Pairs)))


def transfer_labels(
    scene: Scene,
    views: list[View],
    maps: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    num_classes: int,
    tolerance: float = 0.05,
    keep_pairs: bool = False,
) -> Fused:
    """Fuse per-view (label map, score map, feature map or None) of `views` onto the scene's
    points (see `view_hits` for visibility, `fuse` for the vote). `maps` may be a generator.
    keep_pairs: also return every (point, labelled pixel) pair the vote counted (`Pairs`), the
    features as the views' patch rows rather than per pair (a ViT patch covers many pairs)."""
    if keep_pairs and len(views) > np.iinfo(np.uint16).max + 1:
        raise ValueError(f"transfer_labels: {len(views)} views; pairs number views with u16 (raise labels.frame_skip)")
    parts: list[Pairs] = []

    def hits():
        rows = 0
        for k, (view, (label_map, score_map, feature_map)) in enumerate(zip(views, maps, strict=True)):
            idx, label, score, patch = view_hits(scene, view, label_map, score_map, feature_map, tolerance)
            if keep_pairs:
                parts.append(_view_pairs(k, idx, label, score, patch, feature_map, rows))
                rows += 0 if parts[-1].patch_feat is None else len(parts[-1].patch_feat)
            feat = None if feature_map is None else (feature_map.reshape(-1, feature_map.shape[-1]), patch)
            yield idx, label, score, feat

    fused = fuse(len(scene.xyz), num_classes, hits())
    return dataclasses.replace(fused, pairs=_concat_pairs(parts)) if keep_pairs else fused
