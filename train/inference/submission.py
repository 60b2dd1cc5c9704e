"""The benchmarks' submission files, in their documented layouts.

ScanNet v2 (3D semantic label prediction; ScanNet's BenchmarkScripts/3d_evaluation reads them):
one `<scene>.txt` per scan, one nyu40 label id per line, one line per vertex of the scan's
`_vh_clean_2.ply` mesh, in vertex order.

nuScenes-lidarseg (the devkit's `eval/lidarseg/validate_submission.py`):

    <out>/lidarseg/<split>/<lidar_sample_data_token>_lidarseg.bin   uint8 per point, the class
                                                                    index 1-16 (0 = ignore is never predicted)
    <out>/<split>/submission.json                                   {"meta": {"use_camera": ..., "use_lidar": ...,
                                                                     "use_radar": ..., "use_map": ..., "use_external": ...}}

A model's classes are matched to a benchmark's by name, so a model of the benchmark's own classes,
or an open-vocabulary query with a subset of them, can be submitted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shared.classes import NUSCENES_NAMES, SCANNET_NAMES, SCANNET_NYU40_IDS
from shared.datasets import DATASETS
from shared.errors import UserError
from shared.lidar import sample_data_token
from shared.scans import Scan

class Submission:
    """One benchmark's submission layout: the benchmark's id of each class it evaluates, the file
    of one scan, and what is written once after all scans. The dataset registry
    (shared/datasets.py) says which benchmark a dataset's models are submitted to."""

    ids: dict[str, int]

    @staticmethod
    def write(out: Path, scan: Scan, labels: np.ndarray, ids: np.ndarray, split: str) -> Path:
        raise NotImplementedError

    @staticmethod
    def finish(out: Path, split: str, use_external: bool) -> None:
        """Files written once per submission, after its scans."""


class ScanNetSubmission(Submission):
    ids = dict(zip(SCANNET_NAMES, SCANNET_NYU40_IDS))

    @staticmethod
    def write(out: Path, scan: Scan, labels: np.ndarray, ids: np.ndarray, split: str) -> Path:
        """`<out>/<scene>.txt`: one nyu40 id per line per vertex."""
        path = out / f"{scan.name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(path, ids[labels], fmt="%d")
        return path


class LidarsegSubmission(Submission):
    ids = {name: i + 1 for i, name in enumerate(NUSCENES_NAMES)}

    @staticmethod
    def write(out: Path, scan: Scan, labels: np.ndarray, ids: np.ndarray, split: str) -> Path:
        """`<out>/lidarseg/<split>/<token>_lidarseg.bin`, uint8 class indices 1-16, one per point."""
        if scan.kind != "sweep":
            raise UserError(f"{scan.source}: a nuScenes-lidarseg submission names each file after a LiDAR sweep's "
                            "sample_data token; give .pcd.bin sweeps kept in their nuScenes folder")
        path = out / "lidarseg" / split / f"{sample_data_token(scan.source)}_lidarseg.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        ids[labels].astype(np.uint8).tofile(path)
        return path

    @staticmethod
    def finish(out: Path, split: str, use_external: bool) -> None:
        """`<out>/<split>/submission.json`: what the method used. It predicts from the LiDAR points
        alone; a label-free model learned from a CLIP teacher, trained on web data: external data."""
        path = out / split / "submission.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": use_external}
        path.write_text(json.dumps({"meta": meta}, indent=2) + "\n")


def formats() -> dict[str, type[Submission]]:
    """`--format` name (the dataset's) -> its benchmark's layout, for every dataset that has one."""
    return {name: sub for name, dataset in DATASETS.items() if (sub := dataset.submission()) is not None}


def benchmark_ids(benchmark: str, classes: tuple[str, ...]) -> np.ndarray:
    """(K,) the benchmark's id of each class; one clear error naming those it does not have."""
    ids = formats()[benchmark].ids
    foreign = [name for name in classes if name not in ids]
    if foreign:
        raise UserError(f"--format {benchmark}: the classes {foreign} are not among the benchmark's {list(ids)}; "
                        f"submit a model of {benchmark}'s classes (or query with --classes among them)")
    return np.array([ids[name] for name in classes], dtype=np.int64)
