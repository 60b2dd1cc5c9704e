"""Refinement over Felzenszwalb sets on the REAL scene0000_00 with simulated-CLIP labels:
pseudo-label mIoU against the real ground truth must rise (method.md §2, issue 6)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from preprocess.datasets.scannet import read_scannet_scene
from preprocess.labels.labelers import labels_for_scene
from preprocess.partition.felzenszwalb import felzenszwalb
from shared.classes import SCANNET_NAMES
from shared.config import LabelsConfig
from shared.metrics import IoUAccumulator
from shared.refine import refine_labels


@pytest.mark.realdata
def test_refinement_raises_pseudo_label_miou_on_scene0000(scannet_scene0000, capsys):
    scene = read_scannet_scene(scannet_scene0000)
    cfg = dataclasses.replace(LabelsConfig(), labeler="simulated-clip", frame_skip=1)
    pseudo = labels_for_scene(scene, cfg, SCANNET_NAMES)
    segment = felzenszwalb(scene.xyz, scene.faces, k=0.01, min_verts=20)
    refined = refine_labels(pseudo["label"], pseudo["score"].astype(np.float32), segment, len(SCANNET_NAMES), rho=0.5)
    seen = pseudo["label"] >= 0
    before, after = IoUAccumulator(SCANNET_NAMES), IoUAccumulator(SCANNET_NAMES)
    before.add(pseudo["label"][seen], scene.gt[seen])
    after.add(refined[seen], scene.gt[seen])
    before, after = before.result(), after.result()
    with capsys.disabled():
        print(f"\nscene0000_00, {seen.mean():.1%} of vertices seen by the 3 frames: "
              f"simulated-clip mIoU {100 * before.miou:.2f} -> refined {100 * after.miou:.2f}")
        for name, b, a in zip(SCANNET_NAMES, before.iou, after.iou):
            if not (np.isnan(b) and np.isnan(a)):
                print(f"  {name:<16} {100 * b:6.2f} -> {100 * a:6.2f}")
    assert after.miou > before.miou + 0.02
    # refinement fills the unseen points of partly seen sets, never un-labels a seen one
    assert (refined[seen] >= 0).all()
