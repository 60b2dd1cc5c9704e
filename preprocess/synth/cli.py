"""`python -m preprocess synth`: the generator's command line."""

from __future__ import annotations

import argparse

from preprocess.synth.writer import generate


def main(argv: list[str] | None = None) -> int:
    """`python -m preprocess synth --out DIR --scenes N --seed S`."""
    parser = argparse.ArgumentParser(prog="python -m preprocess synth",
                                     description="generate the default dataset (ScanNet v2 layout)")
    parser.add_argument("--out", required=True, help="dataset root to write (scans/ and split files)")
    parser.add_argument("--scenes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--resolution", type=float, default=0.04, help="grid spacing of the generated surfaces in metres")
    parser.add_argument("--voxel", type=float, help="voxel size of the scan's fusion in metres (default: 5/8 of --resolution)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of the scenes in the val split")
    args = parser.parse_args(argv)
    if not 0.0 <= args.val_fraction < 1.0:
        parser.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    ids = generate(args.out, scenes=args.scenes, seed=args.seed, val_fraction=args.val_fraction, frames=args.frames,
                   resolution=args.resolution, voxel=args.voxel)
    print(f"wrote {len(ids)} scenes to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
