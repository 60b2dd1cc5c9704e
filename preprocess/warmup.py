"""`python -m preprocess compile`: compile every Numba kernel before a run needs it.

Numba compiles a kernel at its first call (seconds to tens of seconds each; the README's
command table gives the total) and keeps the machine code in its on-disk cache (`__pycache__` beside the source, or
NUMBA_CACHE_DIR), keyed by the source file's path and modification time. `make setup` runs this
command, so a new checkout (a user's, CI's) pays the compilation once, there, and not inside a
run or a test; it runs again after a kernel's source changes. It also builds the ahead-of-time
Felzenszwalb module the `segment` command starts from (`partition/felzenszwalb_aot.py`).

The kernels are warmed by calling the public functions on a tiny scene with the dtypes the
pipeline stages and the commands pass (a kernel is compiled once per argument type), and the
command fails if a kernel of the package was left uncompiled, so a new kernel cannot be
forgotten here.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time

import numpy as np

PACKAGES = ("preprocess", "shared")


def _tiny_room() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 0.8 m open box meshed at 5 cm, as the store holds a scene: xyz f32, faces i32, rgb u8,
    and its normals f32."""
    from shared.normals import mesh_normals

    n = 17
    s, t = np.meshgrid(np.linspace(0, 0.8, n), np.linspace(0, 0.8, n), indexing="ij")
    s, t = s.ravel(), t.ravel()
    zero = np.zeros_like(s)
    sides = [np.stack(c, axis=1) for c in ((s, t, zero), (s, zero, t), (zero, s, t), (s, t * 0 + 0.8, t))]
    i, j = np.meshgrid(np.arange(n - 1), np.arange(n - 1), indexing="ij")
    q = (i * n + j).ravel()
    grid = np.concatenate([np.stack([q, q + n, q + 1], 1), np.stack([q + 1, q + n, q + n + 1], 1)])
    xyz = np.concatenate(sides).astype(np.float32)
    xyz += np.random.default_rng(0).normal(scale=0.002, size=xyz.shape).astype(np.float32)
    faces = np.concatenate([grid + k * n * n for k in range(len(sides))]).astype(np.int32)
    rgb = np.random.default_rng(1).integers(0, 256, xyz.shape).astype(np.uint8)
    return xyz, faces, rgb, mesh_normals(xyz, faces).astype(np.float32)


def warm_up() -> list[str]:
    """Call every kernel's public function once on a tiny scene; returns the kernels of the
    package still without compiled code (empty when every one was reached)."""
    from preprocess.geometry.projection import project
    from preprocess.labels.transfer import fuse
    from preprocess.partition.cut_pursuit import cut_pursuit
    from preprocess.partition.felzenszwalb import felzenszwalb, felzenszwalb_points
    from preprocess.partition.felzenszwalb_kernels import edge_weights, segment, sort_edges, vertex_normals
    from preprocess.partition.superpoints import superpoints
    from preprocess.partition.vccs import vccs
    from shared.refine import refine_labels

    xyz, faces, rgb, normals = _tiny_room()
    felzenszwalb(xyz, faces)
    felzenszwalb_points(xyz, normals)
    felzenszwalb_points(xyz, normals, weights="lidar", intensity=rgb[:, 0].astype(np.float32), intensity_weight=0.5)
    # The JIT kernels too where the ahead-of-time module served the calls above.
    n = vertex_normals(xyz, faces)
    a, b = faces[:, 0].copy(), faces[:, 1].copy()
    a, b, w = sort_edges(a, b, edge_weights(xyz, n, a, b))
    segment(len(xyz), a, b, w, np.float32(0.01), 20)
    vccs(xyz, normals=normals, colors=rgb, voxel_resolution=0.05, seed_resolution=0.2)
    vccs(xyz, colors=rgb, voxel_resolution=0.05, seed_resolution=0.2)
    superpoints(xyz, k_nn=10, k_graph=5, reg=0.1)
    superpoints(xyz, colors=rgb, k_nn=10, k_graph=5, reg=0.1, voxel=0.05)
    cut_pursuit(normals, np.arange(len(xyz) - 1), np.arange(1, len(xyz)), np.ones(len(xyz) - 1), reg=0.1)

    camera = np.eye(4)
    camera[:3, 3] = [-0.4, -0.4, 1.5]
    intrinsic = np.array([[40.0, 0, 20], [0, 40.0, 15], [0, 0, 1]])
    depth = np.full((30, 40), 1.5, np.float32)
    project(xyz, camera, intrinsic, 40, 30)
    _, _, seen = project(xyz, camera, intrinsic, 40, 30, depth=(depth, intrinsic))
    idx = np.flatnonzero(seen)
    label = (idx % 3).astype(np.int16)
    table = np.ones((4, 8), np.float16)
    fused = fuse(len(xyz), 3, [(idx, label, np.ones(len(idx), np.float16), (table, idx % 4))])
    refine_labels(fused.label, fused.score.astype(np.float32), np.arange(len(xyz)) // 50, 3, features=fused.feat)
    return _unreached(_kernels())


def _unreached(kernels: list[tuple[str, object]]) -> list[str]:
    """The kernels neither compiled (or loaded from the cache) nor called by one that was: a
    kernel loaded from the cache brings the code of the kernels it calls without compiling them."""
    by_module = {(kernel.__module__, kernel.__name__): name for name, kernel in kernels}
    kernel_of = {name: kernel for name, kernel in kernels}
    reached = [name for name, kernel in kernels if kernel.signatures]
    seen = set(reached)
    while reached:
        caller = kernel_of[reached.pop()]
        for called in caller.py_func.__code__.co_names:
            name = by_module.get((caller.__module__, called))
            if name is not None and name not in seen:
                seen.add(name)
                reached.append(name)
    return [name for name, _ in kernels if name not in seen]


def _kernels() -> list[tuple[str, object]]:
    """Every Numba kernel defined in the packages' modules, by qualified name."""
    from numba.core.registry import CPUDispatcher

    found = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if info.name.endswith("__main__") or info.name.split(".")[-1].startswith("_felzenszwalb_aot"):
                continue
            module = importlib.import_module(info.name)
            found += [(f"{info.name}.{name}", value) for name, value in vars(module).items()
                      if isinstance(value, CPUDispatcher) and value.__module__ == info.name]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preprocess compile", description=__doc__.splitlines()[0])
    parser.add_argument("--no-aot", action="store_true", help="skip the ahead-of-time Felzenszwalb module")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if not args.no_aot:
        from preprocess.partition.felzenszwalb_aot import build

        try:
            print(f"built {build()}")
        except Exception as error:  # no C compiler, or a Numba without pycc: the JIT kernels serve
            print(f"no ahead-of-time Felzenszwalb module ({type(error).__name__}: {error}); "
                  "`segment` will start through Numba instead", file=sys.stderr)
    missing = warm_up()
    if missing:
        print("kernels the warm-up did not reach (add a call to preprocess/warmup.py): " + ", ".join(missing),
              file=sys.stderr)
        return 1
    print(f"{len(_kernels())} Numba kernels compiled into the cache in {time.perf_counter() - start:.0f} s")
    return 0
