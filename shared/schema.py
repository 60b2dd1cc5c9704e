"""The store's schema: every group name, every cache key and the manifest, in one place.

Both programs ask this module where an output lives: the stages that write it, and the trainer
and the reports that read it. Nobody else spells a group name or calls `stage_key`.

Layout (one store per dataset; one group per scene):

    manifest.json                                what preprocessing made (see `Manifest`)
    text/<labeler>-<key>/embedding               f32 (C, D) class-prompt embeddings
    <scene>/points/{xyz f32 (N,3), rgb u8 (N,3), normal f32 (N,3), gt i16 (N,), instance i32 (N,),
                    faces i32 (F,3), per-point sensor channels (LiDAR intensity, ring)}
    <scene>/partitions/<method>-<key>/segment    i32 (N,)
    <scene>/pseudo/<labeler>-<key>/{label i16, score f16, views u16[, feat f16 (N,D)]
                                    [, the pixel-point pairs (labels.store_pairs; see below)]}
    <scene>/pseudo/refined-<key>/{label i16, score f16, views u16}

The pairs are every (point, labelled pixel) the fusion counted, one row per pair, ordered by
view and then by point (CLIP2Scene trains on them: train/engine/methods.py `CLIP2Scene`):

    pairs_point i32 (P,)  the point          pairs_label i16 (P,)  the pixel's label (>= 0)
    pairs_view  u16 (P,)  the labelled view  pairs_score f16 (P,)  the pixel's score
    with labels.store_features also
    pairs_patch i32 (P,)  the row of patch_feat holding the pixel's patch feature
    patch_feat  f16 (R,D) the CLIP patch features some pair points at (the views' feature maps
                          at the labeler's patch resolution, unreferenced patches left out)

A key hashes the stage's name and version, its parameters and the keys of what it consumed:

    points      <- dataset name[, its settings that change the points: a ply-folder's classes],
                   ingest parameters, fingerprint of the scene's raw files
    partitions  <- method and its parameters, points key[, fingerprint of the scene's mask files]
    labels      <- labeler and its parameters (those its registry entry keys on), class names,
                   points key[, fingerprint of its label maps]
    text        <- labeler, its parameters, class names[, fingerprint of the embeddings file]
    refined     <- refine parameters, labels key, partition key

Fingerprints of files another program made beside the dataset (per-frame 2D masks and label
maps, a text-embeddings file: see `Source`) are taken by the stage that reads them and recorded
in the manifest (`sources`), so a reader names those outputs without the raw files too.

so the trainer, given a pipeline and the points key the manifest recorded, names every output
without touching the raw dataset, and an ablation that changes one parameter finds every
output it did not change under its old name.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from shared.classes import ClassTable
from shared.cli import set_arguments
from shared.config import DatasetConfig, PartitionConfig, Pipeline, params_dict
from shared.datasets import DATASETS
from shared.errors import MissingData
from shared.labelers import LABELERS
from shared.partitioners import PARTITIONERS

if TYPE_CHECKING:
    from shared.store import Store

# Bump a stage's version when its code changes what it writes: every key that depends on it
# changes, so stale results are recomputed instead of trusted.
STAGE_VERSIONS = {"ingest": 1, "partitions": 1, "labels": 2, "text": 1, "refine": 2}

POINTS = "points"
# Arrays of the labels group beyond label/score/views/feat: the pixel-point pairs (see above).
PAIRS_POINT, PAIRS_VIEW, PAIRS_LABEL, PAIRS_SCORE = "pairs_point", "pairs_view", "pairs_label", "pairs_score"
PAIRS_PATCH, PATCH_FEAT = "pairs_patch", "patch_feat"
TEXT_SCENE = ""  # the text embeddings live at the store's root, not under a scene
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
log = logging.getLogger(__name__)


def stage_key(stage: str, params: Mapping[str, Any], inputs: Sequence[str] = ()) -> str:
    """Content address of a stage output: its name, version, parameters and input keys."""
    payload = json.dumps(
        {"stage": stage, "version": STAGE_VERSIONS[stage], "params": params, "inputs": list(inputs)},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Output:
    """Where one stage output lives: its group (relative to the scene), key and parameters, and
    the fingerprints of the side files folded into its key (source name -> fingerprint)."""

    stage: str
    group: str
    key: str
    params: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """Files beside the dataset that a stage reads: "frames" = a per-frame folder (ScanNet
    layout: <scene>/<target>/, nuScenes: <root>/<target>/<CAM>/), "file" = one file path."""

    kind: str
    target: str

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.target}"


def partition_sources(partition: PartitionConfig) -> tuple[Source, ...]:
    folder = PARTITIONERS[partition.method].frame_folder(partition.params)
    return (Source("frames", folder),) if folder else ()


def labels_sources(pipeline: Pipeline) -> tuple[Source, ...]:
    folder = LABELERS[pipeline.labels.labeler].frame_folder(pipeline.labels)
    return (Source("frames", folder),) if folder else ()


def text_sources(pipeline: Pipeline) -> tuple[Source, ...]:
    path = LABELERS[pipeline.labels.labeler].embeddings_file(pipeline.labels)
    return (Source("file", path),) if path else ()


def _picked(needed: Sequence[Source], fingerprints: Mapping[str, str]) -> dict[str, str]:
    """The fingerprints of the `needed` sources (a KeyError names one that is not given)."""
    return {s.name: fingerprints[s.name] for s in needed}


# ------------------------------------------------------------------------------ names and keys
def dataset_table(dataset: DatasetConfig) -> ClassTable:
    """The dataset's class table: names (what `points/gt` indexes), raw-id lookup, palette."""
    return DATASETS[dataset.name].classes(dataset)


