"""What the pixel-point pairs (labels.store_pairs) cost a store, per scene: pairs, views, patch
rows, bytes in memory and on disk, beside the per-point `feat` of labels.store_features, and the
time of CLIP2Scene's losses on one scene's pairs; extrapolated to ScanNet's sizes.

    python benchmarks/bench_pairs.py                     # 2 generated demo rooms, labelled here
    python benchmarks/bench_pairs.py pipelines/synthetic-compare.toml [--set store.path=cache/x.zarr]

With a pipeline it reads that preprocessed store (run `python -m preprocess run` on it first).
Sizes are exact; the loss times are CPU wall seconds of forward + backward on random network
outputs of the scene's voxel count, so a shared machine's load shows in them (it is printed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared import schema  # noqa: E402
from shared.cli import parse_overrides  # noqa: E402
from shared.config import Pipeline, load_pipeline  # noqa: E402
from shared.store import Store  # noqa: E402
from train.engine.transforms import sample_pairs, voxelize  # noqa: E402
from train.losses.baselines import pair_ce_loss, pair_distill_loss, spatial_temporal_loss  # noqa: E402

PAIRS = [schema.PAIRS_POINT, schema.PAIRS_VIEW, schema.PAIRS_LABEL, schema.PAIRS_SCORE, schema.PAIRS_PATCH, schema.PATCH_FEAT]
SCANNET = {"views": 100, "pairs per view": 50_000, "patches per view": 28 * 21, "dim": 512, "scans": 1_513}


def on_disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def loss_seconds(store: Store, scene: str, group: str, voxel_size: float, text: np.ndarray) -> dict[str, float]:
    """Forward + backward seconds of each pair loss on all pairs of one scene (every view)."""
    data = store.read(scene, group, PAIRS[:3] + PAIRS[4:]) | store.read(scene, schema.POINTS, ["xyz"])
    coords, _, inverse = voxelize(data["xyz"], voxel_size)
    pairs = {k: torch.from_numpy(v) for k, v in
             sample_pairs(data, inverse, np.arange(len(coords)), len(coords), 0, None).items()}
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(len(coords), len(text), generator=g, requires_grad=True)
    feats = torch.randn(len(coords), text.shape[1], generator=g, requires_grad=True)
    text_t = torch.from_numpy(text)
    runs = {"ce": lambda: pair_ce_loss(logits, pairs["voxel"], pairs["label"]),
            "distill": lambda: pair_distill_loss(feats, pairs["voxel"], pairs["patch_feat"], pairs["patch"]),
            "spatial_temporal": lambda: spatial_temporal_loss(feats, pairs["voxel"], pairs["label"], pairs["voxel"], text_t)}
    seconds = {}
    for name, run in runs.items():
        start = time.perf_counter()
        run().backward()
        seconds[name] = time.perf_counter() - start
    return seconds | {"voxels": len(coords), "pairs": len(pairs["voxel"])}


def report(pipeline: Pipeline) -> None:
    store = Store(pipeline.store.path)
    layout = schema.Layout(store, pipeline)
    text = store.read(schema.TEXT_SCENE, layout.text(), ["embedding"])["embedding"].astype(np.float32)
    print(f"{os.cpu_count()} cores, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| scene | points | views | pairs | patch rows | pairs MB (memory) | pairs MB (disk) | of which patch_feat | per-point feat MB (disk) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    totals = []
    for scene in layout.split("train") + layout.split("val"):
        group = layout.labels(scene)
        arrays = store.read(scene, group, PAIRS + ["label"])
        disk = {n: on_disk(store.path / scene / group / n) for n in PAIRS}
        row = [len(arrays["label"]), len(np.unique(arrays[schema.PAIRS_VIEW])), len(arrays[schema.PAIRS_POINT]),
               len(arrays[schema.PATCH_FEAT]), sum(arrays[n].nbytes for n in PAIRS) / 2**20, sum(disk.values()) / 2**20,
               disk[schema.PATCH_FEAT] / 2**20, on_disk(store.path / scene / group / "feat") / 2**20]
        totals.append(row)
        print(f"| {scene} | {row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]:.2f} | {row[5]:.2f} | {row[6]:.2f} | {row[7]:.2f} |")
    mean = np.mean(totals, axis=0)
    print(f"| mean | {mean[0]:.0f} | {mean[1]:.1f} | {mean[2]:.0f} | {mean[3]:.0f} | {mean[4]:.2f} | {mean[5]:.2f} | "
          f"{mean[6]:.2f} | {mean[7]:.2f} |")
    s = SCANNET
    pair_bytes = 4 + 2 + 2 + 2 + 4  # point, view, label, score, patch
    pairs_mb = s["views"] * s["pairs per view"] * pair_bytes / 2**20
    feat_mb = s["views"] * s["patches per view"] * s["dim"] * 2 / 2**20
    print(f"ScanNet estimate ({s['views']} views x {s['pairs per view']} pairs, {s['patches per view']} patches a view "
          f"at input_width 448): {pairs_mb:.0f} MB of pairs + {feat_mb:.0f} MB of patch features = "
          f"{pairs_mb + feat_mb:.0f} MB a scan in memory (less on disk), {(pairs_mb + feat_mb) * s['scans'] / 2**10:.0f} GB "
          f"for {s['scans']} scans")
    scene = layout.split("train")[0]
    timed = loss_seconds(store, scene, layout.labels(scene), pipeline.train.voxel_size, text)
    print(f"losses on {scene} ({timed['voxels']} voxels, {timed['pairs']} pairs, all views), forward + backward: " +
          ", ".join(f"{k} {timed[k]:.3f} s" for k in ("ce", "distill", "spatial_temporal")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pipeline", nargs="?", help="pipeline TOML of a preprocessed store (default: generated rooms)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a pipeline key")
    args = p.parse_args()
    if args.pipeline:
        report(load_pipeline(args.pipeline, parse_overrides(args.set)))
        return
    from preprocess.pipeline import run
    from preprocess.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "raw", scenes=2, seed=0)  # the demo's rooms: `make synth`'s settings
        pipeline = load_pipeline(ROOT / "pipelines" / "synthetic-compare.toml",
                                 {"dataset.root": str(Path(tmp) / "raw"), "store.path": str(Path(tmp) / "s.zarr")})
        summary = run(pipeline, only=("ingest", "labels"), scheduler="inline", progress=False)
        if summary.failures:
            raise SystemExit(summary.describe())
        report(pipeline)


if __name__ == "__main__":
    main()
