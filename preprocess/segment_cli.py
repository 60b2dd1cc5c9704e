"""`python -m preprocess segment MESH.ply`: a drop-in for ScanNet's `segmentator` program.

Writes ScanNet's `.segs.json` next to the mesh, under the name the C++ tool gives it
(`<base>.<kThresh as %f>.segs.json`, e.g. `scene0000_00_vh_clean_2.0.010000.segs.json`), so
tools that expect ScanNet's files can consume ours. Like the original, `segIndices` are vertex
ids (one representative vertex per segment: its smallest id), not 0..S-1.

The mesh is read here rather than with `shared.ply.read_ply` because a drop-in must see
the faces exactly as the C++ does: read_ply drops degenerate faces, which the original keeps
(their NaN normals change which vertices merge).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from plyfile import PlyData

from shared.ply import check_element_counts
from preprocess.partition.felzenszwalb import felzenszwalb


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess segment",
        description="Over-segment a triangle mesh PLY like ScanNet's Segmentator and write a .segs.json.",
    )
    parser.add_argument("mesh", type=Path, help="triangle mesh .ply (vertex x y z, face vertex_indices)")
    parser.add_argument("--k", type=float, default=0.01, help="kThresh: larger gives fewer segments (default 0.01)")
    parser.add_argument("--min-verts", type=int, default=20, help="segMinVerts: smallest segment size (default 20)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output path (default: <base>.<k>.segs.json beside the mesh)"
    )
    return parser


def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N,3) float32 vertices and (F,3) int64 faces of a triangle-mesh PLY; ValueError naming the file."""
    triangles = {"face": {"vertex_indices": 3, "vertex_index": 3}}  # lets plyfile memory-map and check
    try:
        check_element_counts(path)  # a corrupt count would make plyfile allocate terabytes first
        ply = PlyData.read(str(path), known_list_len=triangles)
    except Exception as error:  # plyfile raises several types, e.g. for a non-triangle face
        raise ValueError(f"{path}: cannot read as a triangle-mesh PLY ({error})") from error
    if "vertex" not in ply or "face" not in ply:
        raise ValueError(f"{path}: needs 'vertex' and 'face' elements; is it a triangle mesh?")
    vertex, face = ply["vertex"], ply["face"]
    if not {"x", "y", "z"} <= {p.name for p in vertex.properties}:
        raise ValueError(f"{path}: vertex element lacks x, y or z")
    names = {p.name for p in face.properties}
    index_name = "vertex_indices" if "vertex_indices" in names else "vertex_index"
    if index_name not in names:
        raise ValueError(f"{path}: face element has no 'vertex_indices' list")
    vertices = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float32)
    lists = face[index_name]
    if lists.dtype == object:  # ASCII files are not memory-mapped: one array per face
        lengths = np.array([len(f) for f in lists], dtype=np.int64)
        if np.any(lengths != 3):
            raise ValueError(f"{path}: only triangle faces are supported; triangulate the mesh first")
        lists = np.concatenate(lists).reshape(-1, 3) if len(lists) else np.empty((0, 3))
    faces = np.asarray(lists, dtype=np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f"{path}: faces refer to vertices outside 0..{len(vertices) - 1}; the file is corrupt")
    return vertices, faces


def segs_json(scene_id: str, k: float, min_verts: int, segment: np.ndarray) -> str:
    """ScanNet's .segs.json text; segIndices name each segment by its smallest vertex id."""
    _, first, inverse = np.unique(segment, return_index=True, return_inverse=True)
    params = {"kThresh": float(f"{np.float32(k):.6g}"), "segMinVerts": int(min_verts)}
    document = {"params": params, "sceneId": scene_id, "segIndices": first[inverse].tolist()}
    return json.dumps(document, separators=(",", ":"))


def main(argv: list[str] | None = None) -> int:
    """Segment one mesh; returns 0 on success, 1 when the mesh cannot be used."""
    args = build_parser().parse_args(argv)
    base = args.mesh.with_suffix("")
    out = args.out or base.parent / f"{base.name}.{float(np.float32(args.k)):.6f}.segs.json"
    try:
        vertices, faces = read_mesh(args.mesh)
        segment = felzenszwalb(vertices, faces, k=args.k, min_verts=args.min_verts)
        out.write_text(segs_json(base.name, args.k, args.min_verts, segment))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{int(segment.max(initial=-1)) + 1} segments written to {out}")
    return 0
