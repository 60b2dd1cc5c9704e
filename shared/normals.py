"""Per-point unit normals: from mesh faces where there are faces, from k-NN PCA otherwise.

`scan_normals` is the one rule for a scan without normals of its own, so that the network sees
the same normals in training (the ingest stage) as in `python -m train predict`.
"""

from __future__ import annotations

import numpy as np
import open3d as o3d


def mesh_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals of a triangle mesh (unit length; zero for isolated vertices)."""
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(vertices, dtype=np.float64)),
        o3d.utility.Vector3iVector(np.asarray(faces, dtype=np.int32)),
    )
    mesh.compute_vertex_normals(normalized=True)
    normals = np.asarray(mesh.vertex_normals, dtype=np.float32)
    return np.nan_to_num(normals, nan=0.0)


def point_normals(points: np.ndarray, knn: int = 30, viewpoint: np.ndarray | None = None) -> np.ndarray:
    """PCA normals of a point cloud over `knn` neighbours, oriented toward `viewpoint`
    (default: the origin, i.e. the sensor for a LiDAR sweep in its own frame)."""
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(knn=max(3, knn)))
    cloud.orient_normals_towards_camera_location(
        np.zeros(3) if viewpoint is None else np.asarray(viewpoint, dtype=np.float64)
    )
    return np.asarray(cloud.normals, dtype=np.float32)


def scan_normals(xyz: np.ndarray, faces: np.ndarray | None, knn: int, sweep: bool) -> np.ndarray:
    """A scan's normals: from its faces where it is a mesh, else by k-NN PCA oriented toward the
    sensor for a LiDAR sweep in its own frame (the origin), or toward the scan's centre for any
    other point cloud (a room's surfaces face into it, as a reconstructed room's mesh normals do)."""
    if faces is not None and len(faces):
        return mesh_normals(xyz, faces)
    return point_normals(xyz, knn, np.zeros(3) if sweep else np.asarray(xyz).mean(axis=0))
