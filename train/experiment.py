"""Experiments: the [[runs]] of a pipeline file, trained and scored under the same settings,
gathered into one table in the seed paper's format.

Each run is the pipeline with its `set` overrides, trained once per seed of `[experiment] seeds`
in `train.out_dir`/<run>/seed<k>. Each finished (run, seed) is recorded (train/run_record.py)
under reports/<experiment>/<run>/seed<k>/ beside its evaluation report, and those files are
committed: a (run, seed) whose record carries the hash of what would be trained is never trained
again, with or without its checkpoint. So an experiment outlives the stretch of work it ran in:
a subset of it (`runs`, `seeds`) runs in each process, and `table_only` gathers the table from
the records afterwards, naming what is missing.

The table tests differences between models with Welch's t-test over seeds and each model
against the pseudo-labels it learned from with a one-sample t-test (shared/metrics.py), and
plots the learning curves where the runs validated during training (train.eval_every_epochs).
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from shared.config import Pipeline, RunConfig, run_pipeline
from shared.errors import ConfigError, MissingData
from shared.labelers import LABELERS
from shared.metrics import IoUResult, SeedResults, p_text, welch_p, write_tables
from train.engine.loop import CHECKPOINT, VAL_LOG, fit
from train.reports.collect import epochs_phrase
from train.reports.curves import CURVES, plot_learning_curves
from train.reports.evaluate import evaluate, teacher_sentence
from train.run_record import RECORD, RunRecord, code_version, config_hash, find_record, hashed_settings, read_curve

log = logging.getLogger("train")

HASH_FILE = "config_hash"  # in a run's out_dir: the hash its checkpoint was trained under
SIGNIFICANCE = 0.05


def report_dir(pipeline: Pipeline) -> Path:
    """Where an experiment's tables go: reports/<pipeline file stem>/."""
    return Path("reports") / pipeline.source.stem


def record_folder(out: Path, run: RunConfig, seed: int) -> Path:
    """Where one (run, seed) of the experiment reported in `out` is evaluated and recorded."""
    return out / run.name / f"seed{seed}"


def _training_log(log_csv: Path) -> tuple[float, int]:
    """Wall time the run spent training (loader wait + steps) and its last step, from its log: a
    resumed or re-scored run reports its real cost, not the seconds of the last invocation."""
    with log_csv.open() as f:
        rows = list(csv.DictReader(f))
    return sum(float(r["data_s"]) + float(r["step_s"]) for r in rows), int(rows[-1]["step"]) if rows else 0


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
    """Every pair of models' difference of mean mIoU with the two-sided p-value of Welch's
    t-test over their seeds, split at p < SIGNIFICANCE."""
    beyond, within = [], []
    for (a, ra), (b, rb) in combinations(rows.items(), 2):
        if len(ra.runs) < 2 or len(rb.runs) < 2:
            continue
        p = welch_p(ra.mious, rb.mious)
        text = f"{a} vs {b}: {100 * (ra.miou - rb.miou):+.2f} ({p_text(p)})"
        (beyond if p < SIGNIFICANCE else within).append(text)
    if not beyond and not within:
        several = [name for name, r in rows.items() if len(r.runs) >= 2]
        if not several:
            return "One seed per model: the table shows no noise estimate, so no difference in it is established."
        return (f"Only {several[0]} has two seeds or more: no other row has a noise estimate, so no "
                "difference between models is established.")
    return (f"Differences of mean mIoU (Welch's t-test over seeds, two-sided) with p < {SIGNIFICANCE}: "
            + ("; ".join(beyond) or "none") + "." + (" Not established: " + "; ".join(within) + "." if within else ""))


def select(pipeline: Pipeline, runs: list[str] | None, seeds: list[int] | None) -> tuple[list[RunConfig], list[int]]:
    """The [[runs]] entries and seeds named (all where None), in the pipeline's order."""
    by_name = {r.name: r for r in pipeline.runs}
    unknown = [n for n in runs or [] if n not in by_name]
    if unknown:
        raise ConfigError(f"{pipeline.source}: no [[runs]] entry named {unknown[0]!r} (have {list(by_name)})")
    extra = [s for s in seeds or [] if s not in pipeline.experiment.seeds]
    if extra:
        raise ConfigError(f"{pipeline.source}: seed {extra[0]} is not in experiment.seeds = "
                          f"{pipeline.experiment.seeds}; add it there (or --set experiment.seeds=[...])")
    chosen_runs = [r for r in pipeline.runs if runs is None or r.name in runs]
    return chosen_runs, [s for s in pipeline.experiment.seeds if seeds is None or s in seeds]


