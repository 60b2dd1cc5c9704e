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

from preprocess.datasets.registry import frame_files, read_scene, scene_files
from preprocess.datasets.scene import Scene
from shared.config import PartitionConfig, Pipeline
from shared.datasets import DATASETS
from shared.errors import ConfigError, DatasetError, UserError
from shared.labelers import LABELERS
from shared.partitioners import PARTITIONERS
from shared.schema import (
    PAIRS_POINT,
    POINTS,
    TEXT_SCENE,
    Output,
    Source,
    class_names,
    labels_output,
    labels_sources,
    partition_output,
    partition_sources,
    points_output,
    refined_output,
    text_output,
    text_sources,
)
from shared.store import Store

try:
    CODE_VERSION = metadata.version("hicl3d")
except metadata.PackageNotFoundError:  # running from a checkout that was not installed
    CODE_VERSION = "dev"



SKIPPED = "skipped:"  # the error of a task that did not run because one it needed failed


@dataclass(frozen=True)
class StageResult:
    """What a stage did for one scene; the driver prints and counts these."""

    stage: str
    scene: str
    output: Output | None = None  # where the result lives (None when the stage failed)
    computed: bool = False  # False: the store already had it (cache hit)
    seconds: float = 0.0
    info: dict = dataclasses.field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def key(self) -> str:
        return self.output.key if self.output else ""

    @property
    def group(self) -> str:
        return self.output.group if self.output else ""


def _guard(stage: str) -> Callable:
    """Every failure becomes a failed StageResult, so Dask never retries it: a user error (bad
    input, config) as its one-line message, anything else with its traceback (a bug to fix)."""

    def wrap(fn):
        def run(pipeline: Pipeline, scene_id: str, *upstream: StageResult, **kw) -> StageResult:
            failed = [u for u in upstream if isinstance(u, StageResult) and not u.ok]
            if failed:
                return StageResult(stage, scene_id, error=f"{SKIPPED} {failed[0].stage} failed")
            try:
                return fn(pipeline, scene_id, *upstream, **kw)
            except UserError as e:
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


def side_fingerprints(pipeline: Pipeline, scene_id: str, sources: tuple[Source, ...]) -> dict[str, str]:
    """Fingerprints of the side files a stage reads (per-frame masks or label maps of the scene,
    a text-embeddings file): names, sizes and modification times, so that a map rewritten in
    place (same size, as .npy features are) still changes every key that depends on it."""
    out = {}
    for source in sources:
        if source.kind == "frames":
            files = frame_files(pipeline.dataset, scene_id, source.target)
            base = Path(pipeline.dataset.root)
        else:
            files, base = [Path(source.target)], Path()
        entries = sorted((str(p.relative_to(base)) if p.is_relative_to(base) else str(p),
                          *((p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, -1))) for p in files)
        out[source.name] = hashlib.sha256(repr(entries).encode()).hexdigest()[:16]
    return out


def ingest_output(pipeline: Pipeline, scene_id: str) -> Output:
    return points_output(pipeline, _source_fingerprint(pipeline, scene_id))


def scene_arrays(scene: Scene, normal_knn: int, sweep: bool) -> dict[str, np.ndarray]:
    """The store's `points` arrays of a scene: its normals, else made here as `python -m train
    predict` makes a scan's (`sweep`: its points are a LiDAR sweep in the sensor's frame)."""
    from shared.normals import scan_normals  # open3d: only where normals are made

    normal = scene.normal if scene.normal is not None else scan_normals(scene.xyz, scene.faces, normal_knn, sweep)
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
        if _per_point(value, len(scene.xyz)) and name not in arrays:
            arrays[name] = value
    return arrays


def _per_point(value: Any, n: int) -> bool:
    """Whether a metadata value is a per-point channel of a scene of n points."""
    return isinstance(value, np.ndarray) and value.shape[:1] == (n,)


def _small_meta(scene: Scene) -> dict:
    """Scene metadata for the store's attributes, without per-point arrays."""
    return {k: v for k, v in scene.meta.items() if not _per_point(v, len(scene.xyz))}


