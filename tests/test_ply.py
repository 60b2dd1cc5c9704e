"""PLY reading and writing: round trip, the ScanNet mesh, and each kind of bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.errors import DatasetError
from shared.ply import read_ply, write_ply

XYZ = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
RGB = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], dtype=np.uint8)
FACES = np.array([[0, 1, 2], [0, 2, 3], [1, 1, 3]], dtype=np.int32)  # the last is degenerate


def _ascii_ply(path: Path, faces: list[str]) -> Path:
    header = ["ply", "format ascii 1.0", "element vertex 4", "property float x", "property float y",
              "property float z", f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    path.write_text("\n".join(header + ["0 0 0", "1 0 0", "0 1 0", "0 0 1"] + faces) + "\n")
    return path


def test_round_trip_keeps_every_property_and_drops_degenerate_faces(tmp_path):
    labels = np.array([1, 2, 39, 0], dtype=np.uint16)
    alpha = np.full(4, 255, np.uint8)
    write_ply(tmp_path / "m.ply", XYZ, RGB, FACES, alpha=alpha, label=labels)
    mesh = read_ply(tmp_path / "m.ply")
    assert mesh["xyz"].dtype == np.float32 and np.array_equal(mesh["xyz"], XYZ)
    assert mesh["rgb"].dtype == np.uint8 and np.array_equal(mesh["rgb"], RGB)
    assert mesh["label"].dtype == np.uint16 and np.array_equal(mesh["label"], labels)
    assert np.array_equal(mesh["alpha"], alpha)
    assert mesh["faces"].dtype == np.int32 and mesh["faces"].tolist() == [[0, 1, 2], [0, 2, 3]]
    assert mesh["dropped_faces"] == 1


def test_point_cloud_without_faces_or_colour(tmp_path):
    write_ply(tmp_path / "p.ply", XYZ)
    cloud = read_ply(tmp_path / "p.ply")
    assert cloud["faces"] is None and "rgb" not in cloud and cloud["dropped_faces"] == 0
    header = (tmp_path / "p.ply").read_bytes().split(b"end_header\n")[0].decode()
    assert "binary_little_endian" in header and "element face" not in header


def test_write_is_byte_identical_for_identical_input(tmp_path):
    write_ply(tmp_path / "a.ply", XYZ, RGB, FACES)
    write_ply(tmp_path / "b.ply", XYZ.copy(), RGB.copy(), FACES.copy())
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()


def test_ascii_triangles_are_read(tmp_path):
    mesh = read_ply(_ascii_ply(tmp_path / "a.ply", ["3 0 1 2", "3 0 2 3"]))
    assert mesh["faces"].tolist() == [[0, 1, 2], [0, 2, 3]]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match=r"nothere\.ply: PLY file not found"):
        read_ply(tmp_path / "nothere.ply")


def test_truncated_file_is_named(tmp_path):
    write_ply(tmp_path / "t.ply", XYZ, RGB, FACES)
    data = (tmp_path / "t.ply").read_bytes()
    (tmp_path / "t.ply").write_bytes(data[:-20])
    with pytest.raises(DatasetError, match=r"t\.ply: corrupt or truncated PLY .*download or export it again"):
        read_ply(tmp_path / "t.ply")


def test_garbage_header_is_named(tmp_path):
    (tmp_path / "g.ply").write_bytes(b"not a ply at all\x00\x01")
    with pytest.raises(DatasetError, match=r"g\.ply: corrupt or truncated PLY"):
        read_ply(tmp_path / "g.ply")


def test_nan_vertices_are_named(tmp_path):
    xyz = XYZ.copy()
    xyz[2, 1] = np.nan
    xyz[3, 0] = np.inf
    write_ply(tmp_path / "n.ply", xyz, RGB, FACES)
    with pytest.raises(DatasetError, match=r"n\.ply: 2 vertices have NaN or infinite coordinates \(first: vertex 2\)"):
        read_ply(tmp_path / "n.ply")


def test_non_triangle_faces_are_named(tmp_path):
    with pytest.raises(DatasetError, match=r"q\.ply: face 1 is not a triangle; triangulate"):
        read_ply(_ascii_ply(tmp_path / "q.ply", ["3 0 1 2", "4 0 1 2 3"]))
    # binary: a quad written by hand after one triangle
    body = np.zeros(4, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")]).tobytes()
    faces = bytes([3]) + np.array([0, 1, 2], "<i4").tobytes() + bytes([4]) + np.array([0, 1, 2, 3], "<i4").tobytes()
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
              "property float z\nelement face 2\nproperty list uchar int vertex_indices\nend_header\n")
    (tmp_path / "b.ply").write_bytes(header.encode() + body + faces)
    with pytest.raises(DatasetError, match=r"b\.ply: face 1 is not a triangle"):
        read_ply(tmp_path / "b.ply")


def test_face_index_out_of_range_is_named(tmp_path):
    write_ply(tmp_path / "o.ply", XYZ, RGB, np.array([[0, 1, 2], [1, 2, 4]]))
    with pytest.raises(DatasetError, match=r"o\.ply: face 1 refers to vertex 4 but the mesh has 4 vertices"):
        read_ply(tmp_path / "o.ply")


@pytest.mark.realdata
def test_scannet_mesh(scannet_scene0000):
    mesh = read_ply(scannet_scene0000 / "scene0000_00_vh_clean_2.ply")
    assert mesh["xyz"].shape == (81369, 3) and mesh["rgb"].shape == (81369, 3)
    assert mesh["faces"].shape == (153587, 3) and mesh["dropped_faces"] == 0
    assert mesh["faces"].max() == 81368
