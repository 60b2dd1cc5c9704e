"""Evaluation: network predictions on voxels, mapped back to every original point, scored on val.

Convention (shared/metrics.py; written into every report): the confusion matrix counts points
whose ground truth is a benchmark class, ignored points dropped first; IoU_c = TP/(TP+FP+FN);
mIoU is the mean over the classes with ground truth among those points, so every row scored on
them averages over the same classes; any other class is "n/a". The pseudo-labels of the same scenes are scored alongside
(raw, and refined by the intra-set vote; over all points, unseen ones counting as misses, and
over the points some view saw), so a report shows what the network added, and so is the voxel
ceiling: the score of the best possible per-voxel prediction at the run's voxel size.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from shared.config import Pipeline
from shared.errors import CheckpointError, MissingData
from shared.metrics import IoUAccumulator, IoUResult, SeedResults, one_sample_p, p_text
from shared.refine import set_labels
from shared.schema import POINTS, class_names, dataset_table
from train.engine.checkpoint import load_checkpoint
from train.engine.dataset import SceneDataset
from train.engine.methods import Method, build_method
from train.inference.model import voxel_turns

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(
    method: Method, dataset: SceneDataset, device: torch.device, tta: int = 1
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(scene index, per-point class prediction (N,), voxel of each point (N,)) for every scene
    of `dataset`, in order: every point gets its voxel's prediction (one fixed point per voxel);
    with `tta` > 1 the class probabilities of that many turns about the vertical axis are
    averaged per point (`voxel_turns`)."""
    model, cfg = method.model, method.cfg
    was_training = model.training
    model.eval()
    try:
        for i in range(len(dataset)):
            data = dataset.read(i)
            probs, first = None, None
            for feats, coords, inverse in voxel_turns(data["xyz"], data["rgb"], data.get("normal"), cfg.input_features,
                                                      cfg.voxel_size, tta):
                x = method.backend.SparseTensor(torch.from_numpy(feats).to(device), torch.from_numpy(coords).to(device))
                with method.precision.autocast():
                    logits = model(x)["logits"]
                p = torch.softmax(logits.float(), dim=1)[torch.from_numpy(inverse).to(device)]
                probs, first = (p, inverse) if probs is None else (probs + p, first)
            yield i, probs.argmax(dim=1).cpu().numpy(), first
    finally:
        model.train(was_training)


def validate(pipeline: Pipeline, method: Method, device: torch.device) -> IoUResult:
    """mIoU of the current network on the val split (used during training)."""
    dataset = SceneDataset(pipeline, "val", with_gt=True, fields=())
    acc = IoUAccumulator(class_names(pipeline))
    for i, pred, _ in predict(method, dataset, device):
        acc.add(pred, dataset.read(i)["gt"])
    return acc.result()


