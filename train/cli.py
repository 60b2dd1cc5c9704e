"""`python -m train fit|eval PIPELINE.toml ...`: argument parsing and clear errors at the boundary."""

from __future__ import annotations

import argparse
import logging
import sys

from shared.cli import parse_overrides
from shared.config import ConfigError, load_pipeline

log = logging.getLogger("train")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_text in (("fit", "train the pipeline's [train] method"), ("eval", "score a checkpoint on val")):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("pipeline", help="pipeline TOML file (see pipelines/)")
        s.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                       help="override a pipeline key, e.g. --set train.epochs=30 (repeatable)")
        s.add_argument("--backend", choices=("auto", "torch", "torchsparse"),
                       help="sparse-conv backend (default: train.backend)")
    fit = sub.choices["fit"]
    fit.add_argument("--resume", action="store_true", help="continue from <train.out_dir>/last.pt if present")
    fit.add_argument("--max-steps", type=int, help="stop after this many steps (the schedule still spans all epochs)")
    ev = sub.choices["eval"]
    ev.add_argument("--checkpoint", required=True, help="checkpoint file (e.g. runs/scannet/last.pt)")
    ev.add_argument("--out", help="report folder (default <train.out_dir>/eval)")
    ev.add_argument("--render", type=int, default=4, help="scenes to render as PLY and top-down PNG")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = parse_overrides(args.set)
    if args.backend:
        overrides["train.backend"] = args.backend
    # Imported here so `--help` and config errors do not pay for torch's import.
    from train.data import MissingData

    try:
        pipeline = load_pipeline(args.pipeline, overrides)
        if args.command == "fit":
            from train.loop import fit

            fit(pipeline, resume=args.resume, max_steps=args.max_steps)
        else:
            from train.evaluate import evaluate

            for name, result in evaluate(pipeline, args.checkpoint, args.out, args.render).items():
                print(f"{name}: mIoU {100 * result.miou:.2f}")
    except (ConfigError, MissingData, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