def dataset_classes(dataset: DatasetConfig) -> tuple[str, ...]:
    """The dataset's class names: what `points/gt` indexes."""
    return dataset_table(dataset).names


def class_names(pipeline: Pipeline) -> tuple[str, ...]:
    """The class names the labeler is asked for (labels.maskclip.class_names, or the dataset's)."""
    names = pipeline.labels.maskclip.class_names
    return tuple(names) if names else dataset_classes(pipeline.dataset)


def points_output(pipeline: Pipeline, fingerprint: str) -> Output:
    d = pipeline.dataset
    params = {"dataset": d.name, **params_dict(pipeline.ingest), **DATASETS[d.name].key_params(d)}
    return Output("ingest", POINTS, stage_key("ingest", params, [fingerprint]), params)


def partition_output(partition: PartitionConfig, points_key: str, fingerprints: Mapping[str, str] = {}) -> Output:
    """`fingerprints`: source name -> fingerprint, holding those of `partition_sources`."""
    params = {"method": partition.method, **params_dict(partition.params)}
    sources = _picked(partition_sources(partition), fingerprints)
    key = stage_key("partitions", params, [points_key, *sources.values()])
    return Output("partitions", f"partitions/{partition.method}-{key}", key, params, sources)


def labels_params(pipeline: Pipeline) -> dict[str, Any]:
    """What a pseudo-label result depends on: the chosen labeler's own parameters only."""
    cfg = pipeline.labels
    params = {
        "labeler": cfg.labeler, "frame_skip": cfg.frame_skip, "label_width": cfg.label_width,
        "depth_tolerance": cfg.depth_tolerance, "store_features": cfg.store_features,
        "labeler_params": LABELERS[cfg.labeler].key_params(cfg), "classes": list(class_names(pipeline)),
    }
    if cfg.store_pairs:  # only when set: outputs made without pairs keep their keys
        params["store_pairs"] = True
    return params


def labels_output(pipeline: Pipeline, points_key: str, fingerprints: Mapping[str, str] = {}) -> Output:
    params = labels_params(pipeline)
    sources = _picked(labels_sources(pipeline), fingerprints)
    key = stage_key("labels", params, [points_key, *sources.values()])
    return Output("labels", f"pseudo/{pipeline.labels.labeler}-{key}", key, params, sources)


def text_output(pipeline: Pipeline, fingerprints: Mapping[str, str] = {}) -> Output:
    params = {k: v for k, v in labels_params(pipeline).items() if k in ("labeler", "labeler_params", "classes")}
    sources = _picked(text_sources(pipeline), fingerprints)
    key = stage_key("text", params, list(sources.values()))
    return Output("text", f"text/{pipeline.labels.labeler}-{key}", key, params, sources)


