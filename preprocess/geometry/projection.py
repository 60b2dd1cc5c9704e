"""Which pixel each point falls on in a camera image, and whether the camera sees it there.

Used by every stage that reads images onto points: label transfer (preprocess/labels/
transfer.py) and the sets from 2D masks (preprocess/partition/masks.py).

Pixel convention (the one of `shared.render`): pixel column i covers image
coordinates u in [i, i+1), so a point at u lands in column floor(u) and an intrinsic matrix
is rescaled to another image size by multiplying its first two rows by the size ratio.
"""

from __future__ import annotations

import numba
import numpy as np

from preprocess.datasets.scene import Scene, View

NEAR = 1e-3  # metres; points closer to (or behind) the camera plane than this are dropped


def scale_intrinsic(intrinsic: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """The 3x3 intrinsic of an image of `from_size` (width, height) resized to `to_size`
    (width, height), so that label maps can be made at a smaller size than the camera's."""
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    return np.diag([sx, sy, 1.0]) @ np.asarray(intrinsic, dtype=np.float64)


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


def visible_pixels(
    scene: Scene, view: View, width: int, height: int, tolerance: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point index, column, row) of the points of `scene` that `view` sees in a map of
    `width` x `height` with the view's aspect ratio.

    Occlusion: from the view's depth frame where it has one, else from a depth map rendered
    from the scene's mesh at the map's size (`Scene.raycaster`, built once per scene), else
    (LiDAR) none.
    """
    K = scale_intrinsic(view.intrinsic, (view.width, view.height), (width, height))
    depth = None
    if view.load_depth is not None:
        depth = view.load_depth()
    elif scene.faces is not None:
        depth = (scene.raycaster.render(view.world_to_camera, K, width, height)[0], K)
    u, v, visible = project(scene.xyz, view.world_to_camera, K, width, height, depth=depth, tolerance=tolerance)
    idx = np.flatnonzero(visible)
    return idx, u[idx], v[idx]
