"""Ray-cast a triangle mesh from cameras: depth and the face hit at every pixel.

Used where images must be made from geometry: the generated dataset's frames, the label
images of the simulated-CLIP labeler, depth for occlusion where a scan has none (preprocess),
and the pictures of predictions and partitions (shared/viz.py).
open3d's RaycastingScene (Embree) does the work; building its BVH is the expensive part, so a
`MeshRaycaster` is built once per mesh and casts any number of cameras.
"""

from __future__ import annotations

import os

import numpy as np
import open3d as o3d


def _threads() -> int:
    """Embree's thread count: OMP_NUM_THREADS where set (Dask workers get 1, so that workers
    sharing a machine do not each start a thread per core), else one per core (0)."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


class MeshRaycaster:
    """A mesh's ray-casting structure, built once."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        self.num_faces = len(faces)
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(
            o3d.core.Tensor(np.ascontiguousarray(vertices, dtype=np.float32)),
            o3d.core.Tensor(np.ascontiguousarray(faces, dtype=np.uint32)),
        )

    def render(
        self, world_to_camera: np.ndarray, intrinsic: np.ndarray, width: int, height: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Depth along the optical axis (float32 metres, 0 where nothing is hit) and the id of
        the face hit (int32, -1 where nothing is hit), (height, width) — or (cameras, height,
        width) when `world_to_camera` is a stack of (4,4) matrices, cast in one call."""
        poses = np.asarray(world_to_camera, dtype=np.float64)
        single = poses.ndim == 2
        poses = poses[None] if single else poses
        K = o3d.core.Tensor(np.asarray(intrinsic, dtype=np.float64))
        rays = np.stack([
            o3d.t.geometry.RaycastingScene.create_rays_pinhole(
                intrinsic_matrix=K, extrinsic_matrix=o3d.core.Tensor(pose),
                width_px=int(width), height_px=int(height),
            ).numpy()
            for pose in poses
        ])
        hit = self.scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)), nthreads=_threads())
        t_hit = hit["t_hit"].numpy()
        face = hit["primitive_ids"].numpy().astype(np.int64)
        missed = ~np.isfinite(t_hit) | (face >= self.num_faces)
        # open3d's pinhole rays are unit length: z-depth = t * (ray direction . optical axis).
        camera_z = poses[:, 2, :3]
        depth = np.where(missed, 0.0, t_hit * np.einsum("chwk,ck->chw", rays[..., 3:6], camera_z))
        depth, face = depth.astype(np.float32), np.where(missed, -1, face).astype(np.int32)
        return (depth[0], face[0]) if single else (depth, face)


def render(
    vertices: np.ndarray,
    faces: np.ndarray,
    world_to_camera: np.ndarray,
    intrinsic: np.ndarray,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One-off `MeshRaycaster(vertices, faces).render(...)`."""
    return MeshRaycaster(vertices, faces).render(world_to_camera, intrinsic, width, height)