def refined_output(pipeline: Pipeline, labels_key: str, partition_key: str) -> Output:
    params = params_dict(pipeline.refine)
    key = stage_key("refine", params, [labels_key, partition_key])
    return Output("refine", f"pseudo/refined-{key}", key, params)


def split_key(dataset: DatasetConfig) -> str:
    """The manifest's name for a dataset's train/val split settings (not its root: a store and
    its dataset may move)."""
    spec = {"name": dataset.name, "version": dataset.version, "train": dataset.train, "val": dataset.val,
            "max_scenes": dataset.max_scenes}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def preprocess_command(pipeline: Pipeline) -> str:
    """The command that makes what `pipeline` needs, with the --set overrides it was loaded with."""
    sets = set_arguments(pipeline.overrides)
    make = f" (make preprocess PIPELINE={pipeline.source})" if not sets else ""
    return f"`python -m preprocess run {pipeline.source}{sets}`{make}"


# ------------------------------------------------------------------------------ the manifest
@dataclass
class Manifest:
    """What preprocessing made, so that readers need the store and nothing else.

    dataset: the dataset's name; classes: its benchmark class names (what `points/gt` indexes);
    splits: split key -> {"spec": the split settings, "train": [...], "val": [...]} as resolved
    against the raw dataset; scenes: scene -> {group: key} of every complete output;
    text: group -> key of the class-prompt embeddings; sources: scene (TEXT_SCENE for the
    store's own) -> {source name: fingerprint} of the side files (`Source`) last read.
    """

    dataset: str
    classes: list[str]
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    scenes: dict[str, dict[str, str]] = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        return cls(data["dataset"], data["classes"], data["splits"], data["scenes"], data["text"],
                   data.get("sources", {}))  # stores from before side files have none

    def as_json(self) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT, "dataset": self.dataset, "classes": self.classes,
                "splits": self.splits, "scenes": self.scenes, "text": self.text, "sources": self.sources}


def read_manifest(store: "Store") -> Manifest:
    data = store.read_json(MANIFEST)
    if data is None:
        raise MissingData(
            f"{store.path}: no {MANIFEST}: the store was not made by `python -m preprocess run` (or by a version "
            f"before manifests); run it on this store's pipeline file (cached stages are reused, so this is quick)"
        )
    if data.get("format") != MANIFEST_FORMAT:
        raise MissingData(f"{store.path}/{MANIFEST}: format {data.get('format')!r}, expected {MANIFEST_FORMAT}; "
                          "run `python -m preprocess run` again to rewrite it")
    return Manifest.from_json(data)


def record_outputs(
    store: "Store",
    pipeline: Pipeline,
    splits: Mapping[str, Sequence[str]] | None,
    outputs: Sequence[tuple[str, Output]],
) -> Manifest:
    """Merge a run's split and complete (scene, output) pairs into the store's manifest (under
    the store's lock, so concurrent runs on one store both land)."""
    classes = list(dataset_classes(pipeline.dataset))

    def merge(data: dict[str, Any] | None) -> dict[str, Any]:
        if data is None or data.get("format") != MANIFEST_FORMAT:
            manifest = Manifest(pipeline.dataset.name, classes)
        else:
            manifest = Manifest.from_json(data)
        if manifest.dataset != pipeline.dataset.name:
            raise MissingData(f"{store.path}: holds dataset {manifest.dataset!r}, not {pipeline.dataset.name!r}; "
                              f"give {pipeline.source} its own store.path")
        if splits is not None:
            d = pipeline.dataset
            manifest.splits[split_key(d)] = {
                "spec": {"train": d.train, "val": d.val, "max_scenes": d.max_scenes, "version": d.version},
                **{name: list(ids) for name, ids in splits.items()},
            }
        for scene, out in outputs:
            if out.sources:
                manifest.sources.setdefault(scene, {}).update(out.sources)
            if out.stage == "text":
                manifest.text[out.group] = out.key
            else:
                groups = manifest.scenes.setdefault(scene, {})
                if out.group == POINTS and groups.get(POINTS) not in (None, out.key):
                    groups.clear()  # re-ingested: what hung off the old points is gone from the store
                groups[out.group] = out.key
        return manifest.as_json()

    return Manifest.from_json(store.update_json(MANIFEST, merge))


