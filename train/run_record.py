"""A finished run's record: what an experiment commits so that a run outlives the machine and
the stretch of work it ran in (only committed files persist here).

`record.json` sits beside the run's evaluation report, reports/<experiment>/<run>/seed<k>/, and
holds the run's config hash, the code version it ran on, its training seconds, its learning
curve and the exact counts of every row of its evaluation. `train experiment` reuses a run whose
record carries the hash of the run it would train, from the record alone: no checkpoint needed.

The hash covers everything that changes the model or its scores: the train section after the
overrides (seed included) less the keys that only say where or with how many loader processes
(NOT_HASHED) and the keys added after records were committed where they hold the value that
trains as before them (ADDED_KEYS), the store keys of every scene of both splits (points, pseudo-labels, the training
partition, refined labels: each key already hashes its stage's parameters and inputs,
shared/schema.py), and TRAINER_VERSION.
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass
from functools import reduce
from pathlib import Path
from typing import Any, Callable

from shared.config import Pipeline
from shared.errors import MissingData
from shared.metrics import IoUResult
from shared.schema import Layout
from train.engine.dataset import open_store

# Bump when the trainer's code changes what a run learns or how it is scored (a loss, the
# sampling, the network, the evaluation): every committed record then stops matching and is
# trained again, as STAGE_VERSIONS does for the store's outputs.
TRAINER_VERSION = 1
# Train keys that change no model: a path, loader processes (samples are a function of seed,
# epoch and index: train/engine/dataset.py), how often a checkpoint is written, and the partition's
# name (its store key is hashed instead: the threshold ablation's "k0.01" is the default's sets).
NOT_HASHED = frozenset({"out_dir", "num_workers", "checkpoint_every", "partition"})
# Train keys (dotted below [train]) added after records were committed, each with its neutral
# value: the one that trains exactly as the trainer did before the key existed. At that value a
# key stays out of the hash, so the records made before it (and runs training now) still match;
# at any other value it is hashed as every key is. A new train key goes here, at a neutral
# default; a TRAINER_VERSION bump, which restarts every record, may empty this.
ADDED_KEYS: dict[str, Any] = {"crop_centre": "uniform"}
RECORD = "record.json"


def _group(lookup: Callable[[], str]) -> str | None:
    """A store group the run may read, or None where the store has no such stage (the gt check's
    store has neither pseudo-labels nor partitions, so no run on it can have read them)."""
    try:
        return lookup()
    except MissingData:
        return None


def store_keys(pipeline: Pipeline) -> dict[str, list[list[str | None]]]:
    """Per split, [scene, points key, pseudo-label group, partition group, refined group] of
    every scene: the groups' names end in their keys. Raises MissingData without a store."""
    store = open_store(pipeline)
    layout = Layout(store, pipeline)
    partition = pipeline.train.partition if pipeline.partitions else None
    keys = {}
    for split in ("train", "val"):
        keys[split] = [[scene, layout.points_key(scene), _group(lambda: layout.labels(scene)),
                        *((_group(lambda: layout.partition(scene, partition)),
                           _group(lambda: layout.refined(scene, partition))) if partition else (None, None))]
                       for scene in layout.split(split)]
    return keys


def hashed_settings(pipeline: Pipeline) -> dict[str, Any]:
    """The train section as the hash sees it (a record keeps it, so a stale one shows why)."""
    settings = {k: v for k, v in asdict(pipeline.train).items() if k not in NOT_HASHED}
    for dotted, neutral in ADDED_KEYS.items():
        *sections, key = dotted.split(".")
        table = reduce(lambda t, name: t[name], sections, settings)
        if table[key] == neutral:
            del table[key]
    return settings


def config_hash(pipeline: Pipeline) -> str:
    """The run's identity: equal hashes, equal model and scores (up to the device's arithmetic)."""
    spec = {"trainer": TRAINER_VERSION, "train": hashed_settings(pipeline), "store": store_keys(pipeline)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_version() -> str:
    """The git commit the code runs from, "+dirty" when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + ("+dirty" if dirty else "")


def read_curve(val_log: Path) -> list[dict[str, float]]:
    """The trainer's validation log (train/engine/loop.py VAL_LOG) as points, mIoU in percent."""
    if not val_log.is_file():
        return []
    with val_log.open(newline="") as f:
        return [{"step": int(r["step"]), "epoch": int(r["epoch"]), "mIoU": round(100 * float(r["mIoU"]), 2)}
                for r in csv.DictReader(f)]


@dataclass(frozen=True)
class RunRecord:
    """One finished (run, seed): its evaluation rows (the network first, then the pseudo-labels
    and the voxel ceiling it was scored beside), its curve and where it came from."""

    config_hash: str
    code_version: str
    train_seconds: float
    steps: int
    curve: list[dict[str, float]]  # {"step", "epoch", "mIoU" (%)}, ending with the final evaluation
    rows: dict[str, IoUResult]
    settings: dict[str, Any]  # hashed_settings() of the run

    @property
    def network(self) -> IoUResult:
        return next(iter(self.rows.values()))

    @property
    def references(self) -> dict[str, IoUResult]:
        return dict(list(self.rows.items())[1:])

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / RECORD
        data = {**asdict(self), "trainer_version": TRAINER_VERSION,
                "classes": list(self.network.names), "rows": {n: r.counts() for n, r in self.rows.items()}}
        # one line per key: the counts stay a few kB and a diff shows which key changed
        path.write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in data.items())
                        + "\n}\n")
        return path

    @classmethod
    def read(cls, folder: Path) -> RunRecord | None:
        path = folder / RECORD
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        names = tuple(data["classes"])
        rows = {n: IoUResult.from_counts(names, c["confusion"], c["missed"]) for n, c in data["rows"].items()}
        return cls(data["config_hash"], data["code_version"], data["train_seconds"], data["steps"], data["curve"],
                   rows, data["settings"])


def find_record(folder: Path, wanted: str, search: Path) -> tuple[RunRecord, Path] | None:
    """A record with hash `wanted`: the one in `folder`, else any under `search`/*/*/seed*/ (the
    same run committed by another experiment: the learning-curve runs are the comparison's)."""
    for candidate in (folder, *sorted(p.parent for p in search.glob(f"*/*/seed*/{RECORD}"))):
        record = RunRecord.read(candidate)
        if record is not None and record.config_hash == wanted:
            return record, candidate
    return None
