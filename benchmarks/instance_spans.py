"""How often a Felzenszwalb consistency set joins two objects: generated rooms beside the real
ScanNet scene0000_00, at k = 0.01 ... 0.05 (min_verts 20).

Run: `python benchmarks/instance_spans.py [--rooms data/synthetic-exp] [--scenes 10]
[--out reports/instance_spans]`, or `make synth-spans` (generates the experiments' rooms first).

For every k: the share of sets whose annotated vertices belong to more than one instance
(`spanning_share`), and of those with more than 10% of them outside their main instance, sets per scene, purity and boundary recall over mesh edges
(`partition_report`, preprocess/partition/metrics.py), against the instances of each scene's
`.aggregation.json` (vertices no group covers are left out). The generated rooms: the first
`--scenes` of `--rooms`, the mean over rooms. scene0000_00 (from ../shared/data, or
$HICL_SHARED_DATA): the project's Felzenszwalb and ScanNet's own Segmentator
(`segmentator-reference/`). ScanNet's annotators grouped the k = 0.01 segments, so there the
real scene's sets cannot span two instances except where the two programs differ; at larger k
they can. Writes instance_spans.md and .json to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from preprocess.datasets.scannet import list_scannet_scenes, read_scannet_scene
from preprocess.partition.felzenszwalb import felzenszwalb
from preprocess.geometry.graph import mesh_edges
from preprocess.partition.metrics import partition_report, spanning_share

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HICL_SHARED_DATA", REPO.parent / "shared" / "data"))
SCANNET_SCENE = SHARED_DATA / "scannet" / "scans" / "scene0000_00"
REFERENCE = SHARED_DATA / "scannet" / "segmentator-reference"
KS = (0.01, 0.02, 0.03, 0.04, 0.05)
MIN_VERTS = 20
MINORITY = 0.1  # a set joins objects "by more than a boundary" when over 10% of it lies outside its main object


def scores(segment: np.ndarray, instance: np.ndarray, edges: np.ndarray) -> dict[str, float]:
    report = partition_report(segment, instance, edges)
    return {"spanning": spanning_share(segment, instance), "spanning_10": spanning_share(segment, instance, MINORITY),
            "sets": report["count"], "purity": report["purity"], "boundary_recall": report["boundary_recall"]}


def scene_scores(scene_dir: Path, references: dict[float, Path] | None = None) -> dict[str, dict[float, dict]]:
    """{partition name: {k: scores}} of one annotated ScanNet-layout scene."""
    scene = read_scannet_scene(scene_dir, load_views=False)
    if scene.instance is None:
        raise SystemExit(f"{scene_dir}: no .aggregation.json and segs.json; generate the rooms with this version")
    edges = mesh_edges(scene.faces)
    out = {"felzenszwalb": {k: scores(felzenszwalb(scene.xyz, scene.faces, k, MIN_VERTS), scene.instance, edges)
                            for k in KS}}
    if references:
        out["segmentator"] = {k: scores(np.asarray(json.loads(path.read_text())["segIndices"]), scene.instance, edges)
                              for k, path in references.items()}
    return out


def table(generated: list[dict], real: dict | None, rooms: Path) -> str:
    def mean(k: float, key: str) -> float:
        return float(np.mean([g["felzenszwalb"][k][key] for g in generated]))

    lines = [
        f"Felzenszwalb sets (min_verts {MIN_VERTS}) against the aggregation.json instances: share of sets spanning "
        f"more than one instance (all, and those with over {MINORITY:.0%} of their vertices outside their main "
        f"instance), sets per scene, purity, boundary recall over mesh edges. Generated: mean over the "
        f"{len(generated)} rooms of {rooms}.",
        "",
        "| k | generated: spanning | > 10% | sets/room | purity | boundary recall |"
        + (" scene0000_00 (ours): spanning | > 10% | sets | purity | boundary recall |"
           " scene0000_00 (Segmentator): spanning | > 10% | sets |" if real else ""),
        "|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|---:|---:|---:|---:|---:|" if real else ""),
    ]
    for k in KS:
        row = (f"| {k:.2f} | {mean(k, 'spanning'):.3f} | {mean(k, 'spanning_10'):.3f} | {mean(k, 'sets'):.0f} | "
               f"{mean(k, 'purity'):.3f} | {mean(k, 'boundary_recall'):.3f} |")
        if real:
            ours, theirs = real["felzenszwalb"][k], real["segmentator"].get(k)
            row += (f" {ours['spanning']:.3f} | {ours['spanning_10']:.3f} | {ours['sets']} | {ours['purity']:.3f} | "
                    f"{ours['boundary_recall']:.3f} |"
                    + (f" {theirs['spanning']:.3f} | {theirs['spanning_10']:.3f} | {theirs['sets']} |" if theirs
                       else " – | – | – |"))
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=Path, default=REPO / "data" / "synthetic-exp", help="generated dataset root")
    parser.add_argument("--scenes", type=int, default=10, help="how many of its rooms (the first)")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "instance_spans")
    args = parser.parse_args(argv)
    scenes = list_scannet_scenes(args.rooms)[: args.scenes]
    generated = [scene_scores(args.rooms / "scans" / s) for s in scenes]
    real = None
    if (SCANNET_SCENE / "scene0000_00.aggregation.json").is_file():
        references = {k: REFERENCE / f"scene0000_00_vh_clean_2.0.0{round(k * 100)}0000.segs.json" for k in KS}
        real = scene_scores(SCANNET_SCENE, {k: p for k, p in references.items() if p.is_file()})
    text = table(generated, real, args.rooms)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "instance_spans.md").write_text(text + "\n")
    (args.out / "instance_spans.json").write_text(json.dumps(
        {"rooms": str(args.rooms), "scenes": scenes, "generated": generated, "scene0000_00": real}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
