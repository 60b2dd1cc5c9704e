"""Pipeline files: one TOML per experiment, loaded into frozen dataclasses.

Every key is checked when the file loads: an unknown key, a value of the wrong type or outside
its range (`shared/ranges.py`, written into each field's type) is a `ConfigError` naming where
the value came from (the file, its `base` file, or the `--set` that gave it), the dotted key and
what was expected, so a typo never silently falls back to a default and a nonsense value never
runs. The names a file chooses (dataset, partition method, labeler, training method) are looked
up in their family's registry (`shared/datasets.py`, `partitioners.py`, `labelers.py`,
`methods.py`), which also checks what its choice needs of the rest of the file. A dataset's
environment variable (SCANNET_ROOT, NUSCENES_ROOT) overrides `dataset.root`.

`--set` reaches any key: `train.epochs=3`, a list entry by position (`partitions.0.k=0.02`)
or by its name (`partitions.felzenszwalb.k=0.02`, `runs.hicl.label=HICL`).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn

from shared.cli import format_override
from shared.datasets import DATASETS, NEW_DATASET
from shared.errors import ConfigError
from shared.labelers import DEFAULT_LABELER, LABELERS, MaskCLIPConfig, PrecomputedConfig, SimulatedCLIPConfig
from shared.methods import DEFAULT_METHOD, METHODS, CLIP2SceneConfig, HICLConfig
from shared.partitioners import DEFAULT_PARTITION, PARTITIONERS
from shared.ranges import Count, Index, Metres, NonNegative, OneOf, Positive, Range, Seed, Share

INPUT_FEATURES = {"rgb": 3, "normal": 3, "height": 1}  # train.input_features: name -> channels
SPARSE_BACKENDS = ("auto", "torch", "torchsparse", "spconv")  # train.backend
AMP_SETTINGS = ("auto", "off", "fp16", "bf16")  # train.amp
# train.head: the classifiers train/models/heads.py CLASSIFIERS builds; all but "linear" score
# against the class text embeddings
CLASSIFIER_HEADS = ("text", "linear", "dot-text")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetConfig:
    """[dataset]: name, root and splits, plus the keys of its own that a dataset takes
    (`options` of its entry in shared/datasets.py)."""

    name: str
    root: str
    # Scene lists: "all", a text file (relative to root) with one scene id per line, or a list.
    train: str | list[str] = "all"
    val: str | list[str] = field(default_factory=list)
    max_scenes: Index = 0  # 0 = no cap; a cap keeps quick runs quick
    version: str = "v1.0-trainval"  # nuScenes table folder (v1.0-mini, v1.0-trainval)
    # nuScenes: store each point's annotated 3D box as points/instance (-1 outside every box),
    # for `partition-quality`. Reads sample_annotation.json and instance.json (large in trainval).
    box_instances: bool = False
    classes: list[str] = field(default_factory=list)  # your own data: the class names, in id order


GENERIC_DATASET_KEYS = ("name", "root", "train", "val", "max_scenes")  # every dataset takes these


@dataclass(frozen=True)
class StoreConfig:
    path: str


@dataclass(frozen=True)
class IngestConfig:
    normal_knn: Count = 30  # neighbours for point-cloud normals (nuScenes has no faces)
    max_range: NonNegative = 0.0  # nuScenes: drop LiDAR points farther than this (0 = keep all)


@dataclass(frozen=True)
class PartitionConfig:
    name: str  # how [train] refers to it; defaults to the method name
    method: str  # a key of PARTITIONERS
    params: Any  # that method's Params


@dataclass(frozen=True)
class LabelsConfig:
    labeler: str = DEFAULT_LABELER  # a key of LABELERS (shared/labelers.py)
    frame_skip: Count = 20  # ScanNet: every n-th frame
    label_width: Count = 320  # label maps are made and used at this width (aspect kept)
    depth_tolerance: Metres = 0.05  # |z_point - depth| above this is occluded
    store_features: bool = False  # keep per-point mean CLIP features (f16) for distillation
    # keep every (point, labelled pixel) pair with the pixel's label and score (and, with
    # store_features, its CLIP patch feature): what CLIP2Scene trains on
    store_pairs: bool = False
    maskclip: MaskCLIPConfig = field(default_factory=MaskCLIPConfig)
    simulated: SimulatedCLIPConfig = field(default_factory=SimulatedCLIPConfig)
    precomputed: PrecomputedConfig = field(default_factory=PrecomputedConfig)


@dataclass(frozen=True)
class RefineConfig:
    """Intra-set refinement (method.md §2), made once by the `refine` stage for every
    [[partitions]] entry; the trainer, the label-quality and the eval reports all read those."""

    rho: Share = 0.5  # minimum winning share of the score-weighted vote
    visual_weighting: bool = False  # a vote weighs s0 * max(0, cos(CLIP feature, set mean)): needs labels.store_features


@dataclass(frozen=True)
class TrainConfig:
    method: str = DEFAULT_METHOD  # a key of METHODS (shared/methods.py)
    partition: str = DEFAULT_PARTITION  # name of a [[partitions]] entry
    voxel_size: Metres = 0.02
    epochs: Count = 120
    batch_size: Count = 4
    optimizer: Annotated[str, OneOf(("adamw", "sgd"))] = "adamw"
    lr: Positive = 2e-3
    weight_decay: NonNegative = 1e-4
    warmup_steps: Index = 100
    grad_clip: NonNegative = 10.0  # gradient-norm clip (0 = none)
    # cross-entropy class weights: "none", or "inverse-sqrt" = 1/sqrt(class frequency of the
    # training targets), scaled to mean 1 over the classes present (rare classes learn sooner)
    class_weights: Annotated[str, OneOf(("none", "inverse-sqrt"))] = "none"
    # MinkUNet channel multiplier (SPVNAS's cr); below 1/32 its narrowest stage would have no channel
    width: Annotated[float, Range(1 / 32)] = 1.0
    # classifier: "text" (cosine logits against the fixed CLIP text embeddings) | "linear" |
    # "dot-text" (CLIP2Scene's: a linear map to the CLIP dimension dotted with the embeddings)
    head: Annotated[str, OneOf(CLASSIFIER_HEADS)] = "text"
    num_workers: Index = 2
    seed: Seed = 0
    checkpoint_every: Count = 500
    eval_every_epochs: Index = 0
    out_dir: str = "runs/default"
    # sparse-conv library: "auto" (on CUDA torchsparse, else spconv, else the pure-PyTorch ops;
    # on CPU the pure-PyTorch ops) | "torch" | "torchsparse" | "spconv"
    backend: Annotated[str, OneOf(SPARSE_BACKENDS)] = "auto"
    # mixed precision: "auto" (on CUDA bfloat16 where the GPU has it, else float16; off on CPU)
    # | "off" | "fp16" | "bf16" (README: training on a GPU)
    amp: Annotated[str, OneOf(AMP_SETTINGS)] = "auto"
    max_points: Index = 0  # crop scenes above this many points during training (0 = no crop)
    # where a crop is centred: "uniform" (a random voxel) | "class-balanced" (a voxel drawn with
    # probability proportional to 1/sqrt(split frequency) of its training target's class, so
    # crops keep the rare classes' small objects; train/engine/balance.py)
    crop_centre: Annotated[str, OneOf(("uniform", "class-balanced"))] = "uniform"
    # per-voxel input channels, in this order: "rgb" (3, in [0, 1]), "normal" (3), "height" (1,
    # metres above the scene's lowest point: tells floors, seats, tables and wall items apart)
    input_features: list[Annotated[str, OneOf(tuple(INPUT_FEATURES))]] = field(default_factory=lambda: ["rgb"])
    hicl: HICLConfig = field(default_factory=HICLConfig)
    clip2scene: CLIP2SceneConfig = field(default_factory=CLIP2SceneConfig)

    @property
    def text_head(self) -> bool:
        """Whether the classifier scores against the class text embeddings (every head but "linear")."""
        return self.head != "linear"


@dataclass(frozen=True)
class RunConfig:
    """One model of an experiment: a name and the pipeline keys it changes."""

    name: str
    set: dict = field(default_factory=dict)  # dotted key -> value, e.g. {"train.method" = "pseudo-ce"}
    label: str = ""  # row name in tables (default: name)


@dataclass(frozen=True)
class ExperimentConfig:
    """How an experiment file's [[runs]] are repeated: each run is trained once per seed
    (train.seed), and tables show the mean ± std over seeds, so differences can be told from noise."""

    seeds: list[Seed] = field(default_factory=lambda: [0])


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
    # The dotted-key overrides it was loaded with (CLI --set): its [[runs]] variants keep them,
    # and error messages that suggest a command repeat them.
    overrides: dict[str, Any] = field(default_factory=dict, compare=False)

    def partition(self, name: str) -> PartitionConfig:
        for p in self.partitions:
            if p.name == name:
                return p
        raise ConfigError(
            f"{self.source}: no [[partitions]] entry named {name!r} "
            f"(have: {[p.name for p in self.partitions]})"
        )

    @property
    def labelled(self) -> bool:
        """Whether a 2D teacher can label the dataset (its scenes have camera views): the
        labels and refine stages run, and methods that train on pseudo-labels can."""
        return DATASETS[self.dataset.name].views

    @property
    def has_text(self) -> bool:
        """Whether the store will hold class text embeddings (what a text head, train.head = "text" or "dot-text", needs)."""
        return self.labelled and LABELERS[self.labels.labeler].has_text(self.labels)


SECTIONS = {"dataset": DatasetConfig, "store": StoreConfig, "ingest": IngestConfig, "labels": LabelsConfig,
            "refine": RefineConfig, "train": TrainConfig, "experiment": ExperimentConfig}
LISTS = ("partitions", "runs")  # arrays of tables ([[partitions]], [[runs]])


# --------------------------------------------------------------------------------------------
# Reading: the file, its base chain, the overrides, and where every value came from
# --------------------------------------------------------------------------------------------
KeyPath = tuple[str | int, ...]  # a key's place in the raw tables, e.g. ("partitions", 0, "k")


def shown(path: KeyPath) -> str:
    """A key as messages show it: 'partitions[0].k'."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def _leaves(table: dict, prefix: KeyPath = ()) -> list[KeyPath]:
    """Every key of `table` whose value is not a table (arrays of tables count as one value)."""
    out: list[KeyPath] = []
    for key, value in table.items():
        out += _leaves(value, (*prefix, key)) if isinstance(value, dict) else [(*prefix, key)]
    return out


