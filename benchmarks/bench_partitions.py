"""Seconds per scene of each partition method, on the real ScanNet sample and a large generated room,
and per nuScenes sweep of every partition of pipelines/nuscenes-sample.toml.

Run: `.venv/bin/python benchmarks/bench_partitions.py [--repeats 5] [--sweeps 5]`. Each method is
timed after one warm-up call (JIT compilation, caches), then `repeats` times; the table shows the
median and the minimum. Add a method by adding one line to METHODS. The nuScenes table times
each partition (as the partitions stage runs it) on `sweeps` keyframes of scene-0916 spread over
the scene: median wall and CPU seconds per sweep over all sweeps and repeats (prefix the
command with `OMP_NUM_THREADS=1` to hold every library to one core).
Yardstick: ScanNet's C++ segmentator (g++ -O2) takes 0.12 s wall on scene0000_00 on the
project's 2-core machine, including reading the PLY and writing the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from preprocess.datasets.scene import Scene
from preprocess.io.ply import read_ply
from preprocess.partition.felzenszwalb import felzenszwalb
from preprocess.partition.superpoints import superpoints
from preprocess.partition.vccs import vccs
from preprocess.segment_cli import main as segment_main

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HICL_SHARED_DATA", REPO.parent / "shared" / "data"))
NUSCENES = SHARED_DATA / "nuscenes"
SCANNET_MESH = SHARED_DATA / "scannet" / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.ply"

METHODS: dict[str, Callable[[Scene], np.ndarray]] = {
    "felzenszwalb k=0.01": lambda scene: felzenszwalb(scene.xyz, scene.faces, k=0.01, min_verts=20),
    "vccs (0.05, 0.3)": lambda scene: vccs(scene.xyz, colors=scene.rgb, voxel_resolution=0.05, seed_resolution=0.3),
    "superpoints reg=0.1": lambda scene: superpoints(scene.xyz, reg=0.1),
}


def _grid(origin: np.ndarray, u: np.ndarray, v: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """A rectangle origin + s*u + t*v (s, t in [0,1]) meshed with ~spacing-sized right triangles."""
    nu = max(2, int(round(np.linalg.norm(u) / spacing)) + 1)
    nv = max(2, int(round(np.linalg.norm(v) / spacing)) + 1)
    s, t = np.meshgrid(np.linspace(0, 1, nu), np.linspace(0, 1, nv), indexing="ij")
    vertices = origin + s.reshape(-1, 1) * u + t.reshape(-1, 1) * v
    i, j = np.meshgrid(np.arange(nu - 1), np.arange(nv - 1), indexing="ij")
    q = (i * nv + j).ravel()
    faces = np.concatenate([np.stack([q, q + nv, q + 1], 1), np.stack([q + 1, q + nv, q + nv + 1], 1)])
    return vertices, faces


def synthetic_room(target_vertices: int = 500_000, seed: int = 0) -> Scene:
    """A 6 x 5 x 2.5 m open-top room (floor, four walls) with eight box-shaped pieces of furniture,
    meshed at the spacing that gives about `target_vertices` vertices, with 1 mm coordinate noise."""
    rng = np.random.default_rng(seed)
    x, y, z = np.eye(3)
    origin = np.zeros(3)
    rects = [(origin, 6 * x, 5 * y)]  # floor
    rects += [(origin, 6 * x, 2.5 * z), (5 * y, 6 * x, 2.5 * z), (origin, 5 * y, 2.5 * z), (6 * x, 5 * y, 2.5 * z)]
    for _ in range(8):
        w, d, h = rng.uniform([0.4, 0.4, 0.4], [1.6, 1.0, 1.0])
        o = np.array([rng.uniform(0.2, 5.8 - w), rng.uniform(0.2, 4.8 - d), 0.0])
        rects += [(o + h * z, w * x, d * y)]  # top
        rects += [(o, w * x, h * z), (o + d * y, w * x, h * z), (o, d * y, h * z), (o + w * x, d * y, h * z)]
    area = sum(float(np.linalg.norm(np.cross(u, v))) for _, u, v in rects)
    spacing = np.sqrt(area / target_vertices)
    vertices, faces, offset = [], [], 0
    for origin, u, v in rects:
        rect_vertices, rect_faces = _grid(origin, u, v, spacing)
        vertices.append(rect_vertices)
        faces.append(rect_faces + offset)
        offset += len(rect_vertices)
    xyz = np.concatenate(vertices) + rng.normal(scale=0.001, size=(offset, 3))
    return Scene(
        scene_id=f"synthetic_room_{offset // 1000}k",
        xyz=xyz.astype(np.float32),
        rgb=np.zeros((offset, 3), np.uint8),
        faces=np.concatenate(faces).astype(np.int32),
    )


def scannet_scene() -> Scene | None:
    """scene0000_00's mesh from the shared sample data, or None where it is absent."""
    if not SCANNET_MESH.is_file():
        return None
    mesh = read_ply(SCANNET_MESH)
    return Scene(scene_id="scene0000_00", xyz=mesh["xyz"], rgb=mesh["rgb"], faces=mesh["faces"])


