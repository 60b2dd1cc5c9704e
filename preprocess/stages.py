"""The preprocessing stages, one function per (stage, scene).

Each stage computes its content-addressed key first and returns at once when the store
already holds a complete output under that key, so re-running a pipeline, or running an
ablation that changes one parameter, recomputes only what depends on the change. Stage
functions run inside Dask workers: they receive the (picklable) pipeline and a scene id,
read raw data and the store themselves, and write their own results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from preprocess.datasets.registry import read_scene, scene_files
from preprocess.datasets.scene import DatasetError, Scene
from preprocess.geometry.normals import mesh_normals, point_normals
from shared.classes import class_table
from shared.config import ConfigError, PartitionConfig, Pipeline, params_dict
from shared.refine import refine_labels
from shared.store import POINTS, Store, stage_key

try:
    CODE_VERSION = metadata.version("hicl3d")
except metadata.PackageNotFoundError:  # running from a checkout that was not installed
    CODE_VERSION = "dev"

# Errors that mean "this scene's input is bad": reported per scene, not retried.
INPUT_ERRORS = (DatasetError, ConfigError, FileNotFoundError, ValueError)


@dataclass(frozen=True)
class StageResult:
    """What a stage did for one scene; the driver prints and counts these."""

    stage: str
    scene: str
    group: str = ""
    key: str = ""
    computed: bool = False  # False: the store already had it (cache hit)
    seconds: float = 0.0
    info: dict = dataclasses.field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def _guard(stage: str) -> Callable:
    """Turn input errors into a failed StageResult (no Dask retry); crashes still raise."""

    def wrap(fn):
        def run(pipeline: Pipeline, scene_id: str, *upstream: StageResult, **kw) -> StageResult:
            failed = [u for u in upstream if isinstance(u, StageResult) and not u.ok]
            if failed:
                return StageResult(stage, scene_id, error=f"skipped: {failed[0].stage} failed")
            try:
                return fn(pipeline, scene_id, *upstream, **kw)
            except INPUT_ERRORS as e:
                return StageResult(stage, scene_id, error=f"{type(e).__name__}: {e}")
            except Exception:
                # Not a data problem: keep the traceback so it can be fixed.
                return StageResult(stage, scene_id, error=traceback.format_exc(limit=6))

        run.__name__ = fn.__name__
        return run

    return wrap


# ------------------------------------------------------------------------------ ingest
def _source_fingerprint(pipeline: Pipeline, scene_id: str) -> str:
    """Names and sizes of the scene's raw files: cheap, and unchanged by copying."""
    entries = sorted((p.name, p.stat().st_size if p.is_file() else -1) for p in scene_files(pipeline.dataset, scene_id))
    return hashlib.sha256(repr((pipeline.dataset.name, pipeline.dataset.version, scene_id, entries)).encode()).hexdigest()[:16]


def ingest_key(pipeline: Pipeline, scene_id: str) -> str:
    params = {"dataset": pipeline.dataset.name, **params_dict(pipeline.ingest)}
    return stage_key("ingest", params, [_source_fingerprint(pipeline, scene_id)])


def scene_arrays(scene: Scene, normal_knn: int) -> dict[str, np.ndarray]:
    """The store's `points` arrays of a scene (normals computed here)."""
    if scene.faces is not None and len(scene.faces):
        normal = mesh_normals(scene.xyz, scene.faces)
    else:
        normal = point_normals(scene.xyz, knn=normal_knn)
    arrays = {
        "xyz": scene.xyz.astype(np.float32),
        "rgb": scene.rgb.astype(np.uint8),
        "normal": normal.astype(np.float32),
    }
    if scene.faces is not None:
        arrays["faces"] = scene.faces.astype(np.int32)
    if scene.gt is not None:
        arrays["gt"] = scene.gt.astype(np.int16)
    if scene.instance is not None:
        arrays["instance"] = scene.instance.astype(np.int32)
    for name, value in scene.meta.items():  # per-point sensor channels (LiDAR intensity, ring)
        if isinstance(value, np.ndarray) and value.shape[:1] == (len(scene.xyz),) and name not in arrays:
            arrays[name] = value
    return arrays


def _small_meta(scene: Scene) -> dict:
    """Scene metadata for the store's attributes, without per-point arrays."""
    n = len(scene.xyz)
    return {k: v for k, v in scene.meta.items() if not (isinstance(v, np.ndarray) and v.shape[:1] == (n,))}


