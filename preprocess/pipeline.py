"""Run a pipeline's preprocessing stages over every scene on a Dask cluster.

One task per (stage, scene, what it computes); a scene's partition and label tasks wait for its
ingest task, and refinement (one per [[partitions]] entry) waits for both. For an experiment
the tasks cover what every [[runs]] entry needs, each computed once. At the end the store's
manifest records the splits and every complete output, which is all the trainer reads. Workers read raw data and write the store themselves, so only
scene ids and small `StageResult`s travel through the scheduler. Progress is one bar per
stage; at the end a summary says, per stage, how many results were computed and how many
came from the cache.

A task whose future is lost (its worker died under it and Dask gave up with KilledWorker, or
the future was cancelled) is submitted again, lost upstream tasks first; stages skip what the
store already holds, so running one twice is safe.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from tqdm import tqdm

from preprocess import stages
from preprocess.datasets.registry import split_of
from shared import schema
from shared.config import PartitionConfig, Pipeline, params_dict, run_pipeline
from shared.errors import ConfigError, DatasetError
from shared.store import Store

STAGES = ("ingest", "partitions", "labels", "refine")  # "text" runs with labels
RESUBMITS = 2  # times a task with a lost future is submitted again before it counts as failed
LOST = ("error", "cancelled", "lost")  # Dask future states after which a task must be resubmitted
log = logging.getLogger("preprocess")


@dataclass
class RunSummary:
    results: list[stages.StageResult] = field(default_factory=list)

    @property
    def failures(self) -> list[stages.StageResult]:
        return [r for r in self.results if not r.ok]

    def counts(self) -> dict[str, Counter]:
        table: dict[str, Counter] = defaultdict(Counter)
        for r in self.results:
            table[r.stage]["failed" if not r.ok else "computed" if r.computed else "cached"] += 1
        return table

    def describe(self) -> str:
        lines = [f"{'stage':<12}{'computed':>10}{'cached':>8}{'failed':>8}"]
        for stage, c in self.counts().items():
            lines.append(f"{stage:<12}{c['computed']:>10}{c['cached']:>8}{c['failed']:>8}")
        skipped = [r for r in self.failures if r.error.startswith(stages.SKIPPED)]
        for r in self.failures:
            if not r.error.startswith(stages.SKIPPED):  # one row per cause; what waited on it is counted below
                lines.append(f"FAILED {r.stage} {r.scene}: {r.error}")
        if skipped:
            lines.append(f"({len(skipped)} tasks that needed a failed one were skipped)")
        return "\n".join(lines)


class _Inline:
    """A stand-in for a Dask client that runs each task at once in this process
    (`--scheduler inline`: for debugging with pdb, and for tests of the stage logic)."""

    class _Done:
        def __init__(self, value):
            self.value = value

        def result(self):
            return self.value

    def submit(self, fn: Callable, *args, **kwargs):
        args = [a.value if isinstance(a, self._Done) else a for a in args]
        kwargs.pop("pure", None)
        return self._Done(fn(*args, **kwargs))

    def as_completed(self, futures):
        return iter(futures)

    def close(self):
        pass


def make_client(scheduler: str | None, workers: int | None):
    """A Dask client: an existing cluster (`tcp://host:8786`), `inline`, or a local cluster."""
    scheduler = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if scheduler == "inline":
        return _Inline()
    from distributed import Client, LocalCluster

    # distributed sets its loggers to INFO on import: their start/stop chatter buries the summary
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if scheduler:
        return Client(scheduler)
    n = workers or max(1, min(os.cpu_count() or 1, 8))
    # Each worker runs one task at a time; the cores left to it go to its kernels' own threads
    # (Numba's parallel cut pursuit, Embree, torch), not to every worker at once.
    threads = str(max(1, (os.cpu_count() or 1) // n))
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.WARNING, env={"NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads})
    return Client(cluster)


def _as_completed(client, futures):
    if isinstance(client, _Inline):
        return client.as_completed(futures)
    from distributed import as_completed

    return as_completed(futures)


@dataclass(frozen=True)
class _Upstream:
    """Stands, in a task's arguments, for the result of task number `task`."""

    task: int


