"""Reports made from the store alone: partitions side by side, pseudo-label quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from preprocess.stages import class_names, labels_group, partition_group, refine_group
from shared.config import Pipeline
from shared.metrics import IoUAccumulator, write_tables
from shared.store import POINTS, Store


def _points_key(store: Store, scene: str) -> str:
    return store.attrs(scene, POINTS)["key"]


def show_partitions(pipeline: Pipeline, scene: str | None, out: str | Path) -> Path:
    """One scene's stored partitions (every [[partitions]] entry), random colour per segment."""
    from preprocess.partition.figures import plot_partitions

    store = Store(pipeline.store.path)
    scenes = store.scenes()
    if not scenes:
        raise ValueError(f"{store.path}: no scenes in the store; run `python -m preprocess run` first")
    scene = scene or scenes[0]
    points = store.read(scene, POINTS, ["xyz"])
    key = _points_key(store, scene)
    panels = {}
    for p in pipeline.partitions:
        group, _, _ = partition_group(p, key)
        if not store.is_complete(scene, group):
            raise ValueError(f"{store.path}: {scene} has no {group}; run the partitions stage first")
        panels[f"{p.name}"] = store.read(scene, group, ["segment"])["segment"]
    return plot_partitions(points["xyz"], None, panels, out, title=scene)


def label_quality(pipeline: Pipeline, out_dir: str | Path) -> str:
    """Pseudo-label mIoU against ground truth over the store's scenes: raw and refined.

    Unseen points (label -1) count as misses in the main rows, so the numbers are over all
    labelled points; a row over the seen points only and the coverage (share of points seen
    by some view) are reported beside them.
    """
    store = Store(pipeline.store.path)
    names = class_names(pipeline)
    raw, raw_seen, refined = IoUAccumulator(names), IoUAccumulator(names), IoUAccumulator(names)
    seen = total = 0
    refine_partition = pipeline.partition(pipeline.refine.partition) if pipeline.partitions else None
    has_refined = refine_partition is not None
    for scene in store.scenes():
        if not store.attrs(scene, POINTS).get("has_gt"):
            continue
        key = _points_key(store, scene)
        lgroup, lkey, _ = labels_group(pipeline, key)
        if not store.is_complete(scene, lgroup):
            continue
        gt = store.read(scene, POINTS, ["gt"])["gt"]
        label = store.read(scene, lgroup, ["label"])["label"]
        raw.add(label, gt)
        raw_seen.add(label[label >= 0], gt[label >= 0])
        seen += int((label >= 0).sum())
        total += len(label)
        if has_refined:
            _, pkey, _ = partition_group(refine_partition, key)
            rgroup, _, _ = refine_group(pipeline, lkey, pkey)
            if store.is_complete(scene, rgroup):
                refined.add(store.read(scene, rgroup, ["label"])["label"], gt)
            else:
                has_refined = False
    if total == 0:
        raise ValueError(f"{store.path}: no scene has both ground truth and pseudo-labels; run the labels stage")
    rows = {
        f"pseudo-labels ({pipeline.labels.labeler})": raw.result(),
        f"pseudo-labels ({pipeline.labels.labeler}), seen points only": raw_seen.result(),
    }
    if has_refined:
        rows[f"refined over {refine_partition.name} (rho={pipeline.refine.rho})"] = refined.result()
    note = f"Coverage: {100 * seen / total:.1f}% of points seen by some view."
    if pipeline.labels.labeler == "simulated-clip":
        note += " Labels from the simulated-CLIP labeler (ground truth corrupted like MaskCLIP), not real CLIP."
    paths = write_tables(rows, Path(out_dir) / "label_quality", note)
    return paths[0].read_text()
