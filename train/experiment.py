"""Experiments: the [[runs]] of a pipeline file, trained and scored under the same settings,
gathered into one table in the seed paper's format.

Each run is the pipeline with its `set` overrides and its own `train.out_dir`/<run name>. A run
whose checkpoint already finished its schedule is not retrained (its evaluation is redone,
which is cheap), so an interrupted experiment continues where it stopped.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from shared.config import Pipeline, run_pipeline
from shared.errors import ConfigError
from shared.metrics import IoUResult, write_tables

log = logging.getLogger("train")


def report_dir(pipeline: Pipeline) -> Path:
    """Where an experiment's tables go: reports/<pipeline file stem>/."""
    return Path("reports") / pipeline.source.stem


def _training_seconds(log_csv: Path) -> float:
    """Wall time the run spent training (loader wait + steps), from its log: a resumed or
    re-scored run reports its real cost, not the seconds of the last invocation."""
    with log_csv.open() as f:
        return sum(float(r["data_s"]) + float(r["step_s"]) for r in csv.DictReader(f))


def _same(a: IoUResult, b: IoUResult) -> bool:
    return np.array_equal(a.confusion, b.confusion) and np.array_equal(a.iou, b.iou, equal_nan=True)


def reference_rows(per_run: list[tuple[str, dict[str, IoUResult]]]) -> dict[str, IoUResult]:
    """Every run's own reference rows (pseudo-labels, refined labels, voxel ceiling), given as
    (run label, {row name: result}) in run order. Runs whose row is identical share it: the row
    keeps its plain name when every run has the same one, else it names the runs it belongs to
    (in the partition ablation each partition has its own refined labels)."""
    groups: dict[str, list[tuple[list[str], IoUResult]]] = {}
    for label, results in per_run:
        for name, result in results.items():
            entries = groups.setdefault(name, [])
            match = next((members for members, kept in entries if _same(kept, result)), None)
            if match is None:
                entries.append(([label], result))
            else:
                match.append(label)
    rows = {}
    for name, entries in groups.items():
        for members, result in entries:
            shared = len(entries) == 1 and len(members) == len(per_run)
            rows[name if shared else f"{name} [{', '.join(members)}]"] = result
    return rows


def run_experiment(
    pipeline: Pipeline, overrides: dict[str, Any] | None = None, out_dir: str | Path | None = None, render: int = 2
) -> dict[str, IoUResult]:
    """Train and evaluate every run; write `<out>/table.{md,csv,json}` and `<out>/experiment.json`."""
    from train.reports.evaluate import evaluate
    from train.engine.loop import fit

    if not pipeline.runs:
        raise ConfigError(f"{pipeline.source}: an experiment needs [[runs]] entries (see pipelines/*-compare.toml)")
    out = Path(out_dir) if out_dir is not None else report_dir(pipeline)
    rows: dict[str, IoUResult] = {}
    references: list[tuple[str, dict[str, IoUResult]]] = []  # each run's pseudo-label and ceiling rows
    runs_info = []
    for run in pipeline.runs:
        p = run_pipeline(pipeline, run, overrides)
        label = run.label or run.name
        log.info("experiment %s: run %s (%s)", pipeline.source.stem, run.name, run.set)
        checkpoint = Path(p.train.out_dir) / "last.pt"
        fit(p, resume=checkpoint.exists())
        seconds = _training_seconds(Path(p.train.out_dir) / "log.csv")
        results = evaluate(p, checkpoint, out / run.name, render=render)
        network = next(iter(results.values()))
        rows[label] = network
        runs_info.append({"name": run.name, "label": label, "set": run.set, "checkpoint": str(checkpoint),
                          "train_seconds": round(seconds, 1), "mIoU": network.as_dict()["mIoU"],
                          "reference_mIoU": {k: r.as_dict()["mIoU"] for k, r in list(results.items())[1:]}})
        references.append((label, dict(list(results.items())[1:])))
    labeler = pipeline.labels.labeler
    note = f"Pipeline: {pipeline.source}; labeler: {labeler}" + (
        " (simulated-CLIP: ground truth corrupted like MaskCLIP, not real CLIP)" if labeler == "simulated-clip" else ""
    ) + f"; {pipeline.train.epochs} epochs per model."
    paths = write_tables({**rows, **reference_rows(references)}, out / "table", note)
    (out / "experiment.json").write_text(json.dumps({
        "pipeline": str(pipeline.source), "labeler": labeler, "dataset": pipeline.dataset.name,
        "epochs": pipeline.train.epochs, "runs": runs_info,
        "command": f"python -m preprocess run {pipeline.source} && python -m train experiment {pipeline.source}",
    }, indent=2))
    log.info("wrote %s", paths[0])
    return rows
