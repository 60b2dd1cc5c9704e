"""Felzenszwalb's kernels compiled ahead of time, so that `python -m preprocess segment` starts
without importing Numba, whose import and cache loading cost more than the segmentation.

`build()` (run by `python -m preprocess compile`, which `make setup` runs) compiles
`felzenszwalb_kernels.py` with numba.pycc into an extension module beside it, named after a
hash of that file's content, so an edited kernel is never served by a stale build. `kernels()`
returns that module where it exists, else the JIT-compiled kernels: the same code, only slower
to start (no C compiler, or a Numba without pycc, only costs that).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).with_name("felzenszwalb_kernels.py")
PACKAGE = "preprocess.partition"


def module_name() -> str:
    """The extension module's name for the kernel source as it is now."""
    return "_felzenszwalb_aot_" + hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]


@functools.cache
def kernels() -> ModuleType:
    """vertex_normals, edge_weights, sort_edges, segment: ahead-of-time where built, else JIT."""
    try:
        return importlib.import_module(f"{PACKAGE}.{module_name()}")
    except ImportError:
        return importlib.import_module(f"{PACKAGE}.felzenszwalb_kernels")


def build() -> Path:
    """Compile the kernels for this source into SOURCE's folder; remove builds of older sources.
    Returns the extension module's path. Needs a C compiler (numba.pycc links with it)."""
    import warnings

    from numba import types
    from numba.core.errors import NumbaPendingDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPendingDeprecationWarning)
        from numba.pycc import CC

    from preprocess.partition import felzenszwalb_kernels as jit

    name = module_name()
    cc = CC(name)
    cc.output_dir = str(SOURCE.parent)
    cc.verbose = False
    points, faces = types.float32[:, ::1], types.int32[:, ::1]
    ids, weights = types.int32[::1], types.float32[::1]
    # pycc compiles these calls into the JIT kernels with the kernels' own options
    # (error_model="numpy": a degenerate face gives NaN as in the C++, not an exception).
    vertex_normals, edge_weights, sort_edges, segment = jit.vertex_normals, jit.edge_weights, jit.sort_edges, jit.segment

    @cc.export("vertex_normals", points(points, faces))
    def _vertex_normals(vertices, faces):
        return vertex_normals(vertices, faces)

    @cc.export("edge_weights", weights(points, points, ids, ids))
    def _edge_weights(points, normals, a, b):
        return edge_weights(points, normals, a, b)

    @cc.export("sort_edges", types.Tuple((ids, ids, weights))(ids, ids, weights))
    def _sort_edges(a, b, w):
        return sort_edges(a, b, w)

    @cc.export("segment", ids(types.int64, ids, ids, weights, types.float32, types.int64))
    def _segment(n, a, b, w, c, min_verts):
        return segment(n, a, b, w, c, min_verts)

    cc.compile()
    built = next(SOURCE.parent.glob(f"{name}.*"))
    for old in SOURCE.parent.glob("_felzenszwalb_aot_*"):
        if not old.name.startswith(name + "."):
            old.unlink()
    return built