@_guard("ingest")
def ingest(pipeline: Pipeline, scene_id: str) -> StageResult:
    store = Store(pipeline.store.path)
    out = ingest_output(pipeline, scene_id)
    key = out.key
    if store.is_complete(scene_id, POINTS, key):
        return StageResult("ingest", scene_id, out, info=_points_info(store, scene_id))
    start = time.perf_counter()
    scene = read_scene(pipeline.dataset, scene_id, load_views=False)
    if pipeline.ingest.max_range > 0:
        keep = np.linalg.norm(scene.xyz, axis=1) <= pipeline.ingest.max_range
        scene = dataclasses.replace(
            scene,
            xyz=scene.xyz[keep], rgb=scene.rgb[keep], normal=None if scene.normal is None else scene.normal[keep],
            gt=None if scene.gt is None else scene.gt[keep],
            instance=None if scene.instance is None else scene.instance[keep],
            meta={k: v[keep] if _per_point(v, len(keep)) else v for k, v in scene.meta.items()},  # intensity, ring
        )
    arrays = scene_arrays(scene, pipeline.ingest.normal_knn, DATASETS[pipeline.dataset.name].sweeps)
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
    return StageResult("ingest", scene_id, out, True, seconds, _points_info(store, scene_id))


def _points_info(store: Store, scene_id: str) -> dict:
    attrs = store.attrs(scene_id, POINTS)
    return {"num_points": attrs["num_points"], "seconds": attrs["seconds"]}


# -------------------------------------------------------------------------- partitions
def compute_partition(partition: PartitionConfig, points: dict[str, np.ndarray],
                      views: list | None = None) -> tuple[np.ndarray, dict]:
    """Run one partition method on a scene's stored points (and, for methods that need them,
    the raw scene's views); returns (segment ids, extra attrs). A parameter the points cannot
    serve is a ConfigError naming the [[partitions]] entry."""
    try:
        return PARTITIONERS[partition.method].run(partition.params, points, views)
    except ConfigError as e:
        raise ConfigError(f"[[partitions]] {partition.name!r}: {e}") from None


@_guard("partitions")
def partitions(pipeline: Pipeline, scene_id: str, ingested: StageResult, partition: PartitionConfig) -> StageResult:
    store = Store(pipeline.store.path)
    out = partition_output(partition, ingested.key, side_fingerprints(pipeline, scene_id, partition_sources(partition)))
    group, key = out.group, out.key
    if store.is_complete(scene_id, group, key):
        return StageResult("partitions", scene_id, out, info=_segment_info(store, scene_id, group))
    names = ("xyz", "rgb", "normal", "faces", "intensity", "ring")
    points = store.read(scene_id, POINTS, [n for n in names if store.has_array(scene_id, POINTS, n)])
    # views' images load lazily: for methods that read them the time covers their decoding
    views = read_scene(pipeline.dataset, scene_id).views if PARTITIONERS[partition.method].needs_views else None
    start = time.perf_counter()
    segment, extra = compute_partition(partition, points, views)
    seconds = time.perf_counter() - start
    attrs = {
        "key": key, "stage": "partitions", "method": partition.method,
        "params": out.params, "inputs": [ingested.key], "segments": int(segment.max()) + 1 if len(segment) else 0,
        "seconds": seconds, "code_version": CODE_VERSION, **extra,
    }
    store.write(scene_id, group, {"segment": segment.astype(np.int32)}, attrs)
    return StageResult("partitions", scene_id, out, True, seconds, _segment_info(store, scene_id, group))


def _segment_info(store: Store, scene_id: str, group: str) -> dict:
    attrs = store.attrs(scene_id, group)
    return {"segments": attrs["segments"], "seconds": attrs["seconds"], "method": attrs["method"]}


