"""Scenes per second of the preprocessing pipeline with 1 and 2 local Dask workers, and each
stage's seconds per scene, on generated rooms; extrapolated to ScanNet's and nuScenes' sizes.

Run: `.venv/bin/python benchmarks/bench_preprocess_scale.py [--scenes 6] [--workers 1,2]`.
The pipeline is pipelines/synthetic.toml (Felzenszwalb, simulated-CLIP labels with features,
refinement) pointed at a temporary dataset and store. For each worker count a local cluster
is started and warmed (imports, Numba's on-disk cache) by one scene per worker into a scratch
store; then the N scenes run into a fresh store. Throughput is N / wall seconds of that run
(scheduling and store I/O included, cluster start-up not). Per-stage seconds are the `seconds`
attributes the stages record in the store: compute only, without reading inputs or writing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from distributed import LocalCluster

from preprocess.synth import generate
from preprocess.pipeline import run
from shared.config import load_pipeline
from shared.schema import read_manifest
from shared.store import Store

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"ScanNet v2 scans": 1_513, "nuScenes keyframes": 34_000}


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())  # other users of a shared machine skew the numbers
    return f"{os.cpu_count()} cores ({model}), {ram:.1f} GiB RAM, load average before the run {load}"


def stage_seconds(store_path: Path) -> dict[str, list[float]]:
    """Seconds each stage recorded per scene, by stage."""
    store = Store(store_path)
    out: dict[str, list[float]] = {"ingest": [], "partitions": [], "labels": [], "refine": []}
    for scene, groups in read_manifest(store).scenes.items():
        for group in groups:
            attrs = store.attrs(scene, group)
            out[attrs["stage"]].append(attrs["seconds"])
    return out


def measure(root: Path, work: Path, scenes: list[str], workers: int) -> tuple[float, dict[str, list[float]]]:
    """(scenes per second, per-stage seconds per scene) of one run on a warmed local cluster."""
    def pipeline(store: Path):
        return load_pipeline(REPO / "pipelines" / "synthetic.toml", {"dataset.root": str(root), "store.path": str(store)})

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        warm = run(pipeline(work / f"warm-{workers}.zarr"), scenes=scenes[:workers], scheduler=cluster.scheduler_address,
                   progress=False)
        assert not warm.failures, warm.describe()
        store = work / f"run-{workers}.zarr"
        start = time.perf_counter()
        summary = run(pipeline(store), scenes=scenes, scheduler=cluster.scheduler_address, progress=False)
        wall = time.perf_counter() - start
    assert not summary.failures, summary.describe()
    return len(scenes) / wall, stage_seconds(store)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--workers", default="1,2", help="comma-separated local cluster sizes")
    parser.add_argument("--resolution", type=float, default=0.06, help="mesh grid spacing of the generated rooms (m)")
    parser.add_argument("--frames", type=int, default=15, help="camera frames per generated room")
    args = parser.parse_args(argv)
    host = machine()

    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        work = Path(tmp)
        scenes = generate(work / "data", scenes=args.scenes, seed=0, resolution=args.resolution, min_vertices=0,
                          frames=args.frames, width=320, height=240)
        results = {int(w): measure(work / "data", work, scenes, int(w)) for w in args.workers.split(",")}
        points = [Store(work / f"run-{next(iter(results))}.zarr").attrs(s, POINTS)["num_points"] for s in scenes]

    print(f"machine: {host}")
    print(f"{len(scenes)} generated rooms, {statistics.mean(points):,.0f} points each on average "
          f"({min(points):,}-{max(points):,}), {args.frames} frames of 320x240; pipelines/synthetic.toml\n")
    print("| workers | scenes/s | s/scene (wall) | speed-up |")
    print("|---:|---:|---:|---:|")
    base = next(iter(results.values()))[0]
    for w, (rate, _) in results.items():
        print(f"| {w} | {rate:.3f} | {1 / rate:.2f} | {rate / base:.2f}x |")

    print("\nper-stage compute seconds per scene (store `seconds` attributes)\n")
    print("| workers | stage | mean s | median s |")
    print("|---:|---|---:|---:|")
    for w, (_, seconds) in results.items():
        for stage, values in seconds.items():
            print(f"| {w} | {stage} | {statistics.mean(values):.3f} | {statistics.median(values):.3f} |")

    print("\nextrapolation at the measured per-scene costs (same scene size; real scenes differ)\n")
    print("| dataset | scenes | workers | hours from scenes/s | hours from stage medians (compute only) |")
    print("|---|---:|---:|---:|---:|")
    for name, n in TARGETS.items():
        for w, (rate, seconds) in results.items():
            per_scene = sum(statistics.median(v) for v in seconds.values())
            print(f"| {name} | {n:,} | {w} | {n / rate / 3600:.2f} | {n * per_scene / w / 3600:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
