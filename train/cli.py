"""`python -m train fit|eval|experiment|attention PIPELINE.toml ...`, `predict|query|export
CHECKPOINT ...`, `report`: argument parsing and clear errors at the boundary."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from shared.cli import parse_overrides
from shared.config import AMP_SETTINGS, SPARSE_BACKENDS, load_pipeline
from shared.errors import ConfigError, UserError
from train.inference.submission import formats

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
    ev.add_argument("--render", type=int, default=4, help="scenes to write as coloured PLY and oblique renders (PNG)")
    ev.add_argument("--tta", type=int, default=1, help="average the predictions of this many turns about the vertical axis")
    at = sub.add_parser("attention", help="correlation of a query point with two scenes (seed Fig. 2)")
    at.add_argument("pipeline", metavar="SOURCE", help="a pipeline TOML (two of its val scenes) or a checkpoint (with --scans)")
    at.add_argument("--scans", nargs=2, metavar=("SCENE", "OTHER"), help="with a checkpoint: the two scans (any predict input)")
    at.add_argument("--set", action="append", metavar="KEY=VALUE", default=[])
    at.add_argument("--backend", choices=SPARSE_BACKENDS)
    at.add_argument("--amp", choices=AMP_SETTINGS)
    at.add_argument("--checkpoint", help="checkpoint file (default <train.out_dir>/last.pt)")
    at.add_argument("--scene", type=int, default=0, help="index of the query scene in the val split")
    at.add_argument("--other", type=int, default=1, help="index of the other scene in the val split")
    at.add_argument("--point", type=int, help="query point index (default: the central point of --query-class)")
    at.add_argument("--query-class", default="chair", help="ground-truth class of the default query point")
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
    pr = sub.add_parser("predict", help="label new scans (PLY mesh or points, .npy, .pth, ScanNet scene folder, "
                                        "nuScenes .pcd.bin) from a checkpoint alone")
    pr.add_argument("checkpoint", help="a checkpoint `fit` wrote (last.pt or best.pt)")
    pr.add_argument("inputs", nargs="+", metavar="INPUT", help="scan files or folders (folders are searched for scans)")
    pr.add_argument("--out", required=True, help="output folder: <scene>/<scene>.ply, labels.npy, ...")
    pr.add_argument("--format", choices=list(formats()), help="also write the benchmark's submission files")
    pr.add_argument("--split", default="test", help="nuScenes: the evaluation set of the submission (default test)")
    pr.add_argument("--classes", help='open vocabulary: "sofa,lamp,plant" or a file of one name per line (text heads only)')
    pr.add_argument("--probs", action="store_true", help="also write probs.npy (float16 class probabilities per point)")
    pr.add_argument("--features", action="store_true", help="also write features.npy (float16 decoder features per point)")
    pr.add_argument("--render", action="store_true", help="also write <scene>.png: oblique renders of the prediction "
                                                          "(and of the ground truth and the mistakes where the scan has it)")
    qu = sub.add_parser("query", help="per-point similarity of a scan with text phrases (PLY and PNG)")
    qu.add_argument("checkpoint")
    qu.add_argument("scene", help="a scan (any input predict takes)")
    qu.add_argument("phrases", nargs="+", metavar="PHRASE", help='e.g. "a red chair"')
    qu.add_argument("--out", default="query", help="output folder (default ./query)")
    for s in (pr, qu):
        s.add_argument("--tta", type=int, default=1, help="average over this many turns about the vertical axis")
        s.add_argument("--clip-weights", default="", help="a local open_clip checkpoint for the text tower "
                                                          "(default: the weights the model was trained with)")
        s.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA where available)")
        s.add_argument("--backend", choices=SPARSE_BACKENDS, default="auto", help="sparse-conv backend")
    exp = sub.add_parser("export", help="a checkpoint's copy with only what inference needs (to share a model)")
    exp.add_argument("checkpoint")
    exp.add_argument("out", help="the file to write, e.g. model.pt")
    rep = sub.add_parser("report", help="gather every table and figure under reports/ into reports/REPORT.md")
    rep.add_argument("--reports", default="reports", help="folder holding the experiments' outputs")
    rep.add_argument("--readme", help="also put the report between the results markers of this README")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command in ("predict", "query") or (args.command == "attention" and not args.pipeline.endswith(".toml")):
            return run_inference(args)
        overrides = parse_overrides(getattr(args, "set", []))
        for key in ("backend", "amp"):
            if getattr(args, key, None):
                overrides[f"train.{key}"] = getattr(args, key)
        if args.command == "export":
            from train.engine.checkpoint import export_model

            print(f"wrote {export_model(args.checkpoint, args.out)}")
            return 0
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
            from train.inference.model import load_model
            from train.reports.attention import attention_figure, store_scans

            checkpoint = args.checkpoint or str(Path(pipeline.train.out_dir) / "last.pt")
            scan, other = store_scans(pipeline, [args.scene, args.other])
            out = attention_figure(load_model(checkpoint, backend=pipeline.train.backend), scan, other,
                                   Path(args.out) / "attention.png", args.point, args.query_class, pipeline.train.hicl.tau)
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
            for name, result in evaluate(pipeline, checkpoint, args.out, args.render, args.tta).items():
                print(f"{name}: mIoU {100 * result.miou:.2f}, mAcc {100 * result.macc:.2f}, allAcc {100 * result.all_acc:.2f}")
    except UserError as e:  # anything else is a bug and keeps its traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run_inference(args: argparse.Namespace) -> int:
    """predict / query / attention with a checkpoint: no pipeline file. 0 when every input was
    labelled, 1 when some could not be (each said in one line), 2 when nothing could be done."""
    from train.inference.model import load_model

    if args.command == "attention":
        from shared.scans import read_scan
        from train.reports.attention import attention_figure

        if not args.scans:
            raise UserError(f"attention {args.pipeline}: with a checkpoint, name the two scans: --scans SCENE OTHER")
        scan, other = (read_scan(path) for path in args.scans)
        out = attention_figure(load_model(args.pipeline), scan, other, Path(args.out) / "attention.png", args.point,
                               args.query_class)
        print(f"wrote {out}")
        return 0
    model = load_model(args.checkpoint, args.device, args.backend)
    if args.command == "query":
        from train.inference.query import query_scene

        for path in query_scene(model, args.scene, args.phrases, args.out, args.tta, args.clip_weights):
            print(f"wrote {path}")
        return 0
    from train.inference.predict import PredictOptions, parse_classes, predict_files

    options = PredictOptions(benchmark=args.format, classes=parse_classes(args.classes) if args.classes else None,
                             tta=args.tta, probs=args.probs, features=args.features, render=args.render, split=args.split,
                             clip_weights=args.clip_weights)
    done, failed = predict_files(model, args.inputs, args.out, options)
    print(f"labelled {len(done)} of {len(done) + len(failed)} scans into {args.out}"
          + (f"; {len(failed)} skipped (see above)" if failed else ""))
    return 0 if not failed else (1 if done else 2)