@_guard("ingest")
def ingest(pipeline: Pipeline, scene_id: str) -> StageResult:
    store = Store(pipeline.store.path)
    key = ingest_key(pipeline, scene_id)
    if store.is_complete(scene_id, POINTS, key):
        return StageResult("ingest", scene_id, POINTS, key, info=_points_info(store, scene_id))
    start = time.perf_counter()
    scene = read_scene(pipeline.dataset, scene_id, load_views=False)
    if pipeline.ingest.max_range > 0:
        keep = np.linalg.norm(scene.xyz, axis=1) <= pipeline.ingest.max_range
        scene = dataclasses.replace(
            scene,
            xyz=scene.xyz[keep], rgb=scene.rgb[keep],
            gt=None if scene.gt is None else scene.gt[keep],
            instance=None if scene.instance is None else scene.instance[keep],
        )
    arrays = scene_arrays(scene, pipeline.ingest.normal_knn)
    seconds = time.perf_counter() - start
    attrs = {
        "key": key, "stage": "ingest", "dataset": pipeline.dataset.name, "scene": scene_id,
        "num_points": len(scene.xyz), "num_faces": 0 if scene.faces is None else len(scene.faces),
        "has_gt": scene.gt is not None, "seconds": seconds, "code_version": CODE_VERSION,
        "meta": _small_meta(scene),
    }
    # Points of an older key go (dependents key on the new one); points of this key finished
    # meanwhile by a concurrent run stay, since its dependents may be reading them.
    if store.is_complete(scene_id, POINTS) and not store.is_complete(scene_id, POINTS, key):
        store.remove(scene_id, POINTS)
    store.write(scene_id, POINTS, arrays, attrs)
    return StageResult("ingest", scene_id, POINTS, key, True, seconds, _points_info(store, scene_id))


def _points_info(store: Store, scene_id: str) -> dict:
    attrs = store.attrs(scene_id, POINTS)
    return {"num_points": attrs["num_points"], "seconds": attrs["seconds"]}


# -------------------------------------------------------------------------- partitions
def partition_group(partition: PartitionConfig, points_key: str) -> tuple[str, str, dict]:
    params = {"method": partition.method, **params_dict(partition.params)}
    key = stage_key("partitions", params, [points_key])
    return f"partitions/{partition.method}-{key}", key, params