@dataclass(frozen=True)
class _Task:
    stage: str
    scene: str
    fn: Callable
    args: tuple

    @property
    def upstream(self) -> list[int]:
        return [a.task for a in self.args if isinstance(a, _Upstream)]


class _Driver:
    """Submits the tasks, hands each result to `record` once, and resubmits lost tasks."""

    def __init__(self, client, tasks: list[_Task], record: Callable[[_Task, stages.StageResult], None]):
        self.client, self.tasks, self.record = client, tasks, record
        self.current: dict[int, Any] = {}  # task -> its live future
        self.owner: dict[Any, int] = {}  # future -> task
        self.tries: Counter = Counter()
        self.recorded: set[int] = set()
        self.failed: set[int] = set()
        self.queue = _as_completed(client, [self._submit(i) for i in range(len(tasks))])

    def _submit(self, i: int):
        args = [self.current[a.task] if isinstance(a, _Upstream) else a for a in self.tasks[i].args]
        future = self.client.submit(self.tasks[i].fn, *args, pure=False)
        self.current[i], self.owner[future] = future, i
        return future

    def run(self) -> None:
        for future in self.queue:
            i = self.owner.pop(future)
            if i in self.recorded or self.current[i] is not future:
                continue  # superseded by a resubmission
            try:
                result = future.result()
            except Exception as e:  # the future was lost, not the stage: stages return their errors
                self._lost(i, f"{type(e).__name__}: {e}")
            else:
                self._record(i, result)

    def _lost(self, i: int, reason: str) -> None:
        task = self.tasks[i]
        for u in task.upstream:
            if u not in self.failed and self.current[u].status in LOST:
                self._lost(u, f"its future was {self.current[u].status}")  # dependants fail with it
            if u in self.failed:
                self.failed.add(i)
                self._record(i, stages.StageResult(task.stage, task.scene, error=f"{stages.SKIPPED} {self.tasks[u].stage} failed"))
                return
        if self.tries[i] >= RESUBMITS:
            self.failed.add(i)
            self._record(i, stages.StageResult(task.stage, task.scene, error=f"{reason} (submitted {RESUBMITS + 1} times)"))
            return
        self.tries[i] += 1
        log.warning("%s %s: %s; submitting it again", task.stage, task.scene or "-", reason.splitlines()[0])
        self.queue.add(self._submit(i))

    def _record(self, i: int, result: stages.StageResult) -> None:
        if i not in self.recorded:
            self.recorded.add(i)
            self.record(self.tasks[i], result)



def _variants(pipeline: Pipeline) -> list[Pipeline]:
    """The pipeline and, for an experiment, each [[runs]] entry's version of it: preprocessing
    makes what every run will train on (a run that changes refine.rho gets its own refinement)."""
    return [pipeline] + [run_pipeline(pipeline, r) for r in pipeline.runs]


def check(pipeline: Pipeline, only: tuple[str, ...]) -> dict[str, list[str]]:
    """Everything that would fail for every scene, found before any scene is processed: the
    dataset's splits (missing split files), and a labeler that cannot work here (CLIP weights
    neither cached nor downloadable, no precomputed label maps at all, a bad text-embeddings
    file). Returns the splits; raises a one-line UserError."""
    splits = split_of(pipeline.dataset)
    if not splits["train"] and not splits["val"]:
        raise DatasetError(f"{pipeline.dataset.root}: no scenes found for dataset {pipeline.dataset.name!r}")
    if ("labels" in only or "refine" in only) and pipeline.labelled:
        from preprocess.labels.checks import check_labeler

        for variant in {_labels_identity(v): v for v in _variants(pipeline)}.values():
            check_labeler(variant)
    return splits


