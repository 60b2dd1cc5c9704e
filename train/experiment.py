"""Experiments: the [[runs]] of a pipeline file, trained and scored under the same settings,
gathered into one table in the seed paper's format.

Each run is the pipeline with its `set` overrides and its own `train.out_dir`/<run name>, trained
once per seed of `[experiment] seeds` (then in <run name>/seed<k>). A run whose checkpoint
already finished its schedule is not retrained (its evaluation is redone, which is cheap), so an
interrupted experiment continues where it stopped. The table says which differences exceed
twice their standard error over seeds, and whether each model beats the pseudo-labels it
learned from.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from itertools import combinations
from pathlib import Path

import numpy as np

from shared.config import Pipeline, run_pipeline
from shared.errors import ConfigError
from shared.labelers import LABELERS
from shared.metrics import IoUResult, SeedResults, write_tables
from train.engine.loop import fit
from train.reports.evaluate import evaluate, teacher_sentence

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


def noise_sentence(rows: dict[str, SeedResults]) -> str:
    """Which models' mean mIoUs differ by more than twice the standard error of the difference
    (sqrt(s_a^2/n_a + s_b^2/n_b), s = std over seeds), and which are within it."""
    beyond, within = [], []
    for (a, ra), (b, rb) in combinations(rows.items(), 2):
        if len(ra.runs) < 2 or len(rb.runs) < 2:
            continue
        diff = 100 * (ra.miou - rb.miou)
        se = 100 * math.sqrt(ra.std**2 / len(ra.runs) + rb.std**2 / len(rb.runs))
        (beyond if abs(diff) > 2 * se else within).append(f"{a} vs {b}: {diff:+.2f} (2 se = {2 * se:.2f})")
    if not beyond and not within:
        return "One seed per model: the table shows no noise estimate, so no difference in it is established."
    text = "Differences of mean mIoU beyond twice their standard error: " + ("; ".join(beyond) or "none") + "."
    if within:
        text += " Within the noise: " + "; ".join(within) + "."
    return text


def run_experiment(
    pipeline: Pipeline, out_dir: str | Path | None = None, render: int = 2
) -> dict[str, SeedResults]:
    """Train and evaluate every run once per seed of [experiment] seeds; write
    `<out>/table.{md,csv,json}` (mean ± std over seeds) and `<out>/experiment.json`."""
    if not pipeline.runs:
        raise ConfigError(f"{pipeline.source}: an experiment needs [[runs]] entries (see pipelines/*-compare.toml)")
    out = Path(out_dir) if out_dir is not None else report_dir(pipeline)
    seeds = pipeline.experiment.seeds
    rows: dict[str, SeedResults] = {}
    references: list[tuple[str, dict[str, IoUResult]]] = []  # each run's pseudo-label and ceiling rows
    sentences, runs_info = [], []
    for run in pipeline.runs:
        label = run.label or run.name
        networks, seconds = [], []
        for seed in seeds:
            several = len(seeds) > 1
            p = run_pipeline(pipeline, run, seed if several else None)
            log.info("experiment %s: run %s (%s), seed %d", pipeline.source.stem, run.name, run.set, p.train.seed)
            checkpoint = Path(p.train.out_dir) / "last.pt"
            fit(p, resume=checkpoint.exists())
            seconds.append(_training_seconds(Path(p.train.out_dir) / "log.csv"))
            report = out / run.name / (f"seed{seed}" if several else "")
            results = evaluate(p, checkpoint, report, render=render if seed == seeds[0] else 0)
            networks.append(next(iter(results.values())))
            if seed == seeds[0]:  # pseudo-labels and the voxel ceiling do not depend on the training seed
                own = dict(list(results.items())[1:])
        rows[label] = SeedResults(tuple(networks))
        references.append((label, own))
        sentences.append(teacher_sentence(label, rows[label], own))
        runs_info.append({"name": run.name, "label": label, "set": run.set, "seeds": seeds,
                          "train_seconds": round(float(np.mean(seconds)), 1), "mIoU": rows[label].as_dict()["mIoU"],
                          "mIoU_std": rows[label].as_dict()["mIoU_std"], "mIoU_seeds": rows[label].as_dict()["mIoU_seeds"],
                          "reference_mIoU": {k: r.as_dict()["mIoU"] for k, r in own.items()}})
    labeler = pipeline.labels.labeler
    note = f"Pipeline: {pipeline.source}; labeler: {labeler}" + (
        f" ({labeler}: {LABELERS[labeler].note})" if LABELERS[labeler].note else ""
    ) + (f"; {pipeline.train.epochs} epochs per model, {len(seeds)} training seed{'s' if len(seeds) > 1 else ''} "
         f"{seeds}: model rows show the mean mIoU ± its std over seeds and per-class means.")
    verdict = noise_sentence(rows)
    paths = write_tables({**rows, **reference_rows(references)}, out / "table", f"{note}\n\n{verdict}\n\n"
                         + " ".join(sentences))
    (out / "experiment.json").write_text(json.dumps({
        "pipeline": str(pipeline.source), "labeler": labeler, "dataset": pipeline.dataset.name,
        "epochs": pipeline.train.epochs, "seeds": seeds, "runs": runs_info, "noise": verdict, "teacher": sentences,
        "command": f"python -m preprocess run {pipeline.source} && python -m train experiment {pipeline.source}",
    }, indent=2))
    log.info("wrote %s", paths[0])
    return rows
