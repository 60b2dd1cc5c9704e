"""Seconds per scene of every partition of the ablation pipelines, sets from 2D masks included,
on the generated rooms and on scene-0916's keyframes (the seed's "3 s vs 22 s" comparison).

Run: `.venv/bin/python benchmarks/bench_mask_sets.py [--rooms data/synthetic] [--keyframes 5]`.
Each dataset is preprocessed (ingest and partitions only: no pseudo-labels, so no CLIP weights
are needed) into a fresh store in a temporary folder with one Dask worker, then the stages'
recorded seconds are printed per method (`python -m preprocess cost`). The masks row covers
decoding the images, SLIC, projection with occlusion and merging; a precomputed model's own
cost (SAM's) is not in it. Felzenszwalb's first scene includes Numba's compilation where the
cache is cold: read the median.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from preprocess.pipeline import run
from preprocess.reports import processing_cost
from shared.config import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HICL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def measure(pipeline_file: Path, overrides: dict, label: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = load_pipeline(pipeline_file, {**overrides, "store.path": str(Path(tmp) / "s.zarr")})
        summary = run(pipeline, ("ingest", "partitions"), workers=1, progress=False)
        if summary.failures:
            print(summary.describe())
        print(f"\n## {label}\n")
        print(processing_cost(pipeline, Path(tmp) / "cost"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", default=str(ROOT / "data" / "synthetic"), help="generated dataset (make synth)")
    parser.add_argument("--nuscenes", default=str(SHARED_DATA / "nuscenes"), help="folder with v1.0-mini/ and samples/")
    parser.add_argument("--keyframes", type=int, default=5, help="scene-0916 keyframes to time")
    args = parser.parse_args(argv)
    if Path(args.rooms, "scannetv2_train.txt").is_file():
        measure(ROOT / "pipelines" / "synthetic-partition.toml", {"dataset.root": args.rooms}, f"generated rooms ({args.rooms})")
    else:
        print(f"{args.rooms}: no generated rooms; make synth")
    if Path(args.nuscenes, "v1.0-mini").is_dir():
        measure(ROOT / "pipelines" / "nuscenes-partition.toml",
                {"dataset.root": args.nuscenes, "dataset.version": "v1.0-mini", "dataset.max_scenes": args.keyframes},
                f"scene-0916, first {args.keyframes} keyframes")
    else:
        print(f"{args.nuscenes}: no nuScenes v1.0-mini tables")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