def _set_origin(origins: dict[KeyPath, str], path: KeyPath, origin: str) -> None:
    """`path` now comes from `origin`, and so does everything below it."""
    for known in [p for p in origins if p[: len(path)] == path]:
        del origins[known]
    origins[path] = origin


def _merge(base: dict, over: dict) -> dict:
    """`over` laid on `base`: tables merge key by key, everything else (arrays included) replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_raw(source: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, dict[KeyPath, str]]:
    """The file's tables, laid over those of its `base = "other.toml"` (relative to the file),
    and the file each value came from."""
    if not source.is_file():
        raise ConfigError(f"{source}: pipeline file not found (see pipelines/ for examples)")
    try:
        raw = tomllib.loads(source.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: malformed TOML: {e}") from None
    base = raw.pop("base", None)
    if base is None:
        return raw, {path: str(source) for path in _leaves(raw)}
    if not isinstance(base, str):
        raise ConfigError(f"{source}: 'base' must be the path of another pipeline file")
    base_path = (source.parent / base).resolve()
    if base_path in seen:
        raise ConfigError(f"{source}: 'base' chain loops back to {base_path}")
    base_raw, origins = _read_raw(base_path, (*seen, source.resolve()))
    for path in _leaves(raw):
        _set_origin(origins, path, str(source))
    return _merge(base_raw, raw), origins


def _entry_index(entries: list, part: str, path: KeyPath, origin: str) -> int:
    """The position of a [[partitions]] / [[runs]] entry named in a dotted key: its index, its
    name (a partition's defaults to its method), or the method of the only entry using it."""
    tables = [e if isinstance(e, dict) else {} for e in entries]
    if part.isdigit() and int(part) < len(entries):
        return int(part)
    for field in ("name", "method"):
        found = [i for i, e in enumerate(tables) if e.get(field, e.get("method")) == part]
        if len(found) == 1:
            return found[0]
    names = [e.get("name", e.get("method")) for e in tables]
    raise ConfigError(f"{origin}: '{shown(path)}' has no entry {part!r}: give its position (0..{len(entries) - 1}), "
                      f"its name ({', '.join(map(str, names))}) or the method of the only entry using it")


def _override(raw: dict, origins: dict[KeyPath, str], dotted: str, value: Any, origin: str) -> None:
    """Set `dotted` (e.g. "train.epochs", "partitions.0.k", "partitions.felzenszwalb.k") in `raw`."""
    container: Any = raw
    path: KeyPath = ()
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        key: str | int = _entry_index(container, part, path, origin) if isinstance(container, list) else part
        path = (*path, key)
        if i == len(parts) - 1:
            container[key] = value
            break
        if isinstance(container, dict) and key not in container:
            container[key] = {}
        container = container[key]
        if not isinstance(container, (dict, list)):
            raise ConfigError(f"{origin}: cannot override '{dotted}': '{shown(path)}' is not a table")
    _set_origin(origins, path, origin)


# --------------------------------------------------------------------------------------------
# Checking and building
# --------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


class _Loader:
    """Builds a Pipeline from raw tables; every error names where the offending value came from."""

    def __init__(self, source: Path, origins: dict[KeyPath, str], run: str | None = None):
        self.source, self.origins = source, origins
        self.suffix = f" (in [[runs]] {run!r})" if run is not None else ""

    def origin(self, path: KeyPath) -> str:
        """The file (or --set) that gave the value at `path`."""
        return next((self.origins[path[:n]] for n in range(len(path), 0, -1) if path[:n] in self.origins),
                    str(self.source))

    def fail(self, path: KeyPath, text: str, *others: KeyPath) -> NoReturn:
        """`text` prefixed with where the value at `path` came from; where the problem is between
        several keys (`others` too), with the --set among them if one was given."""
        origins = [self.origin(path)] + [o for p in (path, *others)
                                         for o in [self.origin(p), *(o for k, o in self.origins.items() if k[:len(p)] == p)]]
        raise ConfigError(f"{next((o for o in origins if '--set' in o), origins[0])}: {text}{self.suffix}")

    def bad(self, path: KeyPath, value: Any, what: str) -> NoReturn:
        self.fail(path, f"'{shown(path)}' = {value!r} {what}")

    def failer(self, prefix: KeyPath):
        """The `fail(key, message, *others)` a registry's check gets: keys dotted below `prefix`
        (`others`: the keys the problem is with), message starting with "= value"."""
        def fail(key: str, message: str, *others: str) -> NoReturn:
            path = (*prefix, *key.split("."))
            self.fail(path, f"'{shown(path)}' {message}", *[(*prefix, *o.split(".")) for o in others])
        return fail

    def value(self, value: Any, tp: Any, path: KeyPath) -> Any:
        """`value` checked against a field's type (int widened to float) and its range or choices."""
        origin = typing.get_origin(tp)
        if origin is Annotated:
            base, *constraints = typing.get_args(tp)
            value = self.value(value, base, path)
            for constraint in constraints:
                if problem := constraint.problem(value):
                    self.bad(path, value, problem)
            return value
        if origin in (typing.Union, types.UnionType):
            for option in typing.get_args(tp):
                try:
                    return self.value(value, option, path)
                except ConfigError:
                    continue
            self.bad(path, value, f"must be {' or '.join(_type_name(o) for o in typing.get_args(tp))}")
        if origin is dict or tp is dict:
            if not isinstance(value, dict):
                self.fail(path, f"'{shown(path)}' must be a table")
            return value
        if origin is list:
            (item_tp,) = typing.get_args(tp)
            if not isinstance(value, list):
                self.bad(path, value, f"must be a list of {_type_name(item_tp)}")
            return [self.value(v, item_tp, (*path, i)) for i, v in enumerate(value)]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                self.fail(path, f"'{shown(path)}' must be a table ([{shown(path)}])")
            return self.build(tp, value, path)
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if tp is bool and not isinstance(value, bool):
            self.bad(path, value, "must be true or false")
        if tp in (int, float) and isinstance(value, bool):
            self.bad(path, value, f"must be {tp.__name__}")
        if tp is Any or isinstance(value, tp):
            return value
        self.bad(path, value, f"must be {_type_name(tp)}, not {type(value).__name__}")

    def build(self, cls: type, table: dict, path: KeyPath) -> Any:
        hints = typing.get_type_hints(cls, include_extras=True)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(table) - set(names))
        if unknown:
            self.fail((*path, unknown[0]),
                      f"unknown key '{shown((*path, unknown[0]))}' (known keys: {', '.join(sorted(names))})")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in table:
                kwargs[f.name] = self.value(table[f.name], hints[f.name], (*path, f.name))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.fail(path, f"missing required key '{shown((*path, f.name))}'")
        return cls(**kwargs)

    def choice(self, registry: dict, name: Any, path: KeyPath, advice: str = "") -> Any:
        """The registry entry `name` chooses, or one error listing the known names (and `advice`)."""
        if not isinstance(name, str) or name not in registry:
            self.bad(path, name, f"is not one of {', '.join(registry)}" + (f"; {advice}" if advice else ""))
        return registry[name]

    def section(self, raw: dict, key: str) -> Any:
        table = raw.get(key, {})
        if not isinstance(table, dict):
            self.fail((key,), f"'{key}' must be a table ([{key}])")
        return self.build(SECTIONS[key], table, (key,))

    def entries(self, raw: dict, key: str) -> list:
        entries = raw.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            self.fail((key,), f"'{key}' must be an array of tables ([[{key}]])")
        return entries

    def partition(self, entry: dict, index: int) -> PartitionConfig:
        path: KeyPath = ("partitions", index)
        if "method" not in entry:
            self.fail(path, f"'{shown(path)}' needs a 'method' ({', '.join(PARTITIONERS)})")
        rest = {k: v for k, v in entry.items() if k not in ("method", "name")}
        method = self.choice(PARTITIONERS, entry["method"], (*path, "method"))
        name = entry.get("name", entry["method"])
        if not isinstance(name, str):
            self.bad((*path, "name"), name, "must be a string")
        params = self.build(method.Params, rest, path)
        method.check(params, self.failer(path))
        return PartitionConfig(name, entry["method"], params)

    def pipeline(self, raw: dict, overrides: dict[str, Any]) -> Pipeline:
        unknown = sorted(set(raw) - set(SECTIONS) - set(LISTS))
        if unknown:
            self.fail((unknown[0],), f"unknown key '{unknown[0]}' (known sections: "
                                     f"{', '.join(sorted([*SECTIONS, *LISTS]))})")
        for required in ("dataset", "store"):
            if required not in raw:
                self.fail((), f"missing section [{required}]")
        dataset = self.dataset(raw)
        partitions = tuple(self.partition(e, i) for i, e in enumerate(self.entries(raw, "partitions")))
        names = [p.name for p in partitions]
        if len(set(names)) != len(names):
            self.fail(("partitions",), f"[[partitions]] names must be unique, got {names}; add name = \"...\"")
        runs = tuple(self.build(RunConfig, r, ("runs", i)) for i, r in enumerate(self.entries(raw, "runs")))
        if len({r.name for r in runs}) != len(runs):
            self.fail(("runs",), f"[[runs]] names must be unique, got {[r.name for r in runs]}")
        pipeline = Pipeline(
            source=self.source, dataset=dataset, store=self.section(raw, "store"),
            ingest=self.section(raw, "ingest"), partitions=partitions, labels=self.section(raw, "labels"),
            refine=self.section(raw, "refine"), train=self.section(raw, "train"), runs=runs,
            experiment=self.section(raw, "experiment"), overrides=dict(overrides),
        )
        self.check(pipeline)
        return pipeline

    def dataset(self, raw: dict) -> DatasetConfig:
        cfg = self.section(raw, "dataset")
        entry = self.choice(DATASETS, cfg.name, ("dataset", "name"), NEW_DATASET)
        for key in raw["dataset"]:
            if key not in GENERIC_DATASET_KEYS and key not in entry.options:
                takers = [name for name, d in DATASETS.items() if key in d.options]
                self.fail(("dataset", key), f"'dataset.{key}' is a key of {' and '.join(takers)}; {cfg.name} "
                                            "scenes take no such key (remove it)", ("dataset", "name"))
        entry.check(cfg, self.failer(("dataset",)))
        if entry.root_env and os.environ.get(entry.root_env):
            cfg = dataclasses.replace(cfg, root=os.environ[entry.root_env])
        return cfg

    def check(self, p: Pipeline) -> None:
        """What one key cannot say alone: choices that need something of the rest of the file."""
        labeler = self.choice(LABELERS, p.labels.labeler, ("labels", "labeler"))
        labeler.check(p.labels, self.failer(("labels",)))
        method = self.choice(METHODS, p.train.method, ("train", "method"))
        if method.pseudo_labels and not p.labelled:
            on_truth = ", ".join(f'"{name}"' for name, m in METHODS.items() if not m.pseudo_labels)
            self.fail(("train", "method"), f"'train.method' = {p.train.method!r} trains on a 2D teacher's pseudo-labels, "
                      f"and {p.dataset.name} scenes have no camera views to label; train.method = {on_truth} trains "
                      "on the per-point labels", ("dataset", "name"))
        method.check(p, self.failer(()))
        if not p.has_text and (p.train.text_head or method.needs_text):
            self.no_text(p)
        seeds = p.experiment.seeds
        if not seeds or len(set(seeds)) < len(seeds):
            self.bad(("experiment", "seeds"), seeds, "must be a non-empty list of distinct seeds")
        if p.refine.visual_weighting and not p.labels.store_features:
            self.fail(("refine", "visual_weighting"),
                      "'refine.visual_weighting' = true weighs votes by per-point CLIP features, but "
                      "'labels.store_features' = false stores none; set labels.store_features = true "
                      "(and re-run the labels stage) or turn visual weighting off", ("labels", "store_features"))
        if p.train.crop_centre != "uniform" and p.train.max_points == 0:
            self.fail(("train", "crop_centre"), f"'train.crop_centre' = {p.train.crop_centre!r} centres the training "
                      "crop, and 'train.max_points' = 0 crops nothing; set train.max_points (the crop's voxels) or "
                      "crop_centre = \"uniform\"", ("train", "max_points"))
        features = p.train.input_features
        if not features or len(set(features)) < len(features):
            self.bad(("train", "input_features"), features, "must be a non-empty list without repeats")
        self.partitions_fit(p)
        names = [x.name for x in p.partitions]
        if names and p.train.partition not in names:
            self.fail(("train", "partition"), f"'train.partition' = {p.train.partition!r} names no [[partitions]] "
                                              f"entry (have {names})", ("partitions",))

    def partitions_fit(self, p: Pipeline) -> None:
        """Each partition method can work on the dataset's scenes: their camera views where it
        reads images, the sensor channels its parameters ask for."""
        dataset = DATASETS[p.dataset.name]
        for i, part in enumerate(p.partitions):
            method = PARTITIONERS[part.method]
            if method.needs_views and not dataset.views:
                self.fail(("partitions", i, "method"), f"'partitions[{i}].method' = {part.method!r} reads the scenes' "
                          f"camera images, and {p.dataset.name} scenes have none; choose another method",
                          ("dataset", "name"))
            missing = [c for c in method.channels(part.params) if c not in dataset.channels]
            if missing:
                self.fail(("partitions", i), f"[[partitions]] {part.name!r} reads the per-point {' and '.join(missing)} "
                          f"of a LiDAR sweep, which {p.dataset.name} scenes lack; choose other parameters",
                          ("partitions", i), ("dataset", "name"))

    def no_text(self, p: Pipeline) -> NoReturn:
        if p.train.text_head:
            path, needs = ("train", "head"), f'train.head = "{p.train.head}"'
        else:
            path, needs = ("train", "method"), f'train.method = "{p.train.method}"'
        if not p.labelled:
            why = f"{p.dataset.name} scenes have no camera views for a 2D teacher to give them"
        else:
            why = f'labels.labeler = "{p.labels.labeler}" has none: {LABELERS[p.labels.labeler].text_fix}'
        others = " or ".join(f'"{n}"' for n, m in METHODS.items() if m.needs_text)
        self.fail(path, f"{needs} needs class text embeddings, and {why}; or train with train.head = \"linear\" "
                        f"(and a train.method other than {others})",
                  ("train", "head"), ("train", "method"), ("labels",), ("dataset", "name"))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _load(source: Path, overrides: dict[str, Any], run: RunConfig | None = None,
          layer: dict[str, Any] | None = None) -> Pipeline:
    """The file, then `overrides` (--set), then a [[runs]] entry's `layer`, checked and built."""
    raw, origins = _read_raw(source)
    for dotted, value in overrides.items():
        _override(raw, origins, dotted, value, f"{source} with --set {format_override(dotted, value)}")
    if run is not None:
        raw.pop("runs", None)  # a run's pipeline is one model
        for dotted, value in (layer or {}).items():
            _override(raw, origins, dotted, value, str(source))
    return _Loader(source, origins, run.name if run else None).pipeline(raw, overrides)


def load_pipeline(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Pipeline:
    """Read and validate a pipeline file; `overrides` maps dotted keys to values (CLI --set)."""
    pipeline = _load(Path(path), dict(overrides or {}))
    for run in pipeline.runs:  # each run's overrides must make a valid pipeline too
        run_pipeline(pipeline, run)
    return pipeline


def run_pipeline(pipeline: Pipeline, run: RunConfig, seed: int | None = None) -> Pipeline:
    """The pipeline of one [[runs]] entry: the overrides `pipeline` was loaded with, then the
    run's, applied; its own out_dir; with `seed`, that training seed and out_dir <run>/seed<seed>."""
    out_dir = Path(pipeline.train.out_dir) / run.name
    extra = {} if seed is None else {"train.seed": seed}
    if seed is not None:
        out_dir = out_dir / f"seed{seed}"
    return _load(pipeline.source, pipeline.overrides, run, {"train.out_dir": str(out_dir), **run.set, **extra})


def params_dict(params: Any) -> dict[str, Any]:
    """Stage parameters as a plain dict (what cache keys and store attributes hold)."""
    return dataclasses.asdict(params)
