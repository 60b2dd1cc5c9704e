"""Binary PLY writing, for both programs: the generated dataset's meshes (preprocess) and
coloured predictions (train). numpy's record bytes, so identical input gives identical files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


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