def compute_partition(partition: PartitionConfig, points: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    """Run one partition method on a scene's stored points; returns (segment ids, extra attrs)."""
    p = partition.params
    xyz = points["xyz"]
    if partition.method == "felzenszwalb":
        from preprocess.partition.felzenszwalb import felzenszwalb, felzenszwalb_points

        if "faces" in points and len(points["faces"]):
            return felzenszwalb(xyz, points["faces"], k=p.k, min_verts=p.min_verts), {}
        return felzenszwalb_points(xyz, points["normal"], k=p.k, min_verts=p.min_verts, knn=p.knn), {}
    if partition.method == "vccs":
        from preprocess.partition.vccs import vccs

        return vccs(
            xyz, normals=points["normal"], colors=points["rgb"],
            voxel_resolution=p.voxel_resolution, seed_resolution=p.seed_resolution,
            color_importance=p.color_importance, spatial_importance=p.spatial_importance,
            normal_importance=p.normal_importance,
        ), {}
    if partition.method == "superpoints":
        from preprocess.partition.superpoints import superpoints

        segment, energy = superpoints(xyz, k_nn=p.k_nn, k_graph=p.k_graph, reg=p.reg, voxel=p.voxel, return_energy=True)
        return segment, {"energy": float(energy)}
    raise ConfigError(f"unknown partition method {partition.method!r}")


@_guard("partitions")
def partitions(pipeline: Pipeline, scene_id: str, ingested: StageResult, partition: PartitionConfig) -> StageResult:
    store = Store(pipeline.store.path)
    group, key, params = partition_group(partition, ingested.key)
    if store.is_complete(scene_id, group, key):
        return StageResult("partitions", scene_id, group, key, info=_segment_info(store, scene_id, group))
    points = store.read(scene_id, POINTS, [n for n in ("xyz", "rgb", "normal", "faces") if _has(store, scene_id, n)])
    start = time.perf_counter()
    segment, extra = compute_partition(partition, points)
    seconds = time.perf_counter() - start
    attrs = {
        "key": key, "stage": "partitions", "method": partition.method,
        "params": params, "inputs": [ingested.key], "segments": int(segment.max()) + 1 if len(segment) else 0,
        "seconds": seconds, "code_version": CODE_VERSION, **extra,
    }
    store.write(scene_id, group, {"segment": segment.astype(np.int32)}, attrs)
    return StageResult("partitions", scene_id, group, key, True, seconds, _segment_info(store, scene_id, group))


def _has(store: Store, scene_id: str, name: str) -> bool:
    return (store.path / scene_id / POINTS / name / "zarr.json").is_file()


def _segment_info(store: Store, scene_id: str, group: str) -> dict:
    attrs = store.attrs(scene_id, group)
    return {"segments": attrs["segments"], "seconds": attrs["seconds"], "method": attrs["method"]}


# ------------------------------------------------------------------------------ labels
def labels_params(pipeline: Pipeline) -> dict[str, Any]:
    """The parameters a pseudo-label result depends on (only the chosen labeler's own)."""
    cfg = pipeline.labels
    sub = cfg.maskclip if cfg.labeler == "maskclip" else cfg.simulated
    return {
        "labeler": cfg.labeler, "frame_skip": cfg.frame_skip, "label_width": cfg.label_width,
        "depth_tolerance": cfg.depth_tolerance, "store_features": cfg.store_features,
        "labeler_params": params_dict(sub), "classes": list(class_names(pipeline)),
    }


def class_names(pipeline: Pipeline) -> tuple[str, ...]:
    names = pipeline.labels.maskclip.class_names
    return tuple(names) if names else class_table(pipeline.dataset.name).names


def labels_group(pipeline: Pipeline, points_key: str) -> tuple[str, str, dict]:
    params = labels_params(pipeline)
    key = stage_key("labels", params, [points_key])
    return f"pseudo/{pipeline.labels.labeler}-{key}", key, params


@_guard("labels")
def labels(pipeline: Pipeline, scene_id: str, ingested: StageResult) -> StageResult:
    from preprocess.labels.labelers import labels_for_scene

    store = Store(pipeline.store.path)
    group, key, params = labels_group(pipeline, ingested.key)
    if store.is_complete(scene_id, group, key):
        return StageResult("labels", scene_id, group, key, info=_label_info(store, scene_id, group))
    start = time.perf_counter()
    scene = read_scene(pipeline.dataset, scene_id, load_views=True)  # labels_for_scene applies frame_skip
    stored = store.read(scene_id, POINTS, ["xyz"])["xyz"]
    if len(stored) != len(scene.xyz):  # e.g. ingest.max_range dropped points
        raise DatasetError(
            f"{scene_id}: the store holds {len(stored)} points but the raw scene has {len(scene.xyz)}; "
            "pseudo-labels need the ingest stage's points unfiltered (set ingest.max_range = 0)"
        )
    timings: dict[str, float] = {}
    result = labels_for_scene(scene, pipeline.labels, class_names(pipeline), timings)
    seconds = time.perf_counter() - start
    seen = int((result["label"] >= 0).sum())
    attrs = {
        "key": key, "stage": "labels", "labeler": pipeline.labels.labeler, "params": params,
        "inputs": [ingested.key], "seconds": seconds, **timings, "views": len(scene.views),
        "seen_points": seen, "code_version": CODE_VERSION,
        "simulated": pipeline.labels.labeler == "simulated-clip",
    }
    store.write(scene_id, group, result, attrs)
    return StageResult("labels", scene_id, group, key, True, seconds, _label_info(store, scene_id, group))


def _label_info(store: Store, scene_id: str, group: str) -> dict:
    attrs = store.attrs(scene_id, group)
    return {"seen_points": attrs.get("seen_points", 0), "seconds": attrs["seconds"], "views": attrs.get("views", 0)}


def text_group(pipeline: Pipeline) -> tuple[str, str]:
    params = labels_params(pipeline)
    params = {k: params[k] for k in ("labeler", "labeler_params", "classes")}
    key = stage_key("labels", params, [])
    return f"text/{pipeline.labels.labeler}-{key}", key


def store_text_embeddings(pipeline: Pipeline) -> StageResult:
    """The class-name text embeddings the trainer's text head uses; stored once per store."""
    from preprocess.labels.labelers import text_embeddings

    store = Store(pipeline.store.path)
    group, key = text_group(pipeline)
    if store.is_complete("", group, key):
        return StageResult("text", "", group, key)
    start = time.perf_counter()
    emb = text_embeddings(pipeline.labels, class_names(pipeline)).astype(np.float32)
    store.write("", group, {"embedding": emb}, {"key": key, "classes": list(class_names(pipeline)), "labeler": pipeline.labels.labeler})
    return StageResult("text", "", group, key, True, time.perf_counter() - start)


# ------------------------------------------------------------------------------ refine
def refine_group(pipeline: Pipeline, label_key: str, partition_key: str) -> tuple[str, str, dict]:
    params = params_dict(pipeline.refine)
    key = stage_key("refine", params, [label_key, partition_key])
    return f"pseudo/refined-{key}", key, params


@_guard("refine")
def refine(pipeline: Pipeline, scene_id: str, labelled: StageResult, partitioned: StageResult) -> StageResult:
    store = Store(pipeline.store.path)
    group, key, params = refine_group(pipeline, labelled.key, partitioned.key)
    if store.is_complete(scene_id, group, key):
        return StageResult("refine", scene_id, group, key)
    start = time.perf_counter()
    # The (N, 512) features only where they weight the vote: they are most of the group's bytes.
    weighted = pipeline.refine.visual_weighting and pipeline.labels.store_features
    wanted = ["label", "score", "views"] + (["feat"] if weighted else [])
    pseudo = store.read(scene_id, labelled.group, wanted)
    segment = store.read(scene_id, partitioned.group, ["segment"])["segment"]
    refined = refine_labels(
        pseudo["label"], pseudo["score"].astype(np.float32), segment,
        num_classes=len(class_names(pipeline)), rho=pipeline.refine.rho,
        features=pseudo.get("feat"),
    )
    seconds = time.perf_counter() - start
    arrays = {"label": refined.astype(np.int16), "score": pseudo["score"], "views": pseudo["views"]}
    attrs = {
        "key": key, "stage": "refine", "params": params, "inputs": [labelled.key, partitioned.key],
        "source_labels": labelled.group, "partition": partitioned.group, "seconds": seconds,
        "code_version": CODE_VERSION,
    }
    store.write(scene_id, group, arrays, attrs)
    return StageResult("refine", scene_id, group, key, True, seconds)