def seconds(call: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """Median and minimum wall seconds over `repeats` calls after one warm-up, and the last result."""
    result = call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(np.min(times)), result


def nuscenes_table(repeats: int, sweeps: int) -> list[str]:
    """Rows for every partition of pipelines/nuscenes-sample.toml on scene-0916 keyframes."""
    from preprocess.datasets.nuscenes import list_nuscenes_samples, read_nuscenes_sample
    from preprocess.geometry.normals import point_normals
    from preprocess.stages import compute_partition
    from shared.config import load_pipeline

    ids = list_nuscenes_samples(NUSCENES, "v1.0-mini")
    chosen = [ids[i] for i in np.linspace(0, len(ids) - 1, sweeps).round().astype(int)]
    frames = []
    for scene_id in chosen:
        scene = read_nuscenes_sample(NUSCENES, "v1.0-mini", scene_id, load_views=False)
        frames.append({"xyz": scene.xyz, "rgb": scene.rgb, "normal": point_normals(scene.xyz, knn=30),
                       "intensity": scene.meta["intensity"], "ring": scene.meta["ring"]})
    rows = [f"\nnuScenes scene-0916, {len(frames)} keyframes ({', '.join(chosen)}), ~{len(frames[0]['xyz']):,} points a sweep:",
            "", "| partition | sets/sweep (median) | median wall s/sweep | median CPU s/sweep |", "|---|---:|---:|---:|"]
    for partition in load_pipeline(REPO / "pipelines" / "nuscenes-sample.toml").partitions:
        compute_partition(partition, frames[0])  # warm-up: Numba compilation
        wall, cpu, sets = [], [], []
        for points in frames:
            for _ in range(repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                segment = compute_partition(partition, points)[0]
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            sets.append(len(np.unique(segment)))
        rows.append(f"| {partition.name} | {np.median(sets):.0f} | {np.median(wall):.3f} | {np.median(cpu):.3f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--synthetic-vertices", type=int, default=500_000)
    parser.add_argument("--sweeps", type=int, default=5, help="nuScenes keyframes to time (0: skip nuScenes)")
    args = parser.parse_args(argv)

    scenes = [s for s in (scannet_scene(), synthetic_room(args.synthetic_vertices)) if s is not None]
    print("| method | scene | vertices | segments | median s | min s |")
    print("|---|---|---:|---:|---:|---:|")
    for name, method in METHODS.items():
        for scene in scenes:
            median, fastest, segment = seconds(lambda: method(scene), args.repeats)
            count = len(np.unique(segment))
            print(f"| {name} | {scene.scene_id} | {len(scene.xyz):,} | {count:,} | {median:.3f} | {fastest:.3f} |")
    if SCANNET_MESH.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            cli = [str(SCANNET_MESH), "--out", str(Path(tmp) / "out.segs.json")]
            with contextlib.redirect_stdout(io.StringIO()):  # the CLI reports every run
                median, fastest, _ = seconds(lambda: segment_main(cli), args.repeats)
        print(f"\nsegment CLI end to end on scene0000_00 (read PLY, segment, write JSON): "
              f"median {median:.3f} s, min {fastest:.3f} s; ScanNet's C++ segmentator: 0.12 s")
    if args.sweeps > 0 and (NUSCENES / "v1.0-mini").is_dir():
        print("\n".join(nuscenes_table(args.repeats, args.sweeps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