def voxel_ceiling(gt: np.ndarray, inverse: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-point labels of the best per-voxel prediction: every point gets its voxel's most
    common benchmark class (ignored points do not vote; a voxel of ignored points only gets -1).

    A network predicts one class per voxel, so thin things on walls (pictures, windows) that
    share voxels with the wall cap its score below 100%: this is that cap, so reports can tell a
    weak network from a coarse voxel size. It is the refinement's vote with the voxels as sets,
    unit weights and no threshold (ties go to the lower class id).
    """
    return set_labels(gt, np.ones(len(gt)), inverse, num_classes, rho=0.0)[inverse]


def _mismatch(expected: dict, found: dict) -> tuple[list[str], list[str]]:
    """Names missing from a checkpoint, names it has that the network lacks, and names whose
    shapes differ (listed as missing)."""
    missing = sorted(k for k in expected if k not in found or found[k].shape != expected[k].shape)
    return missing, sorted(k for k in found if k not in expected)


def load_method(pipeline: Pipeline, checkpoint: str | Path, dataset: SceneDataset, device: torch.device) -> Method:
    """The pipeline's method with the checkpoint's network weights (for scoring on the store;
    `train.load_model` runs a checkpoint without the pipeline)."""
    state = load_checkpoint(checkpoint)
    method = build_method(pipeline, dataset, device)
    missing, unexpected = _mismatch(method.model.state_dict(), state["model"])
    if missing or unexpected:
        trained = state["train_config"]
        raise CheckpointError(
            f"{checkpoint}: weights do not fit the network of {pipeline.source} (trained with method="
            f"{trained.get('method')!r}, width={trained.get('width')!r}, head={trained.get('head')!r}; "
            f"{len(missing)} tensors missing, e.g. {missing[:3]}, {len(unexpected)} unexpected, e.g. "
            f"{unexpected[:3]}): evaluate with the pipeline file and settings it was trained with"
        )
    method.model.load_state_dict(state["model"])
    method.model.to(device)
    return method


def teacher_sentence(label: str, model: SeedResults, references: dict[str, IoUResult]) -> str:
    """Whether a model beats the raw and the refined pseudo-labels it learned from, on the same
    val points (unseen points count as misses for the labels; the network predicts them all),
    with several seeds the p-value of a one-sample t-test against the labels' fixed score."""
    parts = []
    for kind, result in references.items():
        if kind.endswith("seen points only") or kind.startswith("voxel ceiling"):
            continue
        side = "above" if model.miou > result.miou else "below"
        test = f"; {p_text(one_sample_p(model.mious, result.miou))}" if len(model.runs) > 1 else ""
        parts.append(f"{side} its {kind} ({100 * result.miou:.2f}{test})")
    spread = f" ± {100 * model.std:.2f}" if len(model.runs) > 1 else ""
    return f"{label} {100 * model.miou:.2f}{spread}: " + ", ".join(parts) + "."


def evaluate(
    pipeline: Pipeline, checkpoint: str | Path, out_dir: str | Path | None = None, render: int = 4, tta: int = 1
) -> dict[str, IoUResult]:
    """Score the checkpoint on the val split and write the report folder (default <out_dir>/eval).

    Writes results.{md,csv,json}, confusion.png, run.json, and for the first `render` scenes a
    coloured PLY of the prediction and oblique renders (input, ground truth, pseudo-labels,
    prediction, correct/wrong) in the dataset's palette. `tta` > 1 averages that many turns about
    the vertical axis. Returns the table rows: the network, the pseudo-labels where stored, the
    voxel ceiling.
    """
    from train.reports.tables import write_report  # matplotlib: only the report needs it

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(out_dir) if out_dir is not None else Path(pipeline.train.out_dir) / "eval"
    names = class_names(pipeline)
    dataset = SceneDataset(pipeline, "val", with_gt=True, fields=())
    method = load_method(pipeline, checkpoint, dataset, device)
    log.info("eval %s: %s", checkpoint, "; ".join(f"{k} {v}" for k, v in method.run_info().items()))
    try:
        pseudo = SceneDataset(pipeline, "val", with_gt=True, fields=("pseudo", "refined"))
    except MissingData as e:
        log.warning("pseudo-label rows left out of the report: %s", e)
        pseudo = None

    network = IoUAccumulator(names)
    ceiling = IoUAccumulator(names)
    rows = {pipeline.train.method: network}
    if pseudo is not None:
        raw_name = f"{pipeline.labels.labeler} pseudo-labels"
        refined_name = f"refined pseudo-labels ({pipeline.train.partition}, rho={pipeline.refine.rho})"
        for name in (raw_name, refined_name):
            rows[name] = IoUAccumulator(names)
            rows[f"{name}, seen points only"] = IoUAccumulator(names)
    rows[f"voxel ceiling ({pipeline.train.voxel_size * 100:g} cm voxels)"] = ceiling
    for i, pred, inverse in predict(method, dataset, device, tta):
        data = (pseudo or dataset).read(i)
        network.add(pred, data["gt"])
        ceiling.add(voxel_ceiling(data["gt"], inverse, len(names)), data["gt"])
        if pseudo is not None:
            seen = data["label"] >= 0
            for name, labels in ((raw_name, data["label"]), (refined_name, data["refined"])):
                rows[name].add(labels, data["gt"])  # unseen points count as misses
                rows[f"{name}, seen points only"].add(labels[seen], data["gt"][seen])
        if i < render:
            render_scene(out, dataset, i, pred, data, names, dataset_table(pipeline.dataset).palette)
    results = {name: acc.result() for name, acc in rows.items()}
    verdict = teacher_sentence(pipeline.train.method, SeedResults((results[pipeline.train.method],)),
                               dict(list(results.items())[1:]))
    log.info("%s", verdict)
    info: dict[str, Any] = {
        "versus the pseudo-labels": verdict, "checkpoint": str(checkpoint), "pipeline": str(pipeline.source),
        "method": pipeline.train.method,
        "val scenes": len(dataset), "voxel size": pipeline.train.voxel_size,
        "prediction": "on voxels (first point per voxel), mapped back to every original point"
                      + (f"; class probabilities averaged over {tta} turns about the vertical axis" if tta > 1 else ""),
        **method.run_info(),
    }
    for path in write_report(out, results, info):
        log.info("wrote %s", path)
    return results


def stored_faces(dataset: SceneDataset, i: int) -> np.ndarray | None:
    """The triangles of scene i where the store has them (meshes), for pictures."""
    scene = dataset.scenes[i]
    return dataset.store.read(scene, POINTS, ["faces"])["faces"] if dataset.store.has_array(scene, POINTS, "faces") else None


def render_scene(out: Path, dataset: SceneDataset, i: int, pred: np.ndarray, data: dict[str, np.ndarray],
                 names: tuple[str, ...], palette: np.ndarray) -> Path:
    """`ply/<scene>_pred.ply` and `render/<scene>.png`: oblique renders of the scene (its mesh
    where the store has the faces) coloured by its colours, ground truth, pseudo-labels where
    read, prediction, and correct/wrong, with a legend of the classes shown."""
    from shared.ply import write_ply
    from shared.viz import colour_labels, segmentation_figure

    scene = dataset.scenes[i]
    write_ply(out / "ply" / f"{scene}_pred.ply", data["xyz"], colour_labels(pred, palette), label=pred.astype(np.int32))
    return segmentation_figure(out / "render" / f"{scene}.png", data["xyz"], pred, names, palette,
                               stored_faces(dataset, i), data.get("normal"), data["rgb"], data["gt"],
                               {"pseudo-labels": data["label"]} if "label" in data else None, title=scene)
