"""Each partition method on a scene's stored arrays, with its [[partitions]] parameters: what
`shared.partitioners.PARTITIONERS[method].run` calls. Returns (segment ids, extra attributes
for the store)."""

from __future__ import annotations

import numpy as np

from preprocess.datasets.scene import Scene, View
from shared.errors import ConfigError
from shared.partitioners import FelzenszwalbParams, MaskParams, SuperpointParams, VCCSParams


def _channel(points: dict[str, np.ndarray], name: str, what: str) -> np.ndarray:
    """A per-point sensor channel the parameters ask for, or one clear error."""
    if name not in points:
        raise ConfigError(
            f"{what} needs the per-point '{name}' channel, which this store's points lack "
            "(nuScenes sweeps have intensity and ring; meshes have neither): choose other parameters"
        )
    return points[name]


def run_felzenszwalb(p: FelzenszwalbParams, points: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    """Meshes: ScanNet's Segmentator on the faces; point clouds: the graph and weights `p` chooses."""
    from preprocess.partition.felzenszwalb import felzenszwalb, felzenszwalb_points

    if "faces" in points and len(points["faces"]):
        return felzenszwalb(points["xyz"], points["faces"], k=p.k, min_verts=p.min_verts), {}
    rings = _channel(points, "ring", f"graph = {p.graph!r}") if p.graph != "knn" else None
    lidar = p.weights == "lidar"
    intensity = _channel(points, "intensity", "intensity_weight > 0") if lidar and p.intensity_weight > 0 else None
    return felzenszwalb_points(
        points["xyz"], points["normal"], k=p.k, min_verts=p.min_verts, knn=0 if p.graph == "rings" else p.knn,
        rings=rings, weights=p.weights, intensity=intensity,
        distance_weight=p.distance_weight, intensity_weight=p.intensity_weight,
    ), {}


def run_vccs(p: VCCSParams, points: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    from preprocess.partition.vccs import vccs

    return vccs(
        points["xyz"], normals=points["normal"], colors=points["rgb"],
        voxel_resolution=p.voxel_resolution, seed_resolution=p.seed_resolution,
        color_importance=p.color_importance, spatial_importance=p.spatial_importance,
        normal_importance=p.normal_importance,
    ), {}


def run_superpoints(p: SuperpointParams, points: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    from preprocess.partition.superpoints import superpoints

    appearance = {}
    if p.appearance == "rgb":
        appearance["colors"] = points["rgb"]
    elif p.appearance == "intensity":
        appearance["intensity"] = _channel(points, "intensity", "appearance = 'intensity'")
    segment, energy = superpoints(
        points["xyz"], k_nn=p.k_nn, k_graph=p.k_graph, reg=p.reg, voxel=p.voxel, return_energy=True, **appearance
    )
    return segment, {"energy": float(energy)}


def run_masks(p: MaskParams, points: dict[str, np.ndarray], views: list[View]) -> tuple[np.ndarray, dict]:
    """The stored points (ingest may have dropped some) seen by the raw scene's views."""
    from preprocess.partition.masks import mask_partition

    scene = Scene("", points["xyz"], points["rgb"], faces=points.get("faces"), views=views)
    return mask_partition(scene, p)
