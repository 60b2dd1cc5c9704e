"""Preprocessing cost at ScanNet's size: seconds per scene of every stage, and scenes per second
with 1 and 2 Dask workers, on generated rooms of ScanNet's vertex and frame counts.

Run (the full size takes a while; nice it on a shared machine):
    .venv/bin/python benchmarks/bench_preprocess_scale.py [--vertices 150000,500000]
        [--frames 100] [--scenes 2] [--workers 1,2] [--data DIR]

Rooms come from the generator (`python -m preprocess synth`; its scan is fused at 1.2 cm and
decimated to about `--vertices`), with `--frames` camera frames of colour and depth at 640 x 480,
ScanNet's depth size: 100 frames is a ScanNet scan at its every-20th-frame labelling rate. The pipeline is
pipelines/scannet-partition.toml (Felzenszwalb, VCCS, SPG superpoints; 320-px label maps,
features stored, refinement) with the simulated-CLIP labeler in place of MaskCLIP and every
generated frame labelled. Each worker runs one core (NUMBA_NUM_THREADS = OMP_NUM_THREADS = 1)
and loads the compiled kernels before the clock starts (`make setup` compiled them).

Per-stage seconds are what each stage records in the store while computing (reading raw
data included, writing the store not): ingest, each partition, the labeler's 2D inference
(here the simulation: rendering ground truth and corrupting it; with MaskCLIP, the ViT), the
label transfer (depth frames, projection, fusion) and refinement. Throughput is scenes / wall
seconds of the whole run (scheduling and store writes included, cluster start not).

The 2D model itself is measured apart: MaskCLIP's ViT-B/16 on ScanNet-size frames (1296 x 968,
fed at 448 px) on one CPU core, with random weights (open_clip's architecture: the same
arithmetic as CLIP's, which cannot be downloaded here). And `--nuscenes N` runs
pipelines/nuscenes.toml on N keyframes of the shared nuScenes sample (LiDAR sweeps, six
1600 x 900 cameras, MaskCLIP with those random weights) on one one-core worker.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HICL_SHARED_DATA", REPO.parent / "shared" / "data"))
ONE_CORE = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")] \
        if cpuinfo.exists() else []
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())  # other users of a shared machine skew the numbers
    return f"{os.cpu_count()} cores ({names[0] if names else 'unknown CPU'}), {ram:.1f} GiB RAM, load average {load}"


def rooms(root: Path, scenes: int, vertices: int, frames: int) -> list[str]:
    """The generated dataset at root, made unless it is already there."""
    from preprocess.synth import generate

    ids = [f"scene{i:04d}_00" for i in range(scenes)]
    if not all((root / "scans" / s).is_dir() for s in ids) or not (root / "scannetv2_train.txt").is_file():
        start = time.perf_counter()
        ids = generate(root, scenes=scenes, seed=0, vertices=vertices, voxel=0.012, frames=frames, width=640, height=480)
        print(f"generated {scenes} rooms of about {vertices:,} vertices in {time.perf_counter() - start:.0f} s")
    return ids


def pipeline(root: Path, store: Path):
    from shared.config import load_pipeline

    return load_pipeline(REPO / "pipelines" / "scannet-partition.toml", {
        "dataset.name": "synthetic", "dataset.root": str(root), "store.path": str(store),
        "labels.labeler": "simulated-clip", "labels.frame_skip": 1,
    })


def stage_seconds(store_path: Path) -> dict[str, list[float]]:
    """Seconds per scene by stage, as the stages recorded them."""
    from shared.schema import read_manifest
    from shared.store import Store

    store = Store(store_path)
    out: dict[str, list[float]] = defaultdict(list)
    for scene, groups in read_manifest(store).scenes.items():
        for group in groups:
            attrs = store.attrs(scene, group)
            if attrs["stage"] == "partitions":
                out[f"partition: {attrs['method']}"].append(attrs["seconds"])
            elif attrs["stage"] == "labels":
                out["labels: 2D labeler (simulated; excluded)"].append(attrs["labeler_seconds"])
                out["labels: depth, projection, fusion"].append(attrs["transfer_seconds"])
                out["labels: reading the scene"].append(attrs["seconds"] - attrs["labeler_seconds"] - attrs["transfer_seconds"])
            elif attrs["stage"] in ("ingest", "refine"):
                out[{"ingest": "ingest (read, normals)", "refine": "refinement"}[attrs["stage"]]].append(attrs["seconds"])
    return out


def measure(root: Path, work: Path, scenes: list[str], workers: int) -> tuple[float, dict[str, list[float]]]:
    """(scenes per second, seconds per scene by stage) of one run on a local cluster of
    one-core workers whose kernels are loaded."""
    from distributed import Client, LocalCluster

    from preprocess.pipeline import run
    from preprocess.warmup import warm_up

    store = work / f"run-{workers}.zarr"
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      env=ONE_CORE) as cluster, Client(cluster) as client:
        client.run(warm_up)  # each worker loads every kernel from the cache (compiles any missing)
        start = time.perf_counter()
        summary = run(pipeline(root, store), scenes=scenes, scheduler=cluster.scheduler_address, progress=False)
        wall = time.perf_counter() - start
    if summary.failures:
        raise SystemExit(summary.describe())
    return len(scenes) / wall, stage_seconds(store)


def report(vertices: int, points: list[int], frames: int, results: dict[int, tuple[float, dict[str, list[float]]]]) -> None:
    print(f"\n### rooms of {statistics.mean(points):,.0f} vertices ({min(points):,}-{max(points):,}), "
          f"{frames} frames, {len(points)} scenes\n")
    one = results[min(results)][1]
    print("| stage | s/scene (median) | min | max |")
    print("|---|---:|---:|---:|")
    for stage, values in one.items():
        print(f"| {stage} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    pipeline_stages = [s for s in one if "excluded" not in s and not s.startswith("partition: ")]
    default = sum(statistics.median(one[s]) for s in pipeline_stages) + statistics.median(one["partition: felzenszwalb"])
    print(f"| **all but the 2D labeler, Felzenszwalb sets (the default pipeline)** | **{default:.2f}** | | |")
    every = sum(statistics.median(v) for s, v in one.items() if "excluded" not in s)
    print(f"| all but the 2D labeler, all three partitions | {every:.2f} | | |")
    print(f"\n(stage seconds from the {min(results)}-worker run, one core per worker)\n")
    print("| workers | scenes/s | s/scene (wall) | speed-up |")
    print("|---:|---:|---:|---:|")
    base = results[min(results)][0]
    for w, (rate, _) in sorted(results.items()):
        print(f"| {w} | {rate:.4f} | {1 / rate:.1f} | {rate / base:.2f}x |")


def maskclip_seconds_per_frame(frames: int) -> float:
    """Median seconds per ScanNet-size frame of MaskCLIP (ViT-B/16, random weights) on one core."""
    import numpy as np
    import torch

    from preprocess.labels.maskclip import MaskCLIP
    from shared.classes import SCANNET_NAMES
    from shared.labelers import MaskCLIPConfig
    from shared.text_space import load_clip

    torch.set_num_threads(1)
    cfg = MaskCLIPConfig()
    model, tokenizer = load_clip(cfg.model, "", "cpu")  # "": open_clip's random initialisation
    maskclip = MaskCLIP(model, tokenizer, list(SCANNET_NAMES), list(cfg.templates))
    height = round(968 * cfg.input_width / 1296)
    image = np.random.default_rng(0).integers(0, 256, (height, cfg.input_width, 3), np.uint8)
    maskclip.label_images([image], batch_size=1, out_sizes=[(320, 239)], return_features=True)  # warm-up
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        maskclip.label_images([image], batch_size=1, out_sizes=[(320, 239)], return_features=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def nuscenes_seconds(root: Path, keyframes: int, work: Path) -> dict[str, list[float]]:
    """Seconds per keyframe by stage: pipelines/nuscenes.toml on the first `keyframes` samples of
    the shared nuScenes sample, one one-core worker, MaskCLIP with random weights on the CPU."""
    from distributed import Client, LocalCluster

    from preprocess.datasets.registry import list_scenes
    from preprocess.pipeline import run
    from preprocess.warmup import warm_up
    from shared.config import load_pipeline

    nuscenes = load_pipeline(REPO / "pipelines" / "nuscenes.toml", {
        "dataset.root": str(root), "dataset.version": "v1.0-mini", "store.path": str(work / "nuscenes.zarr"),
        "labels.maskclip.pretrained": "", "labels.maskclip.device": "cpu",
    })
    samples = list_scenes(nuscenes.dataset)[:keyframes]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      env=ONE_CORE) as cluster, Client(cluster) as client:
        client.run(warm_up)
        summary = run(nuscenes, scenes=samples, scheduler=cluster.scheduler_address, progress=False)
    if summary.failures:
        raise SystemExit(summary.describe())
    seconds = stage_seconds(work / "nuscenes.zarr")
    seconds["labels: 2D labeler (MaskCLIP, 6 cameras, CPU; excluded)"] = seconds.pop("labels: 2D labeler (simulated; excluded)")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vertices", default="150000,500000", help="comma-separated room sizes (vertices)")
    parser.add_argument("--frames", type=int, default=100, help="camera frames per room (all labelled)")
    parser.add_argument("--scenes", type=int, default=2, help="rooms per size (use >= 2x the largest worker count)")
    parser.add_argument("--workers", default="1,2", help="comma-separated local cluster sizes")
    parser.add_argument("--data", type=Path, help="keep the generated rooms here and reuse them (default: a temporary folder)")
    parser.add_argument("--maskclip-frames", type=int, default=3, help="frames MaskCLIP is timed on (0: skip)")
    parser.add_argument("--nuscenes", type=int, default=4, help="nuScenes keyframes to run (0: skip)")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")

    from shared.schema import POINTS
    from shared.store import Store

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        data = args.data or Path(tmp) / "data"
        for vertices in (int(v) for v in args.vertices.split(",") if v):
            root = data / f"rooms-{vertices}-{args.frames}f"
            scenes = rooms(root, args.scenes, vertices, args.frames)
            work = Path(tmp) / f"work-{vertices}"
            results = {int(w): measure(root, work, scenes, int(w)) for w in args.workers.split(",")}
            store = Store(work / f"run-{min(results)}.zarr")
            report(vertices, [store.attrs(s, POINTS)["num_points"] for s in scenes], args.frames, results)
        if args.maskclip_frames > 0:
            per_frame = maskclip_seconds_per_frame(args.maskclip_frames)
            print(f"\nMaskCLIP ViT-B/16, one 1296 x 968 frame at 448 px, one CPU core: {per_frame:.2f} s "
                  f"(median of {args.maskclip_frames}); {args.frames} frames: {args.frames * per_frame:.0f} s per scan")
        nuscenes = SHARED_DATA / "nuscenes"
        if args.nuscenes > 0 and (nuscenes / "v1.0-mini").is_dir():
            seconds = nuscenes_seconds(nuscenes, args.nuscenes, Path(tmp))
            print(f"\n### nuScenes keyframes (shared sample, {args.nuscenes} keyframes, pipelines/nuscenes.toml)\n")
            print("| stage | s/keyframe (median) | min | max |")
            print("|---|---:|---:|---:|")
            for stage, values in seconds.items():
                print(f"| {stage} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
            rest = sum(statistics.median(v) for s, v in seconds.items() if "excluded" not in s)
            print(f"| **all but the 2D labeler** | **{rest:.2f}** | | |")
        elif args.nuscenes > 0:
            print(f"\nnuScenes: {nuscenes / 'v1.0-mini'} not found, not measured")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
