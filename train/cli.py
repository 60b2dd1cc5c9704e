"""`python -m train fit|eval PIPELINE.toml ...`: argument parsing and clear errors at the boundary."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from shared.cli import parse_overrides
from shared.config import AMP_SETTINGS, SPARSE_BACKENDS, load_pipeline
from shared.errors import ConfigError, UserError

log = logging.getLogger("train")


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _seeds(text: str) -> list[int]:
    try:
        return [int(n) for n in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds expects integers separated by commas, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_text in (("fit", "train the pipeline's [train] method"), ("eval", "score a checkpoint on val"),
                            ("experiment", "train and score every [[runs]] entry; one table")):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("pipeline", help="pipeline TOML file (see pipelines/)")
        s.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                       help="override a pipeline key, e.g. --set train.epochs=30 (repeatable)")
        s.add_argument("--backend", choices=SPARSE_BACKENDS, help="sparse-conv backend (default: train.backend)")
        s.add_argument("--amp", choices=AMP_SETTINGS, help="mixed precision (default: train.amp)")
    fit = sub.choices["fit"]
    fit.add_argument("--resume", action="store_true", help="continue from <train.out_dir>/last.pt if present")
    fit.add_argument("--max-steps", type=int, help="stop after this many steps (the schedule still spans all epochs)")
    ev = sub.choices["eval"]
    ev.add_argument("--checkpoint", help="checkpoint file (default <train.out_dir>/last.pt)")
    ev.add_argument("--out", help="report folder (default <train.out_dir>/eval)")
    ev.add_argument("--render", type=int, default=4, help="scenes to render as PLY and top-down PNG")
    at = sub.add_parser("attention", help="correlation of a query point with two scenes (seed Fig. 2)")
    at.add_argument("pipeline")
    at.add_argument("--set", action="append", metavar="KEY=VALUE", default=[])
    at.add_argument("--backend", choices=SPARSE_BACKENDS)
    at.add_argument("--amp", choices=AMP_SETTINGS)
    at.add_argument("--checkpoint", help="checkpoint file (default <train.out_dir>/last.pt)")
    at.add_argument("--scene", type=int, default=0, help="index of the query scene in the val split")
    at.add_argument("--other", type=int, default=1, help="index of the other scene in the val split")
    at.add_argument("--point", type=int, help="query point index (default: the central chair point)")
    at.add_argument("--out", default="reports/figures", help="folder for attention.png")
    for name in ("eval", "attention"):
        sub.choices[name].add_argument("--run", help="use the [[runs]] entry of this name (its overrides and its "
                                                     "first seed's out_dir)")
    ex = sub.choices["experiment"]
    ex.add_argument("--out", help="folder for the table (default reports/<pipeline stem>)")
    ex.add_argument("--runs", type=_names, metavar="NAME,...", help="train only these [[runs]] entries (no table)")
    ex.add_argument("--seeds", type=_seeds, metavar="K,...", help="train only these seeds of experiment.seeds (no table)")
    ex.add_argument("--table-only", action="store_true",
                    help="train nothing: gather the table from the recorded runs, naming the missing ones")
    rep = sub.add_parser("report", help="gather every table and figure under reports/ into reports/REPORT.md")
    rep.add_argument("--reports", default="reports", help="folder holding the experiments' outputs")
    rep.add_argument("--readme", help="also put the report between the results markers of this README")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = parse_overrides(getattr(args, "set", []))
    for key in ("backend", "amp"):
        if getattr(args, key, None):
            overrides[f"train.{key}"] = getattr(args, key)
    try:
        if args.command == "report":
            from train.reports.collect import splice_into_readme, write_report_md

            report = write_report_md(args.reports)
            print(f"wrote {report}")
            if args.readme:
                print(f"updated {splice_into_readme(report, args.readme)}")
            return 0
        pipeline = load_pipeline(args.pipeline, overrides)
        if getattr(args, "run", None):
            from shared.config import run_pipeline

            runs = {r.name: r for r in pipeline.runs}
            if args.run not in runs:
                raise ConfigError(f"{pipeline.source}: no [[runs]] entry named {args.run!r} (have {sorted(runs)})")
            pipeline = run_pipeline(pipeline, runs[args.run], pipeline.experiment.seeds[0])
        if args.command == "attention":
            from train.reports.attention import attention_figure

            checkpoint = args.checkpoint or str(Path(pipeline.train.out_dir) / "last.pt")
            out = attention_figure(pipeline, checkpoint, Path(args.out) / "attention.png", args.scene, args.other, args.point)
            print(f"wrote {out}")
        elif args.command == "experiment":
            from train.experiment import gather, run_experiment

            if args.table_only and (args.runs or args.seeds):
                raise ConfigError("--table-only gathers the whole experiment: leave out --runs and --seeds")
            rows = (gather(pipeline, args.out) if args.table_only
                    else run_experiment(pipeline, args.out, runs=args.runs, seeds=args.seeds))
            for name, result in rows.items():
                print(f"{name}: mIoU {100 * result.miou:.2f}")
        elif args.command == "fit":
            from train.engine.loop import fit

            fit(pipeline, resume=args.resume, max_steps=args.max_steps)
        else:
            from train.reports.evaluate import evaluate

            checkpoint = args.checkpoint or str(Path(pipeline.train.out_dir) / "last.pt")
            for name, result in evaluate(pipeline, checkpoint, args.out, args.render).items():
                print(f"{name}: mIoU {100 * result.miou:.2f}")
    except UserError as e:  # anything else is a bug and keeps its traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
