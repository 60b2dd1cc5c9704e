"""Pipeline files: one TOML per experiment, loaded into frozen dataclasses.

Every key is checked: an unknown key or a value of the wrong type is a `ConfigError` naming
the file, the dotted key and what was expected, so a typo never silently falls back to a
default. Environment variables SCANNET_ROOT / NUSCENES_ROOT override `dataset.root`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import ConfigError

DATASETS = ("scannet", "nuscenes", "synthetic")
ROOT_ENV = {"scannet": "SCANNET_ROOT", "nuscenes": "NUSCENES_ROOT"}
INPUT_FEATURES = {"rgb": 3, "normal": 3, "height": 1}  # train.input_features: name -> channels
SPARSE_BACKENDS = ("auto", "torch", "torchsparse", "spconv")  # train.backend
AMP_SETTINGS = ("auto", "off", "fp16", "bf16")  # train.amp


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetConfig:
    name: str
    root: str
    # Scene lists: "all", a text file (relative to root) with one scene id per line, or a list.
    train: str | list[str] = "all"
    val: str | list[str] = field(default_factory=list)
    max_scenes: int = 0  # 0 = no cap; a cap keeps quick runs quick
    version: str = "v1.0-trainval"  # nuScenes table folder (v1.0-mini, v1.0-trainval)
    # nuScenes: store each point's annotated 3D box as points/instance (-1 outside every box),
    # for `partition-quality`. Reads sample_annotation.json and instance.json (large in trainval).
    box_instances: bool = False


@dataclass(frozen=True)
class StoreConfig:
    path: str


@dataclass(frozen=True)
class IngestConfig:
    normal_knn: int = 30  # neighbours for point-cloud normals (nuScenes has no faces)
    max_range: float = 0.0  # nuScenes: drop LiDAR points farther than this (0 = keep all)


@dataclass(frozen=True)
class FelzenszwalbParams:
    """Meshes (ScanNet) always use the Segmentator's faces and weights: only k and min_verts
    apply. The rest chooses the graph and weights of point clouds without faces (LiDAR)."""

    k: float = 0.01
    min_verts: int = 20
    knn: int = 10  # k-NN edges per point ("knn" and "rings+knn" graphs)
    graph: str = "knn"  # "knn", "rings" (range image from points/ring) or "rings+knn"
    weights: str = "normal"  # "normal" (the Segmentator's) or "lidar" (tangent-plane offset, gap, intensity)
    distance_weight: float = 0.4  # weights = "lidar": weight of the gap between the points
    intensity_weight: float = 0.0  # weights = "lidar": weight of the intensity difference / 255


@dataclass(frozen=True)
class VCCSParams:
    voxel_resolution: float = 0.02
    seed_resolution: float = 0.1
    color_importance: float = 0.2
    spatial_importance: float = 0.4
    normal_importance: float = 1.0


@dataclass(frozen=True)
class SuperpointParams:
    k_nn: int = 45
    k_graph: int = 10
    reg: float = 0.1
    voxel: float = 0.0  # SPG's voxel pruning before the partition; 0 = use the points as they are
    appearance: str = "none"  # features beside the geometric ones: "none", "rgb" or "intensity" (LiDAR)


@dataclass(frozen=True)
class MaskParams:
    """Sets from 2D masks projected to 3D and merged across views (preprocess/partition/masks.py)."""

    source: str = "slic"  # "slic": SLIC superpixels of the colour images | "precomputed": mask files
    folder: str = "masks"  # precomputed: the per-frame mask folder (README: sets from 2D masks)
    n_segments: int = 150  # SLIC: superpixels per image (CLIP2Scene's 150)
    compactness: float = 10.0  # SLIC: colour vs. position trade-off (higher: squarer superpixels)
    width: int = 320  # SLIC: images are segmented at this width (aspect kept); precomputed masks: their own size
    frame_skip: int = 10  # views of a video (ScanNet layout): every n-th frame; LiDAR: all cameras
    consistency: float = 0.5  # a neighbour link holds when >= this share of the views that mask both points agree
    knn: int = 10  # neighbours per point of the link graph for point clouds (meshes use their edges)
    min_points: int = 20  # sets smaller than this join their most-linked neighbour set, else become -1
    depth_tolerance: float = 0.05  # metres; the occlusion test of the projection (views with depth or a mesh)


# Allowed values of the partition parameters that name a choice.
PARTITION_CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "felzenszwalb": {"graph": ("knn", "rings", "rings+knn"), "weights": ("normal", "lidar")},
    "superpoints": {"appearance": ("none", "rgb", "intensity")},
}

PARTITION_PARAMS: dict[str, type] = {
    "felzenszwalb": FelzenszwalbParams,
    "vccs": VCCSParams,
    "superpoints": SuperpointParams,
    "masks": MaskParams,
}


@dataclass(frozen=True)
class PartitionConfig:
    name: str  # how [train] refers to it; defaults to the method name
    method: str
    params: Any  # one of PARTITION_PARAMS' dataclasses


@dataclass(frozen=True)
class MaskCLIPConfig:
    model: str = "ViT-B-16"
    pretrained: str = "openai"  # open_clip tag or a local checkpoint path
    batch_size: int = 8
    input_width: int = 448  # images are resized to this width before the ViT (0 = full size)
    device: str = "auto"
    class_names: list[str] = field(default_factory=list)  # empty = the dataset's class names
    templates: list[str] = field(
        default_factory=lambda: [
            "a photo of a {}.", "a photo of the {}.", "there is a {} in the scene.",
            "a photo of a {} in the scene.", "itap of a {}.",
        ]
    )


@dataclass(frozen=True)
class SimulatedCLIPConfig:
    """The simulated-CLIP labeler's model of MaskCLIP (preprocess/labels/simulated.py says what
    each parameter does and why the defaults are what they are)."""

    seed: int = 0
    patch: int = 16  # logits decided per patch of this many label-map pixels, like a ViT-B/16
    margin: float = 4.0  # logit lead of the class an object looks like
    confusion: float = 0.3  # probability that an object reads as a confusable class (0 to 0.5)
    instance_noise: float = 0.5  # per object, Gaussian logit offsets toward unrelated classes
    surface_noise: float = 0.25  # how much parts of a surface vary in their confusion
    region_m: float = 1.0  # metres over which that variation is correlated
    view_noise: float = 0.3  # per view and object, Gaussian shift of its pull (how a viewpoint changes it)
    patch_noise: float = 0.5  # per view and patch, Gaussian logit noise (what fusing views removes)
    feature_dim: int = 512
    feature_noise: float = 1.0  # norm of the noise added to a patch feature's mixture of text embeddings


@dataclass(frozen=True)
class PrecomputedConfig:
    """Per-frame label maps another 2D model made (README: any 2D model as the teacher)."""

    folder: str = "labels2d"  # ScanNet layout: <scene>/<folder>/<frame>.png; nuScenes: <root>/<folder>/<CAM>/<stem>.png
    ignore: list[int] = field(default_factory=lambda: [255, 65535])  # map values that mean "no label"
    scores: bool = False  # read a confidence map <frame>.score.png per frame (else every label weighs 1)
    text_embeddings: str = ""  # (C, D) .npy of class embeddings for train.head = "text" ("" = none)


@dataclass(frozen=True)
class LabelsConfig:
    labeler: str = "simulated-clip"  # "maskclip" | "simulated-clip" | "precomputed"
    frame_skip: int = 20  # ScanNet: every n-th frame
    label_width: int = 320  # label maps are made and used at this width (aspect kept)
    depth_tolerance: float = 0.05  # metres; |z_point - depth| above this is occluded
    store_features: bool = False  # keep per-point mean CLIP features (f16) for distillation
    # keep every (point, labelled pixel) pair with the pixel's label and score (and, with
    # store_features, its CLIP patch feature): what train.method = "clip2scene" trains on
    store_pairs: bool = False
    maskclip: MaskCLIPConfig = field(default_factory=MaskCLIPConfig)
    simulated: SimulatedCLIPConfig = field(default_factory=SimulatedCLIPConfig)
    precomputed: PrecomputedConfig = field(default_factory=PrecomputedConfig)

    @property
    def has_text(self) -> bool:
        """Whether the labeler gives class text embeddings (a precomputed teacher only with a file)."""
        return self.labeler != "precomputed" or bool(self.precomputed.text_embeddings)


@dataclass(frozen=True)
class RefineConfig:
    """Intra-set refinement (method.md §2), made once by the `refine` stage for every
    [[partitions]] entry; the trainer, the label-quality and the eval reports all read those."""

    rho: float = 0.5  # minimum winning share of the score-weighted vote
    visual_weighting: bool = False  # a vote weighs s0 * max(0, cos(CLIP feature, set mean)): needs labels.store_features


@dataclass(frozen=True)
class HICLConfig:
    refine: bool = True  # CE targets are the refine stage's labels over train.partition (False: the raw ones)
    intra_set: bool = True  # intra-set consistency loss: points pulled toward their set prototype
    intra_scene: bool = True
    inter_scene: bool = True
    feedback: bool = True
    tau: float = 0.1
    exclude_own_set: bool = False  # intra-scene keys leave out the query's own set prototype
    # method.md §3 ablation switch: an intra-scene key whose set looks like the query's set
    # (cosine of the sets' mean CLIP features > similar_visual AND of their mean normals >
    # similar_normal) counts as a positive even when its label differs (needs stored features)
    similar_positives: bool = False
    similar_visual: float = 0.9
    similar_normal: float = 0.9
    embed_dim: int = 128
    queries_per_scene: int = 4096
    memory_size: int = 8192
    lambda_set: float = 1.0
    lambda_intra: float = 1.0
    lambda_inter: float = 1.0
    lambda_feedback: float = 1.0
    feedback_warmup_epochs: int = 10


@dataclass(frozen=True)
class CLIP2SceneConfig:
    """CLIP2Scene's label-free training on the stored pixel-point pairs (train/engine/methods.py)."""

    distill_weight: float = 1.0  # weight of 1 - cos(point feature, pixel's CLIP feature); needs labels.store_features
    switch_epoch: int = 10  # from this epoch (counted from 0) the targets may switch to the network's own argmax
    switch_prob: float = 0.5  # ... with this probability per step
    max_views: int = 8  # views whose pairs a scene contributes per step, drawn at random (0 = all)
    # the spatial-temporal consistency term of CLIP2Scene's nuScenes loss (LiDAR scenes)
    spatial_temporal: bool = False


