"""`python -m preprocess <command>`: run a pipeline's stages, generate the default dataset,
segment a mesh like ScanNet's tool, draw partitions, measure partition and pseudo-label quality,
compile the kernels ahead of a run."""

from __future__ import annotations

import argparse
import logging
import sys

# Imports live in the commands that need them: `segment` and `synth` start without the
# pipeline's modules (profile with `python -X importtime -m preprocess ...`).


def _pipeline(args: argparse.Namespace):
    """The pipeline file named on the command line, with its --set overrides."""
    from shared.cli import parse_overrides
    from shared.config import load_pipeline

    return load_pipeline(args.pipeline, parse_overrides(args.set))


def _run(args: argparse.Namespace) -> int:
    from preprocess.pipeline import STAGES, run

    pipeline = _pipeline(args)
    only = tuple(s.strip() for s in args.stages.split(",")) if args.stages else STAGES
    scenes = [s.strip() for s in args.scenes.split(",")] if args.scenes else None
    summary = run(pipeline, only, scenes, scheduler=args.scheduler, workers=args.workers, progress=not args.quiet)
    print(summary.describe())
    return 1 if summary.failures else 0


def _synth(argv: list[str]) -> int:
    from preprocess.synth.cli import main

    return main(argv)


def _segment(argv: list[str]) -> int:
    from preprocess.segment_cli import main

    return main(argv)


def _compile(argv: list[str]) -> int:
    from preprocess.warmup import main

    return main(argv)


def _show_partitions(args: argparse.Namespace) -> int:
    from preprocess.reports import show_partitions

    pipeline = _pipeline(args)
    out = show_partitions(pipeline, args.scene, args.out)
    print(f"wrote {out}")
    return 0


def _label_quality(args: argparse.Namespace) -> int:
    from preprocess.reports import label_quality

    pipeline = _pipeline(args)
    print(label_quality(pipeline, args.out, args.split))
    return 0


def _partition_quality(args: argparse.Namespace) -> int:
    from preprocess.reports import partition_quality

    pipeline = _pipeline(args)
    print(partition_quality(pipeline, args.out, neighbours=args.neighbours))
    return 0


def _cost(args: argparse.Namespace) -> int:
    from preprocess.reports import processing_cost

    pipeline = _pipeline(args)
    print(processing_cost(pipeline, args.out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m preprocess", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the preprocessing stages of a pipeline file")
    p.add_argument("pipeline", help="pipeline TOML, e.g. pipelines/scannet.toml")
    p.add_argument("--stages", help="comma-separated subset of ingest,partitions,labels,refine (default: all)")
    p.add_argument("--scenes", help="comma-separated scene ids (default: all of the dataset's splits)")
    p.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786), or 'inline' to run in this process")
    p.add_argument("--workers", type=int, help="local cluster size (default: one per core)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a pipeline key, e.g. labels.frame_skip=10")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)

    sub.add_parser("synth", help="generate the embedded default dataset: --out DIR [--scenes 10] [--seed 0] "
                   "[--frames 30] [--resolution 0.04] [--voxel 0.025] [--val-fraction 0.2]", add_help=False)

    sub.add_parser("segment", help="ScanNet's segmentator: MESH.ply [--k 0.01] [--min-verts 20] [--out PATH]", add_help=False)

    sub.add_parser("compile", help="compile every Numba kernel into the on-disk cache (make setup runs it) [--no-aot]",
                   add_help=False)

    p = sub.add_parser("show-partitions", help="draw a scene's stored partitions side by side (seed Fig. 1)")
    p.add_argument("pipeline")
    p.add_argument("--scene", help="scene id (default: the first in the store)")
    p.add_argument("--out", default="reports/partitions.png")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=_show_partitions)

    p = sub.add_parser("label-quality", help="pseudo-label statistics against ground truth: score AUC, "
                       "labelled share of ignore-gt points, mIoU raw and refined (stored scores, unit weights)")
    p.add_argument("pipeline")
    p.add_argument("--out", default="reports/label_quality", help="folder for the tables")
    p.add_argument("--split", choices=("all", "train", "val"), default="all", help="scenes to score (default: both splits)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=_label_quality)

    p = sub.add_parser("partition-quality", help="each partition's sets, seconds, purity, under-segmentation and "
                       "boundary recall against the stored instances (nuScenes: 3D boxes)")
    p.add_argument("pipeline")
    p.add_argument("--out", default="reports/partition_quality", help="folder for partition_quality.md / .json")
    p.add_argument("--neighbours", type=int, default=10, help="k of the k-NN graph boundaries are taken over (point clouds)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=_partition_quality)

    p = sub.add_parser("cost", help="seconds per scene of every stage, from the store's recorded timings")
    p.add_argument("pipeline")
    p.add_argument("--out", default="reports/cost", help="folder for cost.md / cost.json")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=_cost)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # Dask's INFO chatter stays off
    logging.getLogger("preprocess").setLevel(logging.INFO)
    if argv and argv[0] == "segment":
        return _segment(argv[1:])
    if argv and argv[0] == "synth":
        return _synth(argv[1:])
    if argv and argv[0] == "compile":
        return _compile(argv[1:])
    args = build_parser().parse_args(argv)
    from shared.errors import UserError

    try:
        return args.func(args)
    except UserError as e:  # anything else is a bug and keeps its traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
