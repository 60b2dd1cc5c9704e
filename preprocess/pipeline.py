"""Run a pipeline's preprocessing stages over every scene on a Dask cluster.

One task per (stage, scene); a scene's partition and label tasks wait for its ingest task,
and refinement waits for both. Workers read raw data and write the store themselves, so only
scene ids and small `StageResult`s travel through the scheduler. Progress is one bar per
stage; at the end a summary says, per stage, how many results were computed and how many
came from the cache.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from tqdm import tqdm

from preprocess import stages
from preprocess.datasets.registry import list_scenes
from shared.config import Pipeline
from shared.store import Store

STAGES = ("ingest", "partitions", "labels", "refine")
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
        for r in self.failures:
            lines.append(f"FAILED {r.stage} {r.scene}: {r.error}")
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

    if scheduler:
        return Client(scheduler)
    n = workers or max(1, min(os.cpu_count() or 1, 8))
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster)


def _as_completed(client, futures):
    if isinstance(client, _Inline):
        return client.as_completed(futures)
    from distributed import as_completed

    return as_completed(futures)


def run(
    pipeline: Pipeline,
    only: Iterable[str] = STAGES,
    scenes: list[str] | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> RunSummary:
    """Run the selected stages for every scene (or `scenes`) and return what each did."""
    only = tuple(only)
    unknown = sorted(set(only) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r}: choose from {', '.join(STAGES)}")
    scene_ids = scenes if scenes is not None else list_scenes(pipeline.dataset)
    if not scene_ids:
        raise ValueError(f"{pipeline.dataset.root}: no scenes found for dataset {pipeline.dataset.name!r}")
    store = Store(pipeline.store.path)
    store.clean_temporaries()

    client = make_client(scheduler, workers)
    summary = RunSummary()
    try:
        futures: dict[Any, str] = {}
        if "labels" in only:
            futures[client.submit(stages.store_text_embeddings, pipeline, pure=False)] = "text"
        for scene_id in scene_ids:
            ingested = client.submit(stages.ingest, pipeline, scene_id, pure=False)
            futures[ingested] = "ingest"
            by_name = {}
            if "partitions" in only or "refine" in only:
                for partition in pipeline.partitions:
                    f = client.submit(stages.partitions, pipeline, scene_id, ingested, partition, pure=False)
                    futures[f] = "partitions"
                    by_name[partition.name] = f
            if "labels" in only or "refine" in only:
                labelled = client.submit(stages.labels, pipeline, scene_id, ingested, pure=False)
                futures[labelled] = "labels"
                if "refine" in only and pipeline.refine.partition in by_name:
                    f = client.submit(
                        stages.refine, pipeline, scene_id, labelled, by_name[pipeline.refine.partition], pure=False
                    )
                    futures[f] = "refine"
        totals = Counter(futures.values())
        bars = {
            stage: tqdm(total=n, desc=f"{stage:<10}", unit="scene", position=i, leave=True,
                        disable=not progress, file=sys.stderr)
            for i, (stage, n) in enumerate(totals.items())
        }
        for future in _as_completed(client, list(futures)):
            result = future.result()
            summary.results.append(result)
            bar = bars[futures[future]]
            bar.update(1)
            if not result.ok:
                bar.set_postfix_str(f"{len(summary.failures)} failed", refresh=False)
        for bar in bars.values():
            bar.close()
    finally:
        client.close()
    return summary