def run(
    pipeline: Pipeline,
    only: Iterable[str] = STAGES,
    scenes: list[str] | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> RunSummary:
    """Run the selected stages for every scene (or `scenes`), record what was made in the
    store's manifest, and return what each task did."""
    only = tuple(only)
    unknown = sorted(set(only) - set(STAGES))
    if unknown:
        raise ConfigError(f"unknown stage {unknown[0]!r}: choose from {', '.join(STAGES)}")
    splits = check(pipeline, only)
    scene_ids = scenes if scenes is not None else list(dict.fromkeys(splits["train"] + splits["val"]))
    store = Store(pipeline.store.path)
    store.clean_temporaries()

    summary = RunSummary()
    tasks: list[_Task] = []
    added: dict[tuple, _Upstream] = {}

    def add(stage: str, scene: str, identity: Any, fn: Callable, *args) -> _Upstream:
        """One task per (stage, scene, what it computes), however many variants ask for it."""
        if (stage, scene, identity) not in added:
            tasks.append(_Task(stage, scene, fn, (pipeline_of[identity], scene, *args)))
            added[stage, scene, identity] = _Upstream(len(tasks) - 1)
        return added[stage, scene, identity]

    variants = _variants(pipeline)
    pipeline_of: dict[Any, Pipeline] = {}
    for v in variants:  # identities: what a task's result depends on besides the scene's points
        pipeline_of.setdefault("ingest", v)
        pipeline_of.setdefault(_labels_identity(v), v)
        for part in v.partitions:
            pipeline_of.setdefault(_partition_identity(part), v)
            pipeline_of.setdefault((_labels_identity(v), _partition_identity(part), _json(v.refine)), v)
    # a dataset without camera views has no 2D teacher: its pipelines train on ground truth
    labelling = ("labels" in only or "refine" in only) and pipeline.labelled
    if labelling:
        for v in variants:
            if v.has_text:  # a precomputed teacher without embeddings trains a linear head
                add("text", schema.TEXT_SCENE, _labels_identity(v), stages.store_text_embeddings)
    for scene_id in scene_ids:
        ingested = add("ingest", scene_id, "ingest", stages.ingest)
        for v in variants:
            by_name = {}
            if "partitions" in only or "refine" in only:
                for part in v.partitions:
                    by_name[part.name] = add("partitions", scene_id, _partition_identity(part), stages.partitions,
                                             ingested, part)
            if labelling:
                labelled = add("labels", scene_id, _labels_identity(v), stages.labels, ingested)
            if "refine" in only and labelling:
                for part in v.partitions:
                    identity = (_labels_identity(v), _partition_identity(part), _json(v.refine))
                    add("refine", scene_id, identity, stages.refine, labelled, by_name[part.name])
    totals = Counter(task.stage for task in tasks)
    bars = {
        stage: tqdm(total=n, desc=f"{stage:<10}", unit="scene", position=i, leave=True,
                    disable=not progress, file=sys.stderr)
        for i, (stage, n) in enumerate(totals.items())
    }

    def record(task: _Task, result: stages.StageResult) -> None:
        summary.results.append(result)
        bars[task.stage].update(1)
        if not result.ok:
            bars[task.stage].set_postfix_str(f"{len(summary.failures)} failed", refresh=False)

    client = make_client(scheduler, workers)
    try:
        _Driver(client, tasks, record).run()
    finally:
        for bar in bars.values():
            bar.close()
        client.close()
        schema.record_outputs(store, pipeline, splits, [(r.scene, r.output) for r in summary.results if r.ok])
    return summary


def _json(params: Any) -> str:
    return json.dumps(params_dict(params), sort_keys=True)


def _partition_identity(partition: PartitionConfig) -> tuple[str, str]:
    return partition.method, _json(partition.params)


def _labels_identity(pipeline: Pipeline) -> str:
    return json.dumps(schema.labels_params(pipeline), sort_keys=True)
