"""Evaluation: network predictions on voxels, mapped back to every original point, scored on val.

Convention (design.md; written into every report): the confusion matrix counts points whose
ground truth is a benchmark class, ignored points dropped first; IoU_c = TP/(TP+FP+FN); mIoU is
the mean over classes with a non-empty union; a class with neither ground truth nor prediction
is "n/a" and left out of the mean. The pseudo-labels of the same scenes are scored alongside
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
from shared.errors import MissingData
from shared.metrics import IoUAccumulator, IoUResult, SeedResults
from shared.refine import set_labels
from shared.schema import class_names
from train.engine.checkpoint import load_checkpoint
from train.engine.dataset import SceneDataset
from train.engine.loader import make_loader
from train.engine.methods import Method, build_method

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(
    method: Method, dataset: SceneDataset, device: torch.device
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(scene index, per-point class prediction (N,), voxel of each point (N,)) for every scene
    of `dataset`, in order."""
    model = method.model
    was_training = model.training
    model.eval()
    loader = make_loader(dataset, batch_size=1, num_workers=method.cfg.num_workers)
    try:
        for i, batch in enumerate(loader):
            batch = batch.to(device)
            with method.precision.autocast():
                logits = model(method.sparse_input(batch))["logits"]
            voxel_pred = logits.argmax(dim=1).cpu().numpy()
            yield i, voxel_pred[batch.inverse[0]], batch.inverse[0]
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


def load_model(pipeline: Pipeline, checkpoint: str | Path, dataset: SceneDataset, device: torch.device) -> Method:
    """The pipeline's method with the checkpoint's network weights."""
    state = load_checkpoint(checkpoint, device)
    method = build_method(pipeline, dataset, device)
    missing, unexpected = _mismatch(method.model.state_dict(), state["model"])
    if missing or unexpected:
        trained = state.get("train_config", {})
        raise RuntimeError(
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
    val points (unseen points count as misses for the labels; the network predicts them all)."""
    parts = []
    for kind, result in references.items():
        if kind.endswith("seen points only") or kind.startswith("voxel ceiling"):
            continue
        side = "above" if model.miou > result.miou else "below"
        parts.append(f"{side} its {kind} ({100 * result.miou:.2f})")
    spread = f" ± {100 * model.std:.2f}" if len(model.runs) > 1 else ""
    return f"{label} {100 * model.miou:.2f}{spread}: " + ", ".join(parts) + "."


def evaluate(
    pipeline: Pipeline, checkpoint: str | Path, out_dir: str | Path | None = None, render: int = 4
) -> dict[str, IoUResult]:
    """Score the checkpoint on the val split and write the report folder (default <out_dir>/eval).

    Writes results.{md,csv,json}, confusion.png, run.json, and for the first `render` scenes a
    coloured PLY of the prediction and a top-down panel (input, ground truth, pseudo-labels,
    prediction). Returns the table rows: the network, the pseudo-labels where stored, the voxel ceiling.
    """
    from train.reports.tables import write_report  # matplotlib: only the report needs it

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(out_dir) if out_dir is not None else Path(pipeline.train.out_dir) / "eval"
    names = class_names(pipeline)
    dataset = SceneDataset(pipeline, "val", with_gt=True, fields=())
    method = load_model(pipeline, checkpoint, dataset, device)
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
    for i, pred, inverse in predict(method, dataset, device):
        data = (pseudo or dataset).read(i)
        network.add(pred, data["gt"])
        ceiling.add(voxel_ceiling(data["gt"], inverse, len(names)), data["gt"])
        if pseudo is not None:
            seen = data["label"] >= 0
            for name, labels in ((raw_name, data["label"]), (refined_name, data["refined"])):
                rows[name].add(labels, data["gt"])  # unseen points count as misses
                rows[f"{name}, seen points only"].add(labels[seen], data["gt"][seen])
        if i < render:
            _render_scene(out, dataset, i, pred, data, len(names), list(names))
    results = {name: acc.result() for name, acc in rows.items()}
    verdict = teacher_sentence(pipeline.train.method, SeedResults((results[pipeline.train.method],)),
                               dict(list(results.items())[1:]))
    log.info("%s", verdict)
    info: dict[str, Any] = {
        "versus the pseudo-labels": verdict, "checkpoint": str(checkpoint), "pipeline": str(pipeline.source),
        "method": pipeline.train.method,
        "val scenes": len(dataset), "voxel size": pipeline.train.voxel_size,
        "prediction": "on voxels (first point per voxel), mapped back to every original point",
        **method.run_info(),
    }
    for path in write_report(out, results, info):
        log.info("wrote %s", path)
    return results


def _render_scene(out: Path, dataset: SceneDataset, i: int, pred: np.ndarray, data: dict[str, np.ndarray],
                  num_classes: int, legend: list[str]) -> None:
    from shared.ply import write_ply
    from shared.viz import colour_labels, render_topdown, save_panels  # matplotlib: only renders need it

    scene = dataset.scenes[i]
    xyz = data["xyz"]
    pred_rgb = colour_labels(pred, num_classes)
    write_ply(out / "ply" / f"{scene}_pred.ply", xyz, pred_rgb, label=pred.astype(np.int32))
    panels = {"input": render_topdown(xyz, data["rgb"]),
              "ground truth": render_topdown(xyz, colour_labels(data["gt"], num_classes))}
    if "label" in data:
        panels["pseudo-labels"] = render_topdown(xyz, colour_labels(data["label"], num_classes))
    panels["prediction"] = render_topdown(xyz, pred_rgb)
    save_panels(out / "render" / f"{scene}.png", panels, legend)