@dataclass(frozen=True)
class TrainConfig:
    method: str = "hicl"  # "hicl" | "clip2scene" | "pseudo-ce" | "gt" (supervised check)
    partition: str = "felzenszwalb"  # name of a [[partitions]] entry
    voxel_size: float = 0.02
    epochs: int = 120
    batch_size: int = 4
    optimizer: str = "adamw"  # "adamw" | "sgd"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 10.0
    # cross-entropy class weights: "none", or "inverse-sqrt" = 1/sqrt(class frequency of the
    # training targets), scaled to mean 1 over the classes present (rare classes learn sooner)
    class_weights: str = "none"
    width: float = 1.0  # MinkUNet channel multiplier (SPVNAS's cr)
    head: str = "text"  # "text" (fixed CLIP text embeddings, cosine logits) | "linear"
    num_workers: int = 2
    seed: int = 0
    checkpoint_every: int = 500
    eval_every_epochs: int = 0
    out_dir: str = "runs/default"
    # sparse-conv library: "auto" (on CUDA torchsparse, else spconv, else the pure-PyTorch ops;
    # on CPU the pure-PyTorch ops) | "torch" | "torchsparse" | "spconv"
    backend: str = "auto"
    # mixed precision: "auto" (on CUDA bfloat16 where the GPU has it, else float16; off on CPU)
    # | "off" | "fp16" | "bf16" (train/amp.py)
    amp: str = "auto"
    max_points: int = 0  # crop scenes above this many points during training (0 = no crop)
    # per-voxel input channels, in this order: "rgb" (3, in [0, 1]), "normal" (3), "height" (1,
    # metres above the scene's lowest point: tells floors, seats, tables and wall items apart)
    input_features: list[str] = field(default_factory=lambda: ["rgb"])
    hicl: HICLConfig = field(default_factory=HICLConfig)
    clip2scene: CLIP2SceneConfig = field(default_factory=CLIP2SceneConfig)


