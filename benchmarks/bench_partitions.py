"""Partition methods timed three ways: the kernels inside a warm process, cut pursuit on 1 and 2
threads beside the official parallel cut pursuit, and the `segment` command as a whole process
beside ScanNet's C++ segmentator.

Run: `.venv/bin/python benchmarks/bench_partitions.py [--repeats 5] [--runs 7] [--sweeps 5]`.

1. Each method on scene0000_00 (the shared ScanNet sample) and a large generated room, after
   one warm-up call, `--repeats` times: median and minimum seconds.
2. Cut pursuit on the shared sample's SPG graph (`superpoint-reference/`) at each reg: energy
   and median wall seconds with 1 and 2 Numba threads; and PyPI `pycut-pursuit` (GPL, never a
   project dependency) on the same graph with 1 and 2 OpenMP threads where it is importable,
   else in the interpreter `--reference-python` names (its wheels need numpy < 2:
   `python3 -m venv /tmp/cp && /tmp/cp/bin/pip install pycut-pursuit 'numpy<2'`, then
   `--reference-python /tmp/cp/bin/python`), else "not measured".
3. `python -m preprocess segment` on scene0000_00 as a whole process (start-up, imports,
   reading, segmenting, writing), `--runs` times: median wall and CPU seconds; and ScanNet's
   `segmentator` the same way where it is on PATH, else "not measured". Both outputs compared.
4. Every partition of pipelines/nuscenes-sample.toml, as the partitions stage runs it, on
   `--sweeps` keyframes of scene-0916 spread over the scene: median wall and CPU seconds per
   sweep (prefix the command with `OMP_NUM_THREADS=1` to hold every library to one core).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numba
import numpy as np

from preprocess.datasets.scene import Scene
from shared.ply import read_ply
from preprocess.partition.cut_pursuit import cut_pursuit, partition_energy
from preprocess.partition.felzenszwalb import felzenszwalb
from preprocess.partition.superpoints import superpoints
from preprocess.partition.vccs import vccs

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HICL_SHARED_DATA", REPO.parent / "shared" / "data"))
NUSCENES = SHARED_DATA / "nuscenes"
SCANNET_MESH = SHARED_DATA / "scannet" / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.ply"
SPG_GRAPH = SHARED_DATA / "scannet" / "superpoint-reference"
REGS = (0.01, 0.03, 0.1, 0.3)

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
    from shared.normals import point_normals
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


def methods_table(repeats: int, synthetic_vertices: int) -> None:
    scenes = [s for s in (scannet_scene(), synthetic_room(synthetic_vertices)) if s is not None]
    print("| method | scene | vertices | segments | median s | min s |")
    print("|---|---|---:|---:|---:|---:|")
    for name, method in METHODS.items():
        for scene in scenes:
            median, fastest, segment = seconds(lambda: method(scene), repeats)
            count = len(np.unique(segment))
            print(f"| {name} | {scene.scene_id} | {len(scene.xyz):,} | {count:,} | {median:.3f} | {fastest:.3f} |")


Run = Callable[[float, int], tuple[np.ndarray, float]]  # (reg, threads) -> (components, wall seconds)


def _pycut_pursuit_here(x: np.ndarray, source: np.ndarray, target: np.ndarray, weight: np.ndarray) -> Run | None:
    """pycut-pursuit called in this process, where it imports."""
    try:
        from pycut_pursuit.cp_d0_dist import cp_d0_dist
    except ImportError:
        return None
    first_edge = np.zeros(len(x) + 1, np.uint32)
    np.cumsum(np.bincount(source, minlength=len(x)), out=first_edge[1:])

    def run(reg: float, threads: int) -> tuple[np.ndarray, float]:
        edge_weights = (2 * reg * weight).astype(np.float32)  # SPG's mapping of reg
        start = time.perf_counter()
        components, _ = cp_d0_dist(x.shape[1], np.asfortranarray(x.T), first_edge, target.astype(np.uint32),
                                   edge_weights=edge_weights, cp_dif_tol=1e-3, cp_it_max=15, verbose=False,
                                   max_num_threads=threads)
        return components.astype(np.int64), time.perf_counter() - start

    return run


def _pycut_pursuit_elsewhere(python: str, stack: contextlib.ExitStack) -> Run:
    """pycut-pursuit served by benchmarks/reference_cut_pursuit.py in another interpreter."""
    worker = stack.enter_context(subprocess.Popen(
        [python, str(REPO / "benchmarks" / "reference_cut_pursuit.py"), str(SPG_GRAPH)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    if worker.stdout.readline().strip() != "ready":
        raise SystemExit(f"{python} could not start benchmarks/reference_cut_pursuit.py: does pycut-pursuit "
                         f"import there? ({python} -m pip install pycut-pursuit 'numpy<2')")
    out = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "components.npy"

    def run(reg: float, threads: int) -> tuple[np.ndarray, float]:
        worker.stdin.write(f"{reg} {threads} {out}\n")
        worker.stdin.flush()
        seconds = float(worker.stdout.readline())
        return np.load(out), seconds

    stack.callback(worker.stdin.close)
    return run


def cut_pursuit_table(repeats: int, reference_python: str | None) -> None:
    """Ours on 1 and 2 Numba threads vs pycut-pursuit on 1 and 2 OpenMP threads, same graph.
    The configurations take turns (one call each, `repeats` rounds after a warm-up round), so
    a machine whose speed drifts slows them alike; each call's wall time is taken around the
    call alone, in its own interpreter."""
    if not SPG_GRAPH.is_dir():
        print(f"cut pursuit: {SPG_GRAPH} not found, not measured")
        return
    x = np.load(SPG_GRAPH / "features.npy")
    graph = np.load(SPG_GRAPH / "graph.npz")
    source, target, weight = graph["source"], graph["target"], graph["weight"]
    threads = [t for t in (1, 2) if t <= numba.config.NUMBA_NUM_THREADS]
    print(f"\ncut pursuit on scene0000_00's SPG graph ({len(x):,} vertices, {len(source):,} edges), "
          f"median of {repeats} interleaved rounds after a warm-up; E = SPG's energy of the partition\n")
    print("| reg | program | threads | segments | E | median s |")
    print("|---:|---|---:|---:|---:|---:|")
    before = numba.get_num_threads()

    def ours(reg: float, t: int) -> tuple[np.ndarray, float]:
        numba.set_num_threads(t)
        start = time.perf_counter()
        components, _ = cut_pursuit(x, source, target, weight, reg)
        return components, time.perf_counter() - start

    with contextlib.ExitStack() as stack:
        if reference_python:
            reference = _pycut_pursuit_elsewhere(reference_python, stack)
        else:
            reference = _pycut_pursuit_here(x, source, target, weight)
        programs = {"ours (Numba)": ours} | ({"pycut-pursuit": reference} if reference is not None else {})
        for reg in REGS:
            runs = [(name, t) for name in programs for t in threads]
            times: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
            last = {}
            for round_ in range(repeats + 1):
                for name, t in runs:
                    last[name, t], seconds = programs[name](reg, t)
                    if round_:
                        times[name, t].append(seconds)
            for (name, t), components in last.items():
                energy = partition_energy(x, source, target, weight, components, reg)
                print(f"| {reg} | {name} | {t} | {components.max() + 1} | {energy:.1f} | "
                      f"{np.median(times[name, t]):.3f} |")
            if reference is None:
                print(f"| {reg} | pycut-pursuit | | | not measured (not importable here; see --reference-python) | |")
    numba.set_num_threads(before)


def process_seconds(command: list[str], runs: int, cwd: Path) -> tuple[float, float]:
    """Median wall and CPU seconds of `command` run as a whole process `runs` times after one
    warm-up run (which fills the page cache); fails loudly if the command fails."""
    wall, cpu = [], []
    for i in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if i:
            wall.append(elapsed)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return float(np.median(wall)), float(np.median(cpu))


def segment_command_table(runs: int) -> None:
    """`python -m preprocess segment` and ScanNet's `segmentator` on scene0000_00, whole processes."""
    if not SCANNET_MESH.is_file():
        print(f"\nsegment command: {SCANNET_MESH} not found, not measured")
        return
    print(f"\nsegment command on scene0000_00, whole process, median of {runs} runs after one\n")
    print("| program | wall s | CPU s | same partition |")
    print("|---|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        ours = Path(tmp) / "ours.segs.json"
        command = [sys.executable, "-m", "preprocess", "segment", str(SCANNET_MESH), "--out", str(ours)]
        wall, cpu = process_seconds(command, runs, REPO)
        print(f"| python -m preprocess segment | {wall:.3f} | {cpu:.3f} | |")
        program = shutil.which("segmentator")
        if program is None:
            print("| ScanNet segmentator (C++) | not measured (not on PATH) | | |")
            return
        mesh = Path(tmp) / SCANNET_MESH.name  # it writes beside its input
        shutil.copy(SCANNET_MESH, mesh)
        wall, cpu = process_seconds([program, str(mesh), "0.01", "20"], runs, Path(tmp))
        theirs = np.array(json.loads((Path(tmp) / f"{mesh.stem}.0.010000.segs.json").read_text())["segIndices"])
        mine = np.array(json.loads(ours.read_text())["segIndices"])  # ids differ (its are union-find roots)
        pairs = np.unique(np.stack([mine, theirs]), axis=1).shape[1]
        same = pairs == np.unique(mine).size == np.unique(theirs).size
        print(f"| ScanNet segmentator (C++) | {wall:.3f} | {cpu:.3f} | {'yes' if same else 'NO'} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="in-process calls timed per method")
    parser.add_argument("--runs", type=int, default=7, help="whole-process runs of the segment command")
    parser.add_argument("--synthetic-vertices", type=int, default=500_000)
    parser.add_argument("--sweeps", type=int, default=5, help="nuScenes keyframes to time (0: skip nuScenes)")
    parser.add_argument("--only", choices=("methods", "cut-pursuit", "segment", "nuscenes"), help="one of the four tables")
    parser.add_argument("--reference-python", metavar="PYTHON",
                        help="an interpreter where pycut-pursuit imports (its wheels need numpy < 2), to run the "
                             "official cut pursuit there; default: import it here, else 'not measured'")
    args = parser.parse_args(argv)
    if args.only in (None, "methods"):
        methods_table(args.repeats, args.synthetic_vertices)
    if args.only in (None, "cut-pursuit"):
        cut_pursuit_table(args.repeats, args.reference_python)
    if args.only in (None, "segment"):
        segment_command_table(args.runs)
    if args.only in (None, "nuscenes") and args.sweeps > 0 and (NUSCENES / "v1.0-mini").is_dir():
        print("\n".join(nuscenes_table(args.repeats, args.sweeps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
