"""2D → 3D label transfer: which pixel each point falls on, whether it is seen there, and the
score-weighted vote of all views that see it.

Pixel convention (the one of `preprocess.geometry.render`): pixel column i covers image
coordinates u in [i, i+1), so a point at u lands in column floor(u) and an intrinsic matrix
is rescaled to another image size by multiplying its first two rows by the size ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numba
import numpy as np

from preprocess.datasets.scene import Scene, View
from preprocess.geometry.render import MeshRaycaster

NEAR = 1e-3  # metres; points closer to (or behind) the camera plane than this are dropped


def scale_intrinsic(intrinsic: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """The 3x3 intrinsic of an image of `from_size` (width, height) resized to `to_size`
    (width, height), so that label maps can be made at a smaller size than the camera's."""
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    return np.diag([sx, sy, 1.0]) @ np.asarray(intrinsic, dtype=np.float64)


def label_size(width: int, height: int, label_width: int = 320) -> tuple[int, int]:
    """(width, height) of a label map `label_width` wide with the camera's aspect ratio kept."""
    return int(label_width), max(1, int(round(height * label_width / width)))


def project(
    points: np.ndarray,
    world_to_camera: np.ndarray,
    intrinsic: np.ndarray,
    width: int,
    height: int,
    depth: tuple[np.ndarray, np.ndarray] | None = None,
    tolerance: float = 0.05,
    near: float = NEAR,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel of every point in an image and whether the point is seen there.

    points: (N,3) scene coordinates. world_to_camera: (4,4) scene → OpenCV camera frame.
    intrinsic: (3,3) of the image at `width` x `height` (the label map's size).
    depth: None (no occlusion test: LiDAR) or (depth map f32 metres with 0 = no measurement,
        its (3,3) intrinsic) in the same camera frame, at any resolution; a point is seen only
        where that map has a measurement within `tolerance` metres of the point's own depth.
    near: points with camera z at or below this (behind the camera) are never seen.
    Returns (u, v, visible): int32 column and row (valid where visible) and a bool mask, (N,).
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"project: points must be (N,3), got {points.shape}")
    if depth is None:
        dmap, dK = np.zeros((1, 1), np.float32), np.eye(3)
    else:
        dmap, dK = np.ascontiguousarray(depth[0], dtype=np.float32), depth[1]
        if dmap.ndim != 2:
            raise ValueError(f"project: depth map must be (h,w), got {dmap.shape}")
    u = np.empty(len(points), np.int32)
    v = np.empty(len(points), np.int32)
    visible = np.empty(len(points), np.bool_)
    _project(
        np.ascontiguousarray(points, dtype=points.dtype if points.dtype in (np.float32, np.float64) else np.float64),
        np.asarray(world_to_camera, np.float64),
        np.asarray(intrinsic, np.float64), int(width), int(height), dmap, np.asarray(dK, np.float64),
        depth is not None, float(tolerance), float(near), u, v, visible,
    )
    return u, v, visible


@numba.njit(cache=True, nogil=True)
def _project(points, T, K, width, height, dmap, dK, use_depth, tolerance, near, u_out, v_out, visible):
    """One pass per point: camera frame, pixel, bounds, optional depth test (see `project`)."""
    dh, dw = dmap.shape
    for i in range(points.shape[0]):
        px, py, pz = points[i, 0], points[i, 1], points[i, 2]
        x = T[0, 0] * px + T[0, 1] * py + T[0, 2] * pz + T[0, 3]
        y = T[1, 0] * px + T[1, 1] * py + T[1, 2] * pz + T[1, 3]
        z = T[2, 0] * px + T[2, 1] * py + T[2, 2] * pz + T[2, 3]
        u_out[i] = 0
        v_out[i] = 0
        visible[i] = False
        if z <= near:
            continue
        xn, yn = x / z, y / z
        uf = K[0, 0] * xn + K[0, 1] * yn + K[0, 2]
        vf = K[1, 1] * yn + K[1, 2]
        if not (uf >= 0 and uf < width and vf >= 0 and vf < height):
            continue
        if use_depth:
            du = dK[0, 0] * xn + dK[0, 1] * yn + dK[0, 2]
            dv = dK[1, 1] * yn + dK[1, 2]
            if not (du >= 0 and du < dw and dv >= 0 and dv < dh):
                continue
            d = dmap[int(dv), int(du)]
            if d <= 0 or abs(z - d) > tolerance:
                continue
        u_out[i] = int(uf)
        v_out[i] = int(vf)
        visible[i] = True


@dataclass(frozen=True)
class Fused:
    """Per-point result of fusing all views: label i16 (-1 where no view labelled the point),
    score f16 in [0,1] (the winning class's score-weighted vote divided by the number of views
    that labelled the point), views u16 (how many views saw it, labelled there or not, so that
    a labeler's unlabelled pixels can be told from points no camera saw) and, where features were
    given, their mean f16 (N,D)."""

    label: np.ndarray
    score: np.ndarray
    views: np.ndarray
    feat: np.ndarray | None = None

    def as_dict(self) -> dict[str, np.ndarray]:
        out = {"label": self.label, "score": self.score, "views": self.views}
        if self.feat is not None:
            out["feat"] = self.feat
        return out


@numba.njit(cache=True, nogil=True)
def _add_rows(acc: np.ndarray, index: np.ndarray, rows: np.ndarray) -> None:
    """acc[index[k]] += rows[k] for every k (np.add.at without its slowness)."""
    for k in range(index.shape[0]):
        i = index[k]
        for d in range(acc.shape[1]):
            acc[i, d] += rows[k, d]


def fuse(
    num_points: int,
    num_classes: int,
    hits: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]],
) -> Fused:
    """Score-weighted vote over views.

    num_points: N. num_classes: C (labels outside 0..C-1 are rejected; -1 hits are skipped).
    hits: one entry per view, (point index (M,), label (M,), score (M,)[, feature (M,D) or
        None]) for the points that view sees; a generator keeps only one view in memory.
    Each view adds its score to the (point, label) accumulator (N x C float32); a tiny
    per-view count term breaks ties where every score is zero. Features, where given for
    every view, are averaged over the views that saw the point.
    """
    votes = np.zeros(num_points * num_classes, dtype=np.float32)
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
        views += np.bincount(idx.astype(np.int64), minlength=num_points)
        keep = label >= 0
        idx64 = idx[keep].astype(np.int64)
        key = idx64 * num_classes + label[keep]
        votes += np.bincount(key, weights=score[keep].astype(np.float64) + 1e-6, minlength=len(votes)).astype(np.float32)
        counts += np.bincount(idx64, minlength=num_points)
        if feat is not None:
            feat = np.asarray(feat)[keep]
            if feat_sum is None:
                feat_sum = np.zeros((num_points, feat.shape[1]), dtype=np.float32)
            _add_rows(feat_sum, idx64, np.ascontiguousarray(feat, dtype=np.float32))
            feat_count += np.bincount(idx64, minlength=num_points)
    votes = votes.reshape(num_points, num_classes)
    seen = counts > 0
    label = np.where(seen, votes.argmax(axis=1), -1).astype(np.int16)
    best = votes.max(axis=1) if num_classes else np.zeros(num_points, np.float32)
    score = np.where(seen, np.clip(best / np.maximum(counts, 1), 0.0, 1.0), 0.0).astype(np.float16)
    feat_mean = None
    if feat_sum is not None:
        feat_mean = (feat_sum / np.maximum(feat_count, 1)[:, None]).astype(np.float16)
    return Fused(label, score, np.minimum(views, np.iinfo(np.uint16).max).astype(np.uint16), feat_mean)


