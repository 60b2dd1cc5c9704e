"""Ray-cast a triangle mesh from a camera: depth and the face hit at every pixel.

Used where images must be made from geometry: the generated dataset's depth frames, the
label images of the simulated-CLIP labeler, and depth for occlusion where a scan has none.
open3d's RaycastingScene (Embree) does the work.
"""

from __future__ import annotations

import numpy as np
import open3d as o3d


def render(
    vertices: np.ndarray,
    faces: np.ndarray,
    world_to_camera: np.ndarray,
    intrinsic: np.ndarray,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Depth along the optical axis (float32 metres, 0 where nothing is hit) and the id of the
    face hit (int32, -1 where nothing is hit), both (height, width)."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.ascontiguousarray(vertices, dtype=np.float32)),
        o3d.core.Tensor(np.ascontiguousarray(faces, dtype=np.uint32)),
    )
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        intrinsic_matrix=o3d.core.Tensor(np.asarray(intrinsic, dtype=np.float64)),
        extrinsic_matrix=o3d.core.Tensor(np.asarray(world_to_camera, dtype=np.float64)),
        width_px=int(width),
        height_px=int(height),
    )
    hit = scene.cast_rays(rays)
    t_hit = hit["t_hit"].numpy()
    face = hit["primitive_ids"].numpy().astype(np.int64)
    missed = ~np.isfinite(t_hit)
    # open3d's pinhole rays are unit length; convert the ray distance to z-depth.
    directions = rays.numpy()[..., 3:6]
    camera_z = directions @ np.asarray(world_to_camera, dtype=np.float64)[2, :3]
    depth = np.where(missed, 0.0, t_hit * camera_z).astype(np.float32)
    face = np.where(missed | (face >= len(faces)), -1, face).astype(np.int32)
    return depth, face