@dataclass(frozen=True)
class RunConfig:
    """One model of an experiment: a name and the pipeline keys it changes."""

    name: str
    set: dict = field(default_factory=dict)  # dotted key -> value, e.g. {"train.method" = "clip2scene"}
    label: str = ""  # row name in tables (default: name)


@dataclass(frozen=True)
class ExperimentConfig:
    """How an experiment file's [[runs]] are repeated: each run is trained once per seed
    (train.seed), and tables show the mean ± std over seeds, so differences can be told from noise."""

    seeds: list[int] = field(default_factory=lambda: [0])


@dataclass(frozen=True)
class Pipeline:
    source: Path  # the file it was read from
    dataset: DatasetConfig
    store: StoreConfig
    ingest: IngestConfig
    partitions: tuple[PartitionConfig, ...]
    labels: LabelsConfig
    refine: RefineConfig
    train: TrainConfig
    runs: tuple[RunConfig, ...] = ()  # an experiment's models; empty for a single-model pipeline
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    # The dotted-key overrides it was loaded with (CLI --set): its [[runs]] variants keep them.
    overrides: dict[str, Any] = field(default_factory=dict, compare=False)

    def partition(self, name: str) -> PartitionConfig:
        for p in self.partitions:
            if p.name == name:
                return p
        raise ConfigError(
            f"{self.source}: no [[partitions]] entry named {name!r} "
            f"(have: {[p.name for p in self.partitions]})"
        )


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_value(value: Any, tp: Any, key: str, source: Path) -> Any:
    """Value checked (and int→float widened) against a dataclass field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _check_value(value, option, key, source)
            except ConfigError:
                continue
        raise ConfigError(f"{source}: '{key}' = {value!r} must be {_type_name(tp)}")
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a table")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{key}' = {value!r} must be a list of {_type_name(item_tp)}")
        return [_check_value(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a table ([{key}])")
        return _build(tp, value, key, source)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{source}: '{key}' = {value!r} must be true or false")
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{source}: '{key}' = {value!r} must be {tp.__name__}")
    if tp is Any or isinstance(value, tp):
        return value
    raise ConfigError(f"{source}: '{key}' = {value!r} must be {_type_name(tp)}, not {type(value).__name__}")


def _build(cls: type, table: dict, prefix: str, source: Path, skip: tuple[str, ...] = ()):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - set(skip)
    unknown = sorted(set(table) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"{source}: unknown key '{where}{unknown[0]}' (known keys: {', '.join(sorted(names))})"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in table:
            kwargs[f.name] = _check_value(table[f.name], hints[f.name], key, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key '{key}'")
    return cls(**kwargs)


def _partition(entry: Any, index: int, source: Path) -> PartitionConfig:
    prefix = f"partitions[{index}]"
    if not isinstance(entry, dict) or "method" not in entry:
        raise ConfigError(f"{source}: '{prefix}' needs a 'method' ({', '.join(PARTITION_PARAMS)})")
    entry = dict(entry)
    method = entry.pop("method")
    name = entry.pop("name", method)
    if method not in PARTITION_PARAMS:
        raise ConfigError(
            f"{source}: '{prefix}.method' = {method!r} is not one of {sorted(PARTITION_PARAMS)}"
        )
    if not isinstance(name, str):
        raise ConfigError(f"{source}: '{prefix}.name' must be a string")
    params = _build(PARTITION_PARAMS[method], entry, prefix, source)
    for key, allowed in PARTITION_CHOICES.get(method, {}).items():
        if getattr(params, key) not in allowed:
            raise ConfigError(f"{source}: '{prefix}.{key}' = {getattr(params, key)!r} must be one of {', '.join(allowed)}")
    return PartitionConfig(name, method, params)


def _merge(base: dict, over: dict) -> dict:
    """`over` laid on `base`: tables merge key by key, everything else (arrays included) replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_raw(source: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The file's tables, laid over those of its `base = "other.toml"` (relative to the file)."""
    if not source.is_file():
        raise ConfigError(f"{source}: pipeline file not found (see pipelines/ for examples)")
    try:
        raw = tomllib.loads(source.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: malformed TOML: {e}") from None
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{source}: 'base' must be the path of another pipeline file")
    base_path = (source.parent / base).resolve()
    if base_path in seen:
        raise ConfigError(f"{source}: 'base' chain loops back to {base_path}")
    return _merge(_read_raw(base_path, (*seen, source.resolve())), raw)


def load_pipeline(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Pipeline:
    """Read and validate a pipeline file; `overrides` maps dotted keys to values (CLI --set)."""
    source = Path(path)
    raw = _read_raw(source)
    for dotted, value in (overrides or {}).items():
        *parents, last = dotted.split(".")
        table = raw
        for p in parents:
            table = table.setdefault(p, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{source}: cannot override '{dotted}': '{p}' is not a table")
        table[last] = value

    sections = {"dataset", "store", "ingest", "partitions", "labels", "refine", "train", "runs", "experiment"}
    unknown = sorted(set(raw) - sections)
    if unknown:
        raise ConfigError(f"{source}: unknown key '{unknown[0]}' (known sections: {', '.join(sorted(sections))})")
    for required in ("dataset", "store"):
        if required not in raw:
            raise ConfigError(f"{source}: missing section [{required}]")

    dataset = _build(DatasetConfig, raw["dataset"], "dataset", source)
    if dataset.name not in DATASETS:
        raise ConfigError(
            f"{source}: 'dataset.name' = {dataset.name!r} is not a known dataset (one of {', '.join(DATASETS)})"
        )
    if dataset.box_instances and dataset.name != "nuscenes":
        raise ConfigError(f"{source}: 'dataset.box_instances' is for nuScenes' 3D boxes; {dataset.name} "
                          "scenes get their instances from their own annotation (remove the key)")
    env = ROOT_ENV.get(dataset.name)
    if env and os.environ.get(env):
        dataset = dataclasses.replace(dataset, root=os.environ[env])

    entries = raw.get("partitions", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: 'partitions' must be an array of tables ([[partitions]])")
    partitions = tuple(_partition(e, i, source) for i, e in enumerate(entries))
    names = [p.name for p in partitions]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: [[partitions]] names must be unique, got {names}; add name = \"...\"")

    def section(cls, key):
        table = raw.get(key, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: '{key}' must be a table ([{key}])")
        return _build(cls, table, key, source)

    runs_raw = raw.get("runs", [])
    if not isinstance(runs_raw, list):
        raise ConfigError(f"{source}: 'runs' must be an array of tables ([[runs]])")
    runs = tuple(_build(RunConfig, r, f"runs[{i}]", source) if isinstance(r, dict) else
                 _build(RunConfig, {}, f"runs[{i}]", source) for i, r in enumerate(runs_raw))
    if len({r.name for r in runs}) != len(runs):
        raise ConfigError(f"{source}: [[runs]] names must be unique, got {[r.name for r in runs]}")

    pipeline = Pipeline(
        source=source,
        dataset=dataset,
        store=section(StoreConfig, "store"),
        ingest=section(IngestConfig, "ingest"),
        partitions=partitions,
        labels=section(LabelsConfig, "labels"),
        refine=section(RefineConfig, "refine"),
        train=section(TrainConfig, "train"),
        runs=runs,
        experiment=section(ExperimentConfig, "experiment"),
        overrides=dict(overrides or {}),
    )
    _check_choices(pipeline)
    for run in runs:  # each run's overrides must make a valid pipeline too
        try:
            load_pipeline(source, {**(overrides or {}), **run.set, "runs": []})
        except ConfigError as e:
            raise ConfigError(f"{e} (in [[runs]] {run.name!r})") from None
    return pipeline


def run_pipeline(pipeline: Pipeline, run: RunConfig, seed: int | None = None) -> Pipeline:
    """The pipeline of one [[runs]] entry: the overrides `pipeline` was loaded with, then the
    run's, applied; its own out_dir; with `seed`, that training seed and out_dir <run>/seed<seed>."""
    out_dir = Path(pipeline.train.out_dir) / run.name
    extra = {} if seed is None else {"train.seed": seed}
    if seed is not None:
        out_dir = out_dir / f"seed{seed}"
    return load_pipeline(pipeline.source, {**pipeline.overrides, "train.out_dir": str(out_dir),
                                           **run.set, **extra,
                                           "runs": []})


def _check_choices(p: Pipeline) -> None:
    choices = {
        "labels.labeler": (p.labels.labeler, ("maskclip", "simulated-clip", "precomputed")),
        "train.method": (p.train.method, ("hicl", "clip2scene", "pseudo-ce", "gt")),
        "train.optimizer": (p.train.optimizer, ("adamw", "sgd")),
        "train.head": (p.train.head, ("text", "linear")),
        "train.class_weights": (p.train.class_weights, ("none", "inverse-sqrt")),
        "train.backend": (p.train.backend, SPARSE_BACKENDS),
        "train.amp": (p.train.amp, AMP_SETTINGS),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{p.source}: '{key}' = {value!r} must be one of {', '.join(allowed)}")
    for key in ("similar_visual", "similar_normal"):
        value = getattr(p.train.hicl, key)
        if not -1.0 <= value <= 1.0:
            raise ConfigError(f"{p.source}: 'train.hicl.{key}' = {value!r} must be a cosine in [-1, 1]")
    sim = p.labels.simulated
    if not 0.0 <= sim.confusion <= 0.5:
        raise ConfigError(f"{p.source}: 'labels.simulated.confusion' = {sim.confusion!r} must be in [0, 0.5] "
                          f"(the probability that an object reads as another class)")
    for key in ("margin", "instance_noise", "surface_noise", "view_noise", "patch_noise", "feature_noise"):
        if getattr(sim, key) < 0:
            raise ConfigError(f"{p.source}: 'labels.simulated.{key}' = {getattr(sim, key)!r} must be >= 0")
    if sim.patch < 1 or sim.region_m <= 0 or sim.feature_dim < 1:
        raise ConfigError(f"{p.source}: 'labels.simulated' needs patch >= 1, region_m > 0 and feature_dim >= 1")
    seeds = p.experiment.seeds
    if not seeds or len(set(seeds)) < len(seeds):
        raise ConfigError(f"{p.source}: 'experiment.seeds' = {seeds!r} must be a non-empty list of distinct seeds")
    if p.refine.visual_weighting and not p.labels.store_features:
        raise ConfigError(f"{p.source}: 'refine.visual_weighting' = true weighs votes by per-point CLIP features, but "
                          f"'labels.store_features' = false stores none; set labels.store_features = true "
                          f"(and re-run the labels stage) or turn visual weighting off")
    features = p.train.input_features
    if not features or len(set(features)) < len(features) or not set(features) <= set(INPUT_FEATURES):
        raise ConfigError(f"{p.source}: 'train.input_features' = {features!r} must be a non-empty list without "
                          f"repeats of {', '.join(map(repr, INPUT_FEATURES))}")
    if not p.labels.has_text and (p.train.head == "text" or p.train.method == "clip2scene"):
        needs = "train.head = \"text\"" if p.train.head == "text" else "train.method = \"clip2scene\""
        raise ConfigError(f"{p.source}: {needs} needs class text embeddings, and labels.labeler = \"precomputed\" "
                          "has none: set labels.precomputed.text_embeddings to a (classes, D) .npy file of your "
                          "2D model's class embeddings, or train with train.head = \"linear\" (and not clip2scene)")
    folder = p.labels.precomputed.folder
    if p.labels.labeler == "precomputed" and not _one_folder(folder):
        raise ConfigError(f"{p.source}: 'labels.precomputed.folder' = {folder!r} must be one folder name "
                          "(README: any 2D model as the teacher)")
    for i, part in enumerate(p.partitions):
        if part.method == "masks":
            _check_masks(p, i, part.params)
    if p.train.method == "clip2scene":
        c2s = p.train.clip2scene
        if not p.labels.store_pairs:
            raise ConfigError(f"{p.source}: 'train.method' = \"clip2scene\" trains on the pixel-point pairs, which the store "
                              "keeps only with labels.store_pairs = true; set it (and rerun preprocess)")
        if c2s.distill_weight > 0 and not p.labels.store_features:
            raise ConfigError(f"{p.source}: 'train.clip2scene.distill_weight' = {c2s.distill_weight} distils the pixels' "
                              "CLIP features, which the store keeps only with labels.store_features = true; set it "
                              "(and rerun preprocess) or set the weight to 0")
        if c2s.max_views < 0:
            raise ConfigError(f"{p.source}: 'train.clip2scene.max_views' = {c2s.max_views} must be >= 0 (0 = all views)")
    if p.partitions:
        names = [x.name for x in p.partitions]
        if p.train.partition not in names:
            raise ConfigError(f"{p.source}: 'train.partition' = {p.train.partition!r} names no [[partitions]] "
                              f"entry (have {names})")


def _check_masks(p: Pipeline, index: int, m: MaskParams) -> None:
    where = f"{p.source}: 'partitions[{index}]"
    if m.source not in ("slic", "precomputed"):
        raise ConfigError(f"{where}.source' = {m.source!r} must be one of slic, precomputed")
    if not 0.0 < m.consistency <= 1.0:
        raise ConfigError(f"{where}.consistency' = {m.consistency!r} must be a share in (0, 1]")
    for key in ("n_segments", "width", "frame_skip", "knn", "min_points"):
        if getattr(m, key) < 1:
            raise ConfigError(f"{where}.{key}' = {getattr(m, key)!r} must be >= 1")
    if m.source == "precomputed" and not _one_folder(m.folder):
        raise ConfigError(f"{where}.folder' = {m.folder!r} must be one folder name (README: sets from 2D masks)")


def _one_folder(name: str) -> bool:
    """A per-frame folder is named, not a path: the layout puts it under each scene (or CAM)."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def params_dict(params: Any) -> dict[str, Any]:
    """Stage parameters as a plain dict (what cache keys and store attributes hold)."""
    return dataclasses.asdict(params)