# ------------------------------------------------------------------------------ reading
class Layout:
    """A pipeline's view of a store: which group holds each output it needs, from the manifest.

    Every look-up that fails raises `MissingData` naming the preprocess command that makes it.
    """

    def __init__(self, store: "Store", pipeline: Pipeline):
        self.store, self.pipeline = store, pipeline
        self.manifest = read_manifest(store)
        if len(self.manifest.classes) != len(class_names(pipeline)):
            raise MissingData(
                f"{store.path}: holds {len(self.manifest.classes)} classes of {self.manifest.dataset!r}, but "
                f"{pipeline.source} asks for {len(class_names(pipeline))}; check labels.maskclip.class_names"
            )

    def _missing(self, what: str, scene: str = "") -> MissingData:
        where = f"scene {scene!r} " if scene else ""
        return MissingData(f"{self.store.path}: {where}has no {what} for {self.pipeline.source}; "
                           f"run {preprocess_command(self.pipeline)}")

    def split(self, name: str) -> list[str]:
        """Scene ids of the pipeline's train or val split, as preprocessing resolved it, that have
        points in the store (a scene that failed to ingest is left out with a warning)."""
        entry = self.manifest.splits.get(split_key(self.pipeline.dataset))
        if entry is None:
            d = self.pipeline.dataset
            raise self._missing(f"split recorded for dataset.train = {d.train!r}, dataset.val = {d.val!r}, "
                                f"dataset.max_scenes = {d.max_scenes}")
        scenes = [s for s in entry[name] if self.has_points(s)]
        if len(scenes) < len(entry[name]):
            log.warning("%s split: %d of %d scenes have no points in %s (they failed to ingest); using the rest",
                        name, len(entry[name]) - len(scenes), len(entry[name]), self.store.path)
        return scenes

    def has_points(self, scene: str) -> bool:
        return POINTS in self.manifest.scenes.get(scene, {})

    def points_key(self, scene: str) -> str:
        key = self.manifest.scenes.get(scene, {}).get(POINTS)
        if key is None:
            raise self._missing("points", scene)
        return key

    def _fingerprints(self, scene: str, needed: Sequence[Source], what: str) -> dict[str, str]:
        recorded = self.manifest.sources.get(scene, {})
        if any(s.name not in recorded for s in needed):
            raise self._missing(what, scene)
        return recorded

    def _partition(self, scene: str, name: str) -> Output:
        part = self.pipeline.partition(name)
        fingerprints = self._fingerprints(scene, partition_sources(part), f"partition {name!r}")
        return partition_output(part, self.points_key(scene), fingerprints)

    def _labels(self, scene: str) -> Output:
        what = f"{self.pipeline.labels.labeler} pseudo-labels"
        fingerprints = self._fingerprints(scene, labels_sources(self.pipeline), what)
        return labels_output(self.pipeline, self.points_key(scene), fingerprints)

    def _check(self, scene: str, out: Output, what: str) -> str:
        if self.manifest.scenes.get(scene, {}).get(out.group) != out.key:
            raise self._missing(what, scene)
        return out.group

    def partition(self, scene: str, name: str) -> str:
        return self._check(scene, self._partition(scene, name), f"partition {name!r}")

    def labels(self, scene: str) -> str:
        return self._check(scene, self._labels(scene), f"{self.pipeline.labels.labeler} pseudo-labels")

    def refined(self, scene: str, partition: str) -> str:
        out = refined_output(self.pipeline, self._labels(scene).key, self._partition(scene, partition).key)
        return self._check(scene, out, f"refined pseudo-labels over partition {partition!r}")

    def text(self) -> str:
        what = f"{self.pipeline.labels.labeler} text embeddings"
        out = text_output(self.pipeline, self._fingerprints(TEXT_SCENE, text_sources(self.pipeline), what))
        if self.manifest.text.get(out.group) != out.key:
            raise self._missing(what)
        return out.group