# ------------------------------------------------------------------------------ labels
@_guard("labels")
def labels(pipeline: Pipeline, scene_id: str, ingested: StageResult) -> StageResult:
    from preprocess.labels.labelers import labels_for_scene, teacher_advice

    store = Store(pipeline.store.path)
    out = labels_output(pipeline, ingested.key, side_fingerprints(pipeline, scene_id, labels_sources(pipeline)))
    group, key = out.group, out.key
    if store.is_complete(scene_id, group, key):
        return StageResult("labels", scene_id, out, info=_label_info(store, scene_id, group))
    start = time.perf_counter()
    scene = read_scene(pipeline.dataset, scene_id, load_views=True)  # labels_for_scene applies frame_skip
    stored = store.read(scene_id, POINTS, ["xyz"])["xyz"]
    if len(stored) != len(scene.xyz):  # e.g. ingest.max_range dropped points
        raise DatasetError(
            f"{scene_id}: the store holds {len(stored)} points but the raw scene has {len(scene.xyz)}; "
            "pseudo-labels need the ingest stage's points unfiltered (set ingest.max_range = 0)"
        )
    timings: dict[str, float] = {}
    with teacher_advice(pipeline):
        result = labels_for_scene(scene, pipeline.labels, class_names(pipeline), timings)
    seconds = time.perf_counter() - start
    seen = int((result["label"] >= 0).sum())
    attrs = {
        "key": key, "stage": "labels", "labeler": pipeline.labels.labeler, "params": out.params,
        "inputs": [ingested.key], "seconds": seconds, **timings, "views": len(scene.views),
        "seen_points": seen, "pairs": len(result.get(PAIRS_POINT, ())), "code_version": CODE_VERSION,
        "simulated": LABELERS[pipeline.labels.labeler].simulated,
    }
    store.write(scene_id, group, result, attrs)
    return StageResult("labels", scene_id, out, True, seconds, _label_info(store, scene_id, group))


def _label_info(store: Store, scene_id: str, group: str) -> dict:
    attrs = store.attrs(scene_id, group)
    return {"seen_points": attrs.get("seen_points", 0), "seconds": attrs["seconds"], "views": attrs.get("views", 0)}


@_guard("text")
def store_text_embeddings(pipeline: Pipeline, scene_id: str = TEXT_SCENE) -> StageResult:
    """The class-name text embeddings the trainer's text head uses; stored once per store."""
    from preprocess.labels.labelers import teacher_advice, text_embeddings

    store = Store(pipeline.store.path)
    out = text_output(pipeline, side_fingerprints(pipeline, TEXT_SCENE, text_sources(pipeline)))
    if store.is_complete(TEXT_SCENE, out.group, out.key):
        return StageResult("text", TEXT_SCENE, out)
    start = time.perf_counter()
    with teacher_advice(pipeline):
        emb = text_embeddings(pipeline.labels, class_names(pipeline)).astype(np.float32)
    attrs = {"key": out.key, "stage": "text", "params": out.params, "classes": list(class_names(pipeline)),
             "labeler": pipeline.labels.labeler}
    store.write(TEXT_SCENE, out.group, {"embedding": emb}, attrs)
    return StageResult("text", TEXT_SCENE, out, True, time.perf_counter() - start)


# ------------------------------------------------------------------------------ refine
@_guard("refine")
def refine(pipeline: Pipeline, scene_id: str, labelled: StageResult, partitioned: StageResult) -> StageResult:
    from shared.refine import refine_labels  # Numba: compiled code loads where it runs

    store = Store(pipeline.store.path)
    out = refined_output(pipeline, labelled.key, partitioned.key)
    group, key = out.group, out.key
    if store.is_complete(scene_id, group, key):
        return StageResult("refine", scene_id, out)
    start = time.perf_counter()
    visual = pipeline.refine.visual_weighting
    pseudo = store.read(scene_id, labelled.group, ["label", "score", "views"] + (["feat"] if visual else []))
    segment = store.read(scene_id, partitioned.group, ["segment"])["segment"]
    refined = refine_labels(
        pseudo["label"], pseudo["score"].astype(np.float32), segment,
        num_classes=len(class_names(pipeline)), rho=pipeline.refine.rho,
        features=pseudo.get("feat"),
    )
    seconds = time.perf_counter() - start
    arrays = {"label": refined.astype(np.int16), "score": pseudo["score"], "views": pseudo["views"]}
    attrs = {
        "key": key, "stage": "refine", "params": out.params, "inputs": [labelled.key, partitioned.key],
        "source_labels": labelled.group, "partition": partitioned.group, "seconds": seconds,
        "code_version": CODE_VERSION,
    }
    store.write(scene_id, group, arrays, attrs)
    return StageResult("refine", scene_id, out, True, seconds)
