"""`python -m train predict CHECKPOINT INPUT... --out DIR`: label new scans from a checkpoint alone.

Per scan, under `<out>/<scene>/`: `<scene>.ply` (the points, or the mesh with its faces,
coloured by predicted class in the model's palette, with a `label` vertex property), and
`labels.npy` (int16 class index per point, into `<out>/classes.txt`), optionally `probs.npy`
(float16 (N, K) class probabilities), `features.npy` (float16 (N, C) decoder features) and
`<scene>.png` (oblique renders of the prediction, with the ground truth and the mistakes where
the scan has ground truth, e.g. a ScanNet scene folder).
`--format scannet|nuscenes` also writes the benchmark's submission files
(train/inference/submission.py). Inputs stream one at a time under a progress bar; a bad one is
one line on stderr and the others are still labelled.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from shared.errors import UserError
from shared.methods import METHODS
from shared.ply import write_ply
from shared.scans import Scan, read_scan, scan_inputs
from shared.viz import colour_labels, palette_for, segmentation_figure
from train.inference.model import TrainedModel
from train.inference.submission import benchmark_ids, formats


@dataclass(frozen=True)
class PredictOptions:
    benchmark: str | None = None  # a `--format` (submission.formats()): also write its submission files
    classes: tuple[str, ...] | None = None  # open-vocabulary: score these names instead of the training classes
    tta: int = 1  # turns about the vertical axis whose probabilities are averaged
    probs: bool = False  # write probs.npy
    features: bool = False  # write features.npy
    render: bool = False  # write <scene>.png: oblique renders of the prediction (and ground truth where the scan has it)
    split: str = "test"  # nuScenes: the evaluation set the submission is for
    clip_weights: str = ""  # a local open_clip checkpoint for --classes (else the one the model recorded)


def parse_classes(value: str) -> tuple[str, ...]:
    """Class names from "sofa,lamp,plant" or from a file of one name per line ('#' comments)."""
    path = Path(value)
    if path.is_file():
        names = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    else:
        names = [name.strip() for name in value.split(",")]
    names = [n for n in names if n]
    if not names or len(set(names)) != len(names):
        raise UserError(f"--classes {value!r}: give distinct class names, comma-separated or one per line in a file")
    return tuple(names)


def predict_files(model: TrainedModel, inputs: list[str], out: str | Path, options: PredictOptions = PredictOptions()
                  ) -> tuple[list[Path], list[str]]:
    """Label every scan of `inputs` (files and folders, see shared/scans.py); returns the scene
    folders written and one line per input that could not be labelled."""
    out = Path(out)
    classes = options.classes or model.classes
    text = model.embed(list(options.classes), options.clip_weights) if options.classes else None
    submission = formats()[options.benchmark] if options.benchmark else None
    ids = benchmark_ids(options.benchmark, classes) if options.benchmark else None
    palette = palette_for(classes, model.classes, model.palette)
    out.mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("".join(f"{i} {name} {r} {g} {b}\n" for i, (name, (r, g, b)) in enumerate(zip(classes, palette))))
    done, failed, names = [], [], set()
    bar = tqdm(scan_inputs(inputs), desc="predict", unit="scan", dynamic_ncols=True)
    for path in bar:
        try:
            scan = read_scan(path)
            bar.set_postfix_str(f"{scan.name}: {len(scan.xyz):,} points")
            prediction = model.predict_scan(scan, options.tta, text, classes)
            name = _unique(scan.name, names)
            folder = out / name
            labels = prediction.labels
            write_ply(folder / f"{name}.ply", scan.xyz, colour_labels(labels, palette), scan.faces, label=labels.astype(np.int32))
            np.save(folder / "labels.npy", labels.astype(np.int16))
            if options.probs:
                np.save(folder / "probs.npy", prediction.probs.astype(np.float16))
            if options.features:
                np.save(folder / "features.npy", model.features_scan(scan, options.tta).astype(np.float16))
            if options.render:
                render(folder / f"{name}.png", scan, labels, classes, palette, model.normal_knn)
            if submission is not None:
                submission.write(out / options.benchmark, scan, labels, ids, options.split)
            done.append(folder)
        except UserError as e:
            failed.append(f"skipped {path}: {e}")
            tqdm.write(failed[-1], file=sys.stderr)
        except torch.cuda.OutOfMemoryError:
            failed.append(f"skipped {path}: out of GPU memory; predict it on the CPU (CUDA_VISIBLE_DEVICES=) or with a coarser model")
            tqdm.write(failed[-1], file=sys.stderr)
            torch.cuda.empty_cache()
    bar.close()
    if submission is not None and done:
        submission.finish(out / options.benchmark, options.split, use_external=METHODS[model.method].pseudo_labels)
    return done, failed


def render(path: Path, scan: Scan, labels: np.ndarray, classes: tuple[str, ...], palette: np.ndarray, knn: int) -> Path:
    """The scan's colours and prediction as oblique renders; its ground truth and the mistakes
    too where the scan has ground truth (matched to the predicted classes by name)."""
    gt = None
    if scan.gt is not None:
        to_predicted = np.array([classes.index(n) if n in classes else -1 for n in scan.gt_classes] + [-1])
        gt = to_predicted[scan.gt]  # -1 (no class) indexes the appended -1
    shown = scan if scan.faces is not None or scan.kind == "sweep" else scan.with_normals(knn)
    return segmentation_figure(path, scan.xyz, labels, classes, palette, scan.faces, shown.normal, scan.rgb, gt, title=scan.name)


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or `name-2`, `name-3`, ... when scans of the same name came before."""
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name}-{n}"
    taken.add(unique)
    return unique
