"""Training throughput: steps/s, voxels ("points") per second, data-loader time vs step time.

    python benchmarks/bench_train.py                      # synthetic toy store, method gt
    python benchmarks/bench_train.py --method hicl --points 60000 --steps 10
    python benchmarks/bench_train.py --pipeline pipelines/scannet.toml --steps 20   # a real store
    python benchmarks/bench_train.py --scenes 4 --batch 2 --steps 13 --width 0.25   # many epoch boundaries

Loader time is the wait for the next batch (the loader's workers prepare batches while the step
runs, so with workers it shows only what the step does not hide); step time is forward,
backward and optimiser. Runs on CUDA when present, else CPU.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from shared.config import load_pipeline  # noqa: E402
from train.engine.loop import fit  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", help="pipeline TOML of a preprocessed store (default: a synthetic one)")
    p.add_argument("--method", default="gt")
    p.add_argument("--points", type=int, default=40000, help="points per synthetic scene")
    p.add_argument("--scenes", type=int, default=5)
    p.add_argument("--voxel", type=float, default=0.02)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--amp", default="auto", help="train.amp: auto (bf16 on GPUs that have it, off on CPU), off, fp16, bf16")
    p.add_argument("--backend", default="auto", help="train.backend: auto, torch, spconv, torchsparse")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"train.batch_size": args.batch, "train.num_workers": args.workers, "train.width": args.width,
                     "train.voxel_size": args.voxel, "train.method": args.method, "train.epochs": 1000,
                     "train.out_dir": str(Path(tmp) / "run"), "train.checkpoint_every": 10**9,
                     "train.amp": args.amp, "train.backend": args.backend}
        if args.pipeline:
            path = Path(args.pipeline)
        else:
            from toy_store import make_toy_store

            path = make_toy_store(Path(tmp), scenes=args.scenes + 1, points=args.points, method=args.method)
        fit(load_pipeline(path, overrides), max_steps=args.steps)
        with (Path(tmp) / "run" / "log.csv").open() as f:
            logged = list(csv.DictReader(f))
    rows = logged[1:]  # the first step pays for start-up
    # The first step of each later epoch (its row's epoch differs from the previous row's).
    starts = np.array([float(b["data_s"]) for a, b in zip(logged, logged[1:]) if a["epoch"] != b["epoch"]])
    data = np.array([float(r["data_s"]) for r in rows])
    step = np.array([float(r["step_s"]) for r in rows])
    pts = np.array([float(r["points_per_s"]) for r in rows])
    print(f"method {args.method}, batch {args.batch}, workers {args.workers}, width {args.width}, "
          f"voxel {args.voxel}, amp {args.amp}, backend {args.backend}, steps timed {len(rows)}")
    print(f"steps/s        {1.0 / (data + step).mean():.3f}")
    print(f"points/s       {pts.mean():.0f}  (voxels through the network, all ranks)")
    print(f"loader wait s  {data.mean():.4f} (median {np.median(data):.4f})")
    if len(starts):
        print(f"  at epoch starts {starts.mean():.4f} (max {starts.max():.4f}, {len(starts)} epoch starts)")
    print(f"step time s    {step.mean():.4f} (median {np.median(step):.4f})")


if __name__ == "__main__":
    main()