def sample_map(values: np.ndarray, u: np.ndarray, v: np.ndarray, width: int, height: int) -> np.ndarray:
    """values[v, u] for pixels (u, v) of a `width` x `height` image, where `values` may be at
    a coarser resolution (e.g. per-patch CLIP features): pixels are mapped proportionally."""
    vh, vw = values.shape[:2]
    if (vw, vh) == (width, height):
        return values[v, u]
    return values[(v.astype(np.int64) * vh) // height, (u.astype(np.int64) * vw) // width]


def view_hits(
    scene: Scene,
    view: View,
    label_map: np.ndarray,
    score_map: np.ndarray,
    feature_map: np.ndarray | None = None,
    tolerance: float = 0.05,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(point index, label, score, feature or None) of the points of `scene` that `view` sees,
    read off label/score maps made at any size with the view's aspect ratio (occlusion: see
    `visible_pixels`).
    """
    h, w = label_map.shape
    if score_map.shape != label_map.shape:
        raise ValueError(f"view {view.name}: score map {score_map.shape} differs from label map {label_map.shape}")
    idx, u, v = visible_pixels(scene, view, w, h, tolerance)
    feat = None if feature_map is None else sample_map(feature_map, u, v, w, h)
    return idx, label_map[v, u], score_map[v, u], feat


def visible_pixels(
    scene: Scene, view: View, width: int, height: int, tolerance: float = 0.05, raycaster: MeshRaycaster | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point index, column, row) of the points of `scene` that `view` sees in a map of
    `width` x `height` with the view's aspect ratio.

    Occlusion: from the view's depth frame where it has one, else from a depth map rendered
    from the scene's mesh at the map's size (with `raycaster`, the scene's mesh built once, when
    given), else (LiDAR) none.
    """
    K = scale_intrinsic(view.intrinsic, (view.width, view.height), (width, height))
    depth = None
    if view.load_depth is not None:
        depth = view.load_depth()
    elif scene.faces is not None:
        rays = raycaster or MeshRaycaster(scene.xyz, scene.faces)
        depth = (rays.render(view.world_to_camera, K, width, height)[0], K)
    u, v, visible = project(scene.xyz, view.world_to_camera, K, width, height, depth=depth, tolerance=tolerance)
    idx = np.flatnonzero(visible)
    return idx, u[idx], v[idx]


def transfer_labels(
    scene: Scene,
    views: list[View],
    maps: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    num_classes: int,
    tolerance: float = 0.05,
) -> Fused:
    """Fuse per-view (label map, score map, feature map or None) of `views` onto the scene's
    points (see `view_hits` for visibility, `fuse` for the vote). `maps` may be a generator."""
    return fuse(
        len(scene.xyz),
        num_classes,
        (view_hits(scene, view, *m, tolerance=tolerance) for view, m in zip(views, maps, strict=True)),
    )
