"""Binary PLY files for both programs: reading meshes and point clouds (ScanNet's
`_vh_clean_2.ply`, the generated scenes, a user's own scans for `predict`) and writing them
(the generated dataset's meshes, coloured predictions). Writing uses numpy's record bytes, so
identical input gives identical files.

`read_ply` validates at the boundary (file present and complete, finite vertices, triangle
faces inside the vertex range) so readers can trust what it returns.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElementParseError, PlyParseError

from shared.errors import DatasetError

_FACE_PROPS = ("vertex_indices", "vertex_index")
_MAX_HEADER = 1 << 16  # bytes searched for end_header; ScanNet's headers are a few hundred
# Triangle lists are read as fixed-length records (memory-mapped, no per-face Python).
_KNOWN_LIST_LEN = {"face": {name: 3 for name in _FACE_PROPS}}


def read_ply(path: str | os.PathLike) -> dict[str, np.ndarray | int | None]:
    """A PLY mesh or point cloud as arrays.

    Returns `xyz` f32 (N,3); `rgb` u8 (N,3) when red/green/blue exist; every other vertex
    property under its own name (e.g. `alpha`, `label`) with its file dtype; `faces` int32
    (F,3) or None without a face element; `dropped_faces`, the number of degenerate faces
    (a repeated vertex id) removed because they have no area and no normal.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: PLY file not found; check the dataset root and scene folder")
    check_element_counts(path)
    try:
        ply = PlyData.read(str(path), known_list_len=_KNOWN_LIST_LEN)
    except PlyElementParseError as e:
        if e.element.name == "face" and e.message == "unexpected list length":
            raise DatasetError(
                f"{path}: face {e.row} is not a triangle; triangulate the mesh "
                "(e.g. open3d or MeshLab) and save it again"
            ) from None
        if e.element.name != "face":
            raise _corrupt(path, e) from None
        # The fast read assumes triangles, so a shorter face list looks like an early end of file:
        # read the lists one by one to tell a polygon (named by `_faces`) from a truncated file.
        try:
            ply = PlyData.read(str(path))
        except (PlyParseError, ValueError, EOFError, OSError) as error:
            raise _corrupt(path, error) from None
    except (PlyParseError, ValueError, EOFError, OSError) as e:
        raise _corrupt(path, e) from None

    if "vertex" not in ply:
        raise DatasetError(f"{path}: PLY has no 'vertex' element; it is not a mesh or point cloud")
    vertex = ply["vertex"].data
    names = list(vertex.dtype.names)
    missing = [c for c in ("x", "y", "z") if c not in names]
    if missing:
        raise DatasetError(f"{path}: vertex properties {missing} missing; export the PLY with x, y, z")
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float32)
    bad = ~np.isfinite(xyz).all(axis=1)
    if bad.any():
        raise DatasetError(
            f"{path}: {int(bad.sum())} vertices have NaN or infinite coordinates "
            f"(first: vertex {int(np.flatnonzero(bad)[0])}); remove them from the mesh and save it again"
        )
    out: dict[str, np.ndarray | int | None] = {"xyz": xyz}
    if all(c in names for c in ("red", "green", "blue")):
        out["rgb"] = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1).astype(np.uint8)
    for name in names:
        if name not in ("x", "y", "z", "red", "green", "blue"):
            out[name] = np.array(vertex[name])

    faces, dropped = None, 0
    if "face" in ply:
        faces, dropped = _faces(ply["face"].data, len(xyz), path)
    out["faces"] = faces
    out["dropped_faces"] = dropped
    return out


def check_element_counts(path: Path) -> None:
    """DatasetError when the header declares more rows than the file has bytes.

    Every row takes at least a byte, so such a header is corrupt; plyfile would first allocate
    arrays of that many rows (terabytes of object pointers for ASCII or polygon faces).
    """
    with open(path, "rb") as f:
        head = f.read(_MAX_HEADER)
    end = head.find(b"end_header")
    if end < 0:
        return  # plyfile names what is wrong with such a header
    rows = sum(int(n) for n in re.findall(rb"^element[ \t]+\S+[ \t]+(\d+)[ \t]*\r?$", head[:end], re.MULTILINE))
    size = path.stat().st_size
    if rows > size:
        raise DatasetError(
            f"{path}: header declares {rows} rows but the file has {size} bytes; it is corrupt or truncated, "
            "download or export it again"
        )


