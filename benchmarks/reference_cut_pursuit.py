"""The official parallel cut pursuit (PyPI `pycut-pursuit`, GPL; never a project dependency)
served to `bench_partitions.py --reference-python` from an interpreter where it imports: its
PyPI wheels need numpy < 2, which the project's environment does not have.

Run: `PY -m pip install pycut-pursuit 'numpy<2'`, then bench_partitions.py starts
`PY benchmarks/reference_cut_pursuit.py GRAPH_FOLDER` and talks to it on stdin/stdout: each
request line is "reg threads out.npy"; the answer line is the call's wall seconds, after which
the components are in out.npy. Only numpy and pycut_pursuit are imported here.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from pycut_pursuit.cp_d0_dist import cp_d0_dist


def main(folder: Path) -> None:
    x = np.load(folder / "features.npy")
    graph = np.load(folder / "graph.npz")
    source, target, weight = graph["source"], graph["target"], graph["weight"]
    if np.any(np.diff(source) < 0):
        raise SystemExit("the graph's edges must be sorted by source (its forward-star input)")
    first_edge = np.zeros(len(x) + 1, np.uint32)
    np.cumsum(np.bincount(source, minlength=len(x)), out=first_edge[1:])
    values = np.asfortranarray(x.T)
    heads = target.astype(np.uint32)
    print("ready", flush=True)
    for line in sys.stdin:
        reg, threads, out = line.split()
        edge_weights = (2 * float(reg) * weight).astype(np.float32)  # SPG's mapping of reg
        start = time.perf_counter()
        components, _ = cp_d0_dist(x.shape[1], values, first_edge, heads, edge_weights=edge_weights,
                                   cp_dif_tol=1e-3, cp_it_max=15, verbose=False, max_num_threads=int(threads))
        seconds = time.perf_counter() - start
        np.save(out, components.astype(np.int64))
        print(f"{seconds:.6f}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