def train_run(pipeline: Pipeline, run: RunConfig, seed: int, out: Path, render: int) -> RunRecord:
    """The record of one (run, seed): reused where one with its config hash exists (in this
    experiment's folder or another experiment's), else trained (resuming a checkpoint trained
    under the same hash), evaluated and recorded."""
    p = run_pipeline(pipeline, run, seed)
    wanted = config_hash(p)
    folder = record_folder(out, run, seed)
    found = find_record(folder, wanted, out.parent)
    if found is not None:
        record, where = found
        if where != folder:
            shutil.copytree(where, folder, dirs_exist_ok=True)
        log.info("experiment %s: %s seed %d reused from %s (config hash %s)", out.name, run.name, seed, where, wanted)
        return record
    run_dir = Path(p.train.out_dir)
    trained_as = run_dir / HASH_FILE
    resume = (run_dir / CHECKPOINT).is_file() and trained_as.is_file() and trained_as.read_text().strip() == wanted
    if (run_dir / CHECKPOINT).is_file() and not resume:
        log.warning("%s was trained under other settings (config hash differs): training %s seed %d afresh",
                    run_dir / CHECKPOINT, run.name, seed)
    log.info("experiment %s: run %s (%s), seed %d, config hash %s", out.name, run.name, run.set, seed, wanted)
    run_dir.mkdir(parents=True, exist_ok=True)
    trained_as.write_text(wanted + "\n")
    fit(p, resume=resume)
    seconds, steps = _training_log(run_dir / "log.csv")
    rows = evaluate(p, run_dir / CHECKPOINT, folder, render=render)
    curve = read_curve(run_dir / VAL_LOG)
    network = next(iter(rows.values()))
    if not curve or curve[-1]["step"] < steps:  # the curve ends with the final evaluation
        curve.append({"step": steps, "epoch": p.train.epochs, "mIoU": round(100 * network.miou, 2)})
    record = RunRecord(wanted, code_version(), round(seconds, 1), steps, curve, rows, hashed_settings(p))
    log.info("wrote %s", record.write(folder))
    return record


def run_experiment(pipeline: Pipeline, out_dir: str | Path | None = None, render: int = 1,
                   runs: list[str] | None = None, seeds: list[int] | None = None) -> dict[str, SeedResults]:
    """Train (or reuse) the chosen runs and seeds (all where None); with the whole experiment,
    write its table (`gather`). The first seed of each run renders `render` val scenes (the
    report shows the first). Returns the model rows of what was chosen."""
    if not pipeline.runs:
        raise ConfigError(f"{pipeline.source}: an experiment needs [[runs]] entries (see pipelines/*-compare.toml)")
    out = Path(out_dir) if out_dir is not None else report_dir(pipeline)
    chosen_runs, chosen_seeds = select(pipeline, runs, seeds)
    first = pipeline.experiment.seeds[0]  # renders come from the same seed whichever process trains it
    rows = {}
    for run in chosen_runs:
        records = [train_run(pipeline, run, seed, out, render if seed == first else 0) for seed in chosen_seeds]
        rows[run.label or run.name] = SeedResults(tuple(r.network for r in records))
    if runs is None and seeds is None:
        gather(pipeline, out)
    else:
        log.info("trained a part of %s; gather the table with: python -m train experiment %s --table-only",
                 out.name, pipeline.source)
    return rows


@dataclass
class Gathered:
    """What the records of an experiment hold, run by run."""

    records: dict[str, list[tuple[int, RunRecord]]] = field(default_factory=dict)  # run name -> (seed, record)
    missing: list[str] = field(default_factory=list)  # "run seed k" (no record)
    stale: list[str] = field(default_factory=list)  # "run seed k" (a record of other settings)
    verified: bool = True  # False where no store was there to compute the hashes


def collect_records(pipeline: Pipeline, out: Path) -> Gathered:
    """Every (run, seed)'s record, checked against the hash it would be trained under now where
    the store is there to compute it (without one, the records are taken as they are). A
    (run, seed) without a record of that hash in `out` takes another experiment's, as training
    would (`train_run`), without copying it."""
    found = Gathered()
    for run in pipeline.runs:
        found.records[run.name] = []
        for seed in pipeline.experiment.seeds:
            folder = record_folder(out, run, seed)
            wanted = None
            if found.verified:
                try:
                    wanted = config_hash(run_pipeline(pipeline, run, seed))
                except MissingData as e:
                    log.warning("config hashes not checked: %s", e)
                    found.verified = False
            if wanted is None:
                record = RunRecord.read(folder)
            else:
                elsewhere = find_record(folder, wanted, out.parent)
                record = None if elsewhere is None else elsewhere[0]
                if record is None and (folder / RECORD).is_file():
                    found.stale.append(f"{run.name} seed {seed}")
                    continue
            if record is None:
                found.missing.append(f"{run.name} seed {seed}")
                continue
            found.records[run.name].append((seed, record))
    return found