def _corrupt(path: Path, error: Exception) -> DatasetError:
    return DatasetError(f"{path}: corrupt or truncated PLY ({error}); download or export it again")


def _faces(data: np.ndarray, num_vertices: int, path: Path) -> tuple[np.ndarray, int]:
    """Triangles as int32 (F,3), checked against the vertex count, degenerate ones dropped."""
    prop = next((p for p in _FACE_PROPS if p in data.dtype.names), None)
    if prop is None:
        raise DatasetError(f"{path}: face element has no 'vertex_indices' list; export the mesh with triangle faces")
    column = data[prop]
    if column.dtype == object:  # ASCII PLY or a stream that cannot be memory-mapped
        lengths = np.fromiter((len(f) for f in column), dtype=np.int64, count=len(column))
        if (lengths != 3).any():
            raise DatasetError(
                f"{path}: face {int(np.flatnonzero(lengths != 3)[0])} is not a triangle; "
                "triangulate the mesh (e.g. open3d or MeshLab) and save it again"
            )
        column = np.vstack(column) if len(column) else np.zeros((0, 3), np.int64)
    faces = np.asarray(column, dtype=np.int64).reshape(-1, 3)
    outside = (faces < 0) | (faces >= num_vertices)
    if outside.any():
        row = int(np.flatnonzero(outside.any(axis=1))[0])
        raise DatasetError(
            f"{path}: face {row} refers to vertex {int(faces[row][outside[row]][0])} but the mesh has "
            f"{num_vertices} vertices; the file is corrupt, download or export it again"
        )
    degenerate = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
    return faces[~degenerate].astype(np.int32), int(degenerate.sum())


def write_ply(
    path: str | os.PathLike,
    xyz: np.ndarray,
    rgb: np.ndarray | None = None,
    faces: np.ndarray | None = None,
    **vertex_scalars: np.ndarray,
) -> Path:
    """Write a binary little-endian PLY: x,y,z (f32), red,green,blue (u8) when given, then each
    keyword array as a vertex property of its own dtype, then triangles as `vertex_indices`."""
    xyz = np.asarray(xyz, dtype=np.float32)
    n = len(xyz)
    fields: list[tuple[str, np.ndarray]] = [("x", xyz[:, 0]), ("y", xyz[:, 1]), ("z", xyz[:, 2])]
    if rgb is not None:
        rgb = np.asarray(rgb, dtype=np.uint8)
        fields += [("red", rgb[:, 0]), ("green", rgb[:, 1]), ("blue", rgb[:, 2])]
    fields += [(name, np.asarray(values)) for name, values in vertex_scalars.items()]
    for name, values in fields:
        if values.shape != (n,):
            raise ValueError(f"write_ply({path}): vertex property {name!r} has shape {values.shape}, expected ({n},)")
    vertex = np.empty(n, dtype=[(name, values.dtype.newbyteorder("<")) for name, values in fields])
    for name, values in fields:
        vertex[name] = values

    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property {_PLY_TYPES[vertex.dtype[name].str[1:]]} {name}" for name, _ in fields]
    face_bytes = b""
    if faces is not None:
        faces = np.asarray(faces).reshape(-1, 3)
        record = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
        record["n"] = 3
        record["v"] = faces
        face_bytes = record.tobytes()
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    header.append("end_header")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(vertex.tobytes())
        f.write(face_bytes)
    return path


# numpy dtype codes (without byte order) -> PLY property types
_PLY_TYPES = {
    "i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort",
    "i4": "int", "u4": "uint", "f4": "float", "f8": "double",
}
