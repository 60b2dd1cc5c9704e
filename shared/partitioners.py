"""The partition methods a [[partitions]] entry can choose: `PARTITIONERS`, name -> class.

A class carries everything about its method that both programs agree on: its parameter
section (`Params`: the entry's keys, each with its range), the checks across those keys, the
side files it reads (a per-frame mask folder), and `run`, the algorithm on a scene's stored
arrays. `run` imports its implementation from preprocess/ when called: only preprocessing
calls it, so importing this module (as the trainer does, to name the stored outputs) never
loads preprocess/. Config validation, the schema, the stages and the reports ask this dict;
nothing else spells a method's name.

A partition's cache key is its method's name and every key of its `Params`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Callable, ClassVar

from shared.ranges import Count, Metres, NonNegative, OneOf, Positive, Share, one_folder

if TYPE_CHECKING:
    import numpy as np

Fail = Callable[..., None]  # (key below the entry, what is wrong, *other keys it is with) -> raises ConfigError


# --------------------------------------------------------------------------------------------
# Parameter sections (defaults equal the algorithms' own: tests/test_registries.py checks)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FelzenszwalbParams:
    """Meshes (ScanNet) always use the Segmentator's faces and weights: only k and min_verts
    apply. The rest chooses the graph and weights of point clouds without faces (LiDAR)."""

    k: Positive = 0.01
    min_verts: Count = 20
    knn: Count = 10  # k-NN edges per point ("knn" and "rings+knn" graphs)
    graph: Annotated[str, OneOf(("knn", "rings", "rings+knn"))] = "knn"  # "rings": range image from points/ring
    weights: Annotated[str, OneOf(("normal", "lidar"))] = "normal"  # "normal": the Segmentator's; "lidar": tangent-plane offset, gap, intensity
    distance_weight: NonNegative = 0.4  # weights = "lidar": weight of the gap between the points
    intensity_weight: NonNegative = 0.0  # weights = "lidar": weight of the intensity difference / 255


@dataclass(frozen=True)
class VCCSParams:
    voxel_resolution: Metres = 0.02
    seed_resolution: Metres = 0.1
    color_importance: NonNegative = 0.2
    spatial_importance: NonNegative = 0.4
    normal_importance: NonNegative = 1.0


@dataclass(frozen=True)
class SuperpointParams:
    k_nn: Count = 45
    k_graph: Count = 10
    reg: NonNegative = 0.1
    voxel: NonNegative = 0.0  # SPG's voxel pruning before the partition; 0 = use the points as they are
    appearance: Annotated[str, OneOf(("none", "rgb", "intensity"))] = "none"  # features beside the geometric ones


@dataclass(frozen=True)
class MaskParams:
    """Sets from 2D masks projected to 3D and merged across views (preprocess/partition/masks.py)."""

    source: Annotated[str, OneOf(("slic", "precomputed"))] = "slic"  # SLIC superpixels of the colour images | mask files
    folder: str = "masks"  # precomputed: the per-frame mask folder (README: sets from 2D masks)
    n_segments: Count = 150  # SLIC: superpixels per image (CLIP2Scene's 150)
    compactness: Positive = 10.0  # SLIC: colour vs. position trade-off (higher: squarer superpixels)
    width: Count = 320  # SLIC: images are segmented at this width (aspect kept); precomputed masks: their own size
    frame_skip: Count = 10  # views of a video (ScanNet layout): every n-th frame; LiDAR: all cameras
    consistency: Share = 0.5  # a neighbour link holds when >= this share of the views that mask both points agree
    knn: Count = 10  # neighbours per point of the link graph for point clouds (meshes use their edges)
    min_points: Count = 20  # sets smaller than this join their most-linked neighbour set, else become -1
    depth_tolerance: Metres = 0.05  # the occlusion test of the projection (views with depth or a mesh)


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------
class Partitioner:
    """What a partition method is; subclasses fill in `Params`, `algorithms` and `run`."""

    Params: ClassVar[type]
    needs_views: ClassVar[bool] = False  # reads the raw scene's camera views (not only its stored points)

    @classmethod
    def check(cls, params: Any, fail: Fail) -> None:
        """Problems across keys (each key's own range is checked by the loader)."""

    @classmethod
    def channels(cls, params: Any) -> tuple[str, ...]:
        """The per-point sensor channels (beyond xyz, rgb, normal) its parameters read: the
        dataset must have them (`Dataset.channels`), checked when the file loads."""
        return ()

    @classmethod
    def frame_folder(cls, params: Any) -> str | None:
        """The per-frame folder of files another program made that the method reads (its
        fingerprint enters the cache key), or None."""
        return None

    @staticmethod
    def algorithms() -> tuple[Callable, ...]:
        """The functions whose keyword defaults `Params` repeats."""
        raise NotImplementedError

    @staticmethod
    def run(params: Any, points: dict[str, np.ndarray], views: list | None = None) -> tuple[np.ndarray, dict]:
        """Segment ids of a scene's stored points (xyz, rgb, normal[, faces, intensity, ring]) and
        extra attributes for the store; `views`: the raw scene's views where `needs_views`."""
        raise NotImplementedError


class Felzenszwalb(Partitioner):
    """ScanNet's Segmentator on meshes; its merge rule on a neighbour graph of point clouds."""

    Params = FelzenszwalbParams

    @classmethod
    def channels(cls, params: FelzenszwalbParams) -> tuple[str, ...]:
        intensity = params.weights == "lidar" and params.intensity_weight > 0
        return ("ring",) * (params.graph != "knn") + ("intensity",) * intensity

    @staticmethod
    def algorithms() -> tuple[Callable, ...]:
        from preprocess.partition.felzenszwalb import felzenszwalb, felzenszwalb_points

        return felzenszwalb, felzenszwalb_points

    @staticmethod
    def run(params: FelzenszwalbParams, points: dict[str, np.ndarray], views: list | None = None) -> tuple[np.ndarray, dict]:
        from preprocess.partition.run import run_felzenszwalb

        return run_felzenszwalb(params, points)


class VCCS(Partitioner):
    """PCL's voxel cloud connectivity segmentation (supervoxels)."""

    Params = VCCSParams

    @staticmethod
    def algorithms() -> tuple[Callable, ...]:
        from preprocess.partition.vccs import vccs

        return (vccs,)

    @staticmethod
    def run(params: VCCSParams, points: dict[str, np.ndarray], views: list | None = None) -> tuple[np.ndarray, dict]:
        from preprocess.partition.run import run_vccs

        return run_vccs(params, points)


class Superpoints(Partitioner):
    """SPG's geometric superpoints (cut pursuit on local shape features)."""

    Params = SuperpointParams

    @classmethod
    def check(cls, params: SuperpointParams, fail: Fail) -> None:
        if params.k_graph > params.k_nn:
            fail("k_graph", f"= {params.k_graph} must be <= k_nn = {params.k_nn} (the graph's edges are a subset "
                            "of the neighbours the features are computed on)", "k_nn")

    @classmethod
    def channels(cls, params: SuperpointParams) -> tuple[str, ...]:
        return ("intensity",) if params.appearance == "intensity" else ()

    @staticmethod
    def algorithms() -> tuple[Callable, ...]:
        from preprocess.partition.superpoints import superpoints

        return (superpoints,)

    @staticmethod
    def run(params: SuperpointParams, points: dict[str, np.ndarray], views: list | None = None) -> tuple[np.ndarray, dict]:
        from preprocess.partition.run import run_superpoints

        return run_superpoints(params, points)


class Masks(Partitioner):
    """Sets from 2D masks (SLIC superpixels, or mask files another model wrote) merged across views."""

    Params = MaskParams
    needs_views = True

    @classmethod
    def check(cls, params: MaskParams, fail: Fail) -> None:
        if params.source == "precomputed" and not one_folder(params.folder):
            fail("folder", f"= {params.folder!r} must be one folder name (README: sets from 2D masks)", "source")

    @classmethod
    def frame_folder(cls, params: MaskParams) -> str | None:
        return params.folder if params.source == "precomputed" else None

    @staticmethod
    def algorithms() -> tuple[Callable, ...]:
        from preprocess.geometry.graph import neighbour_edges
        from preprocess.partition.masks import merge_votes, slic_masks

        return neighbour_edges, merge_votes, slic_masks

    @staticmethod
    def run(params: MaskParams, points: dict[str, np.ndarray], views: list | None = None) -> tuple[np.ndarray, dict]:
        from preprocess.partition.run import run_masks

        return run_masks(params, points, views or [])


DEFAULT_PARTITION = "felzenszwalb"  # train.partition when a pipeline file names none
PARTITIONERS: dict[str, type[Partitioner]] = {
    "felzenszwalb": Felzenszwalb,
    "vccs": VCCS,
    "superpoints": Superpoints,
    "masks": Masks,
}