def gather(pipeline: Pipeline, out_dir: str | Path | None = None) -> dict[str, SeedResults]:
    """Write `<out>/table.{md,csv,json}` (mean ± std over seeds, Welch and one-sample p-values),
    `<out>/experiment.json` and, where runs validated during training, `<out>/learning_curves.png`,
    from the committed records alone; the note names the runs missing or stale."""
    out = Path(out_dir) if out_dir is not None else report_dir(pipeline)
    found = collect_records(pipeline, out)
    labels = {run.name: run.label or run.name for run in pipeline.runs}
    rows: dict[str, SeedResults] = {}
    references: list[tuple[str, dict[str, IoUResult]]] = []
    sentences, runs_info, curves = [], [], {}
    for run in pipeline.runs:
        records = found.records[run.name]
        if not records:
            continue
        label = labels[run.name]
        row = rows[label] = SeedResults(tuple(r.network for _, r in records))
        own = records[0][1].references  # pseudo-labels and the ceiling do not depend on the training seed
        references.append((label, own))
        sentences.append(teacher_sentence(label, row, own))
        curves[label] = [r.curve for _, r in records]
        summary = row.as_dict()
        runs_info.append({"name": run.name, "label": label, "set": run.set, "seeds": [s for s, _ in records],
                          "train_seconds": round(float(np.mean([r.train_seconds for _, r in records])), 1),
                          "steps": records[0][1].steps, "epochs": records[0][1].settings["epochs"],
                          "mIoU": summary["mIoU"], "mIoU_std": summary["mIoU_std"], "mIoU_seeds": summary["mIoU_seeds"],
                          "reference_mIoU": {k: r.as_dict()["mIoU"] for k, r in own.items()},
                          "config_hash": {s: r.config_hash for s, r in records},
                          "code_version": {s: r.code_version for s, r in records}})
    if not rows:
        raise MissingData(f"{out}: no finished run of {pipeline.source} is recorded there"
                          + (f" ({len(found.stale)} stale)" if found.stale else "")
                          + f"; run python -m train experiment {pipeline.source}")
    seeds = pipeline.experiment.seeds
    labeler = pipeline.labels.labeler
    note = f"Pipeline: {pipeline.source}; labeler: {labeler}" + (
        f" ({labeler}: {LABELERS[labeler].note})" if LABELERS[labeler].note else ""
    ) + (f"; {epochs_phrase(pipeline.train.epochs, runs_info)}, "
         f"{len(seeds)} training seed{'s' if len(seeds) > 1 else ''} "
         f"{seeds}: model rows show the mean mIoU ± its std over seeds and per-class means.")
    gaps = _gaps_sentence(found)
    verdict = noise_sentence(rows)
    teacher = ("Against the pseudo-labels (one-sample t-test of the seeds' mIoUs against the labels' score, "
               "two-sided): " if any(len(r.runs) > 1 for r in rows.values()) else "") + " ".join(sentences)
    all_rows = {**rows, **reference_rows(references)}
    paths = write_tables(all_rows, out / "table", "\n\n".join(x for x in (note, gaps, verdict, teacher) if x))
    lines = {name: 100 * r.miou for name, r in all_rows.items()
             if name not in rows and "seen points only" not in name}
    if any(len(c) > 1 for seeds_curves in curves.values() for c in seeds_curves):
        paths.append(plot_learning_curves(curves, lines, out / CURVES,
                                          f"{pipeline.source.stem}: val mIoU (mean ± std over seeds)"))
    (out / "experiment.json").write_text(json.dumps({
        "pipeline": str(pipeline.source), "labeler": labeler, "dataset": pipeline.dataset.name,
        "epochs": pipeline.train.epochs, "seeds": seeds, "runs": runs_info, "missing": found.missing,
        "stale": found.stale, "hashes_checked": found.verified, "noise": verdict, "teacher": sentences,
        "command": f"python -m preprocess run {pipeline.source} && python -m train experiment {pipeline.source}",
    }, indent=2))
    for path in paths:
        log.info("wrote %s", path)
    return rows


def _gaps_sentence(found: Gathered) -> str:
    """What the table lacks, so a partial table never passes for a whole one."""
    parts = []
    if found.missing:
        parts.append("Not trained yet (no record): " + ", ".join(found.missing) + ".")
    if found.stale:
        parts.append("Left out, recorded under other settings (config hash differs): " + ", ".join(found.stale) + ".")
    if not found.verified:
        parts.append("Config hashes not checked (no store to compute them from): the records are taken as they are.")
    return " ".join(parts)
