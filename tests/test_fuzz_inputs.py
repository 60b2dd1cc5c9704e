"""Fuzzing the dataset readers with hypothesis.

Valid small inputs (PLY meshes, ScanNet scan folders and .sens recordings, nuScenes table sets)
are built in a temporary folder and then mutated: cut short, miscounted, filled with NaN,
garbage bytes, missing keys, dangling tokens. Every case must end in either a valid result or
one `DatasetError` (a `ValueError` for the segment CLI) whose message names the file, never a
crash inside NumPy, struct, zlib, PIL or plyfile. Run with `--hypothesis-show-statistics` to see
the number of cases per target and the mix of mutations (`event`).
"""

from __future__ import annotations

import io
import json
import re
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from plyfile import PlyData, PlyElement

from preprocess.datasets.nuscenes import read_nuscenes_sample
from preprocess.datasets.scannet import read_scannet_scene
from shared.errors import DatasetError
from shared.ply import read_ply
from preprocess.segment_cli import read_mesh

T = TypeVar("T")
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SCENE = "scene0001_00"


@contextmanager
def _fresh_dir() -> Iterator[Path]:
    """A new folder per example (hypothesis reuses function-scoped fixtures across examples)."""
    with tempfile.TemporaryDirectory(prefix="fuzz") as d:
        yield Path(d)


def _named(call: Callable[[], T], *names: str, error: type[Exception] = DatasetError) -> T | None:
    """`call()`'s result, or None when it raised `error` naming one of `names`; anything else fails."""
    try:
        return call()
    except error as e:
        assert any(n in str(e) for n in names), f"error does not name {names}: {e}"
        assert "\n" not in str(e).strip() and "Traceback" not in str(e)
        return None


# --------------------------------------------------------------------------------------------
# PLY meshes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mesh:
    xyz: np.ndarray  # (N,3) float32
    faces: list[list[int]]
    fmt: str  # plyfile format: ascii, binary_little_endian, binary_big_endian
    colour: bool
    drop: str | None = None  # a vertex property left out


@st.composite
def meshes(draw) -> Mesh:
    n = draw(st.integers(1, 6))
    xyz = draw(arrays(np.float32, (n, 3), elements=st.floats(-10, 10, width=32)))
    faces = draw(st.lists(st.lists(st.integers(0, n - 1), min_size=3, max_size=3), max_size=6))
    fmt = draw(st.sampled_from(["ascii", "binary_little_endian", "binary_big_endian"]))
    return Mesh(xyz, faces, fmt, draw(st.booleans()))


def _ply_bytes(mesh: Mesh, label: np.ndarray | None = None) -> bytes:
    """The mesh written by plyfile (faces as uchar-counted int lists, ScanNet's layout)."""
    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")] if mesh.colour else []
    fields += [("label", "u2")] if label is not None else []
    vertex = np.zeros(len(mesh.xyz), dtype=[f for f in fields if f[0] != mesh.drop])
    for i, axis in enumerate("xyz"):
        if axis != mesh.drop:
            vertex[axis] = mesh.xyz[:, i]
    if label is not None:
        vertex["label"] = label
    face = np.empty(len(mesh.faces), dtype=[("vertex_indices", object)])
    for i, f in enumerate(mesh.faces):
        face[i] = (np.asarray(f, dtype=np.int32),)
    elements = [
        PlyElement.describe(vertex, "vertex"),
        PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"}, val_types={"vertex_indices": "i4"}),
    ]
    order = {"binary_big_endian": ">", "binary_little_endian": "<", "ascii": "="}[mesh.fmt]
    buf = io.BytesIO()
    PlyData(elements, text=mesh.fmt == "ascii", byte_order=order).write(buf)
    return buf.getvalue()


PLY_MUTATIONS = ("none", "truncate", "count", "nonfinite", "polygon", "out_of_range", "drop_xyz", "garbage")


def _mutated_ply(data: st.DataObject, mesh: Mesh, label: np.ndarray | None = None) -> tuple[str, bytes]:
    """A mutation kind and the PLY bytes after it."""
    kind = data.draw(st.sampled_from(PLY_MUTATIONS), label="mutation")
    event(f"ply: {kind} ({mesh.fmt})")
    if kind == "nonfinite":
        xyz = mesh.xyz.copy()
        xyz[data.draw(st.integers(0, len(xyz) - 1)), data.draw(st.integers(0, 2))] = data.draw(
            st.sampled_from([np.nan, np.inf, -np.inf]))
        mesh = replace(mesh, xyz=xyz)
    elif kind == "polygon":
        n = len(mesh.xyz)
        bad = data.draw(st.lists(st.integers(0, n - 1), min_size=0, max_size=5).filter(lambda f: len(f) != 3))
        mesh = replace(mesh, faces=mesh.faces + [bad] if data.draw(st.booleans()) else [bad] + mesh.faces)
    elif kind == "out_of_range":
        n = len(mesh.xyz)
        wrong = data.draw(st.one_of(st.integers(n, n + 1000), st.integers(-1000, -1)))
        face = [0, min(1, n - 1), wrong]
        mesh = replace(mesh, faces=mesh.faces + [data.draw(st.permutations(face))])
    elif kind == "drop_xyz":
        mesh = replace(mesh, drop=data.draw(st.sampled_from("xyz")))
    raw = _ply_bytes(mesh, label)
    if kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "count":
        element = data.draw(st.sampled_from(["vertex", "face"]))
        count = data.draw(st.one_of(st.integers(0, 12), st.integers(0, 2**40)))
        raw = re.sub(rf"element {element} \d+".encode(), f"element {element} {count}".encode(), raw, count=1)
    elif kind == "garbage":
        start = data.draw(st.integers(0, len(raw) - 1))
        junk = data.draw(st.binary(min_size=1, max_size=64))
        raw = raw[:start] + junk + raw[start + data.draw(st.integers(0, 64)):]
    return kind, raw


def _expected_error(kind: str) -> str | None:
    """What read_ply must say for mutations that always make the file unusable."""
    return {"nonfinite": "NaN or infinite", "polygon": "not a triangle", "out_of_range": "refers to vertex",
            "drop_xyz": "missing"}.get(kind)


def _check_mesh(out: dict) -> None:
    """What read_ply promises its callers: finite float32 vertices, in-range non-degenerate triangles."""
    xyz, faces = out["xyz"], out["faces"]
    assert xyz.dtype == np.float32 and xyz.ndim == 2 and xyz.shape[1] == 3 and np.isfinite(xyz).all()
    if "rgb" in out:
        assert out["rgb"].dtype == np.uint8 and out["rgb"].shape == xyz.shape
    if faces is not None:
        assert faces.dtype == np.int32 and faces.ndim == 2 and faces.shape[1] == 3
        assert ((faces >= 0) & (faces < len(xyz))).all()
        assert all((faces[:, i] != faces[:, j]).all() for i, j in ((0, 1), (1, 2), (0, 2)))
    assert isinstance(out["dropped_faces"], int) and out["dropped_faces"] >= 0


@settings(FUZZ, max_examples=300)
@given(mesh=meshes(), data=st.data())
def test_read_ply_fuzz(mesh: Mesh, data: st.DataObject) -> None:
    with _fresh_dir() as d:
        path = d / "mesh.ply"
        kind, raw = _mutated_ply(data, mesh)
        path.write_bytes(raw)
        out = _named(lambda: read_ply(path), str(path))
        if kind == "none":
            assert out is not None
            np.testing.assert_array_equal(out["xyz"], mesh.xyz)
            kept = [f for f in mesh.faces if len(set(f)) == 3]
            assert out["faces"].tolist() == kept and out["dropped_faces"] == len(mesh.faces) - len(kept)
        elif _expected_error(kind) is not None:
            try:
                read_ply(path)
            except DatasetError as e:
                assert _expected_error(kind) in str(e), str(e)
            else:
                raise AssertionError(f"{kind}: read_ply accepted the file")
        if out is not None:
            _check_mesh(out)


@settings(FUZZ, max_examples=150)
@given(mesh=meshes(), data=st.data())
def test_segment_cli_mesh_fuzz(mesh: Mesh, data: st.DataObject) -> None:
    """The segment CLI reads PLYs itself (it keeps degenerate faces): ValueError naming the file."""
    with _fresh_dir() as d:
        path = d / "mesh.ply"
        kind, raw = _mutated_ply(data, mesh)
        path.write_bytes(raw)
        out = _named(lambda: read_mesh(path), str(path), error=ValueError)
        if kind in ("polygon", "out_of_range", "drop_xyz"):
            assert out is None, f"{kind}: read_mesh accepted the file"
        if out is not None:
            vertices, faces = out
            assert vertices.dtype == np.float32 and vertices.ndim == 2 and vertices.shape[1] == 3
            assert faces.ndim == 2 and faces.shape[1] == 3 and ((faces >= 0) & (faces < len(vertices))).all()


@settings(FUZZ, max_examples=150)
@given(mesh=meshes(), data=st.data())
def test_scannet_mesh_and_labels_fuzz(mesh: Mesh, data: st.DataObject) -> None:
    """A scan folder whose mesh or labels PLY is mutated: a Scene or an error naming that PLY."""
    with _fresh_dir() as d:
        scan = d / SCENE
        scan.mkdir()
        mesh_path, labels_path = scan / f"{SCENE}_vh_clean_2.ply", scan / f"{SCENE}_vh_clean_2.labels.ply"
        label = data.draw(arrays(np.uint16, len(mesh.xyz)))
        target = data.draw(st.sampled_from(["mesh", "labels"]))
        kind, raw = _mutated_ply(data, mesh, label if target == "labels" else None)
        (mesh_path if target == "mesh" else labels_path).write_bytes(raw)
        if target == "mesh":
            labels_path.write_bytes(_ply_bytes(replace(mesh, colour=True), label))
        else:
            mesh_path.write_bytes(_ply_bytes(mesh))
        (scan / f"{SCENE}.txt").write_text("sceneType = Office\n")
        mutated = mesh_path if target == "mesh" else labels_path
        scene = _named(lambda: read_scannet_scene(scan, load_views=False), mutated.name)
        if kind == "none":
            assert scene is not None
        if scene is not None:
            n = len(scene.xyz)
            assert scene.rgb.shape == (n, 3) and scene.gt.shape == (n,) and scene.gt.dtype == np.int16
            assert ((scene.gt >= -1) & (scene.gt < 20)).all()
            assert scene.faces is not None and ((scene.faces >= 0) & (scene.faces < n)).all()
            assert scene.meta["dropped_faces"] >= 0


# --------------------------------------------------------------------------------------------
# ScanNet annotations, meta, exported frames
# --------------------------------------------------------------------------------------------
K4 = np.array([[50.0, 0, 4, 0], [0, 50.0, 3, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
W, H = 8, 6


def _scan(root: Path) -> Path:
    """A 4-vertex mesh with segs, aggregation, meta and 3 exported frames with valid poses."""
    d = root / SCENE
    for sub in ("color", "pose", "intrinsic"):
        (d / sub).mkdir(parents=True)
    mesh = Mesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.5]], np.float32), [[0, 1, 2], [1, 3, 2]],
                "binary_little_endian", True)
    (d / f"{SCENE}_vh_clean_2.ply").write_bytes(_ply_bytes(mesh))
    (d / f"{SCENE}.txt").write_text("axisAlignment = 0 -1 0 1 1 0 0 2 0 0 1 3 0 0 0 1\nsceneType = Office\n")
    (d / f"{SCENE}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"segIndices": [7, 7, 900, 31]}))
    (d / f"{SCENE}.aggregation.json").write_text(json.dumps({"segGroups": [
        {"id": 0, "objectId": 0, "segments": [900], "label": "chair"},
        {"id": 1, "objectId": 1, "segments": [7, 31], "label": "wall"},
    ]}))
    np.savetxt(d / "intrinsic" / "intrinsic_color.txt", K4, fmt="%f")
    for i in range(3):
        pose = np.eye(4)
        pose[:3, 3] = (i, 0.5, -2.0)
        np.savetxt(d / "pose" / f"{i}.txt", pose, fmt="%f")
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(d / "color" / f"{i}.jpg")
    return d


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _json_mutation(data: st.DataObject, document: object) -> bytes:
    """The document with one key removed or one value replaced, or bytes that are not JSON."""
    kind = data.draw(st.sampled_from(["replace", "drop_key", "truncate", "not_utf8", "top_level"]))
    event(f"json: {kind}")
    text = json.dumps(document).encode()
    if kind == "truncate":
        return text[: data.draw(st.integers(0, len(text) - 1))]
    if kind == "not_utf8":
        return b"\xff\xfe" + data.draw(st.binary(max_size=20))
    if kind == "top_level":
        return json.dumps(data.draw(JSON_VALUES)).encode()
    doc = json.loads(text)
    containers = []  # (parent, key) of every value in the document

    def walk(node: object) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, value in items:
            containers.append((node, key))
            walk(value)

    walk(doc)
    if not containers:
        return json.dumps(data.draw(JSON_VALUES)).encode()
    parent, key = data.draw(st.sampled_from(containers))
    if kind == "drop_key":
        del parent[key]
    else:
        parent[key] = data.draw(JSON_VALUES)
    return json.dumps(doc).encode()


def _matrix_text(data: st.DataObject) -> tuple[str, bytes]:
    """A pose or intrinsic file: -inf (ScanNet's failed tracking), NaN, singular, wrong shape, words."""
    kinds = ["-inf", "nan", "zeros", "shape", "word", "empty", "not_utf8", "ragged", "random"]
    kind = data.draw(st.sampled_from(kinds))
    if kind == "random":
        rows, cols = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
        text = "\n".join(" ".join(repr(v) for v in data.draw(st.lists(st.floats(), min_size=cols, max_size=cols)))
                         for _ in range(rows))
    elif kind in ("-inf", "nan", "zeros"):
        value = {"-inf": -np.inf, "nan": np.nan, "zeros": 0.0}[kind]
        text = "\n".join(" ".join(str(value) for _ in range(4)) for _ in range(4))
    elif kind == "shape":
        rows, cols = data.draw(st.sampled_from([(3, 4), (4, 3), (1, 16), (16, 1), (3, 3), (5, 4)]))
        text = "\n".join(" ".join("1" for _ in range(cols)) for _ in range(rows))
    elif kind == "word":
        text = "1 0 0 0\n0 1 0 0\n0 0 one 0\n0 0 0 1"
    elif kind == "ragged":
        text = "1 0 0 0\n0 1 0\n0 0 1 0\n0 0 0 1"
    elif kind == "empty":
        text = ""
    else:
        return kind, b"\xff\xfe\x00garbage"
    return kind, text.encode()


SCANNET_TARGETS = ("segs", "aggregation", "meta", "pose", "intrinsic")


@pytest.mark.parametrize("target", SCANNET_TARGETS)
@settings(FUZZ, max_examples=80)
@given(data=st.data())
def test_scannet_annotations_fuzz(target: str, data: st.DataObject) -> None:
    with _fresh_dir() as root:
        d = _scan(root)
        kind = None
        if target == "segs":
            path = d / f"{SCENE}_vh_clean_2.0.010000.segs.json"
            path.write_bytes(_json_mutation(data, json.loads(path.read_text())))
        elif target == "aggregation":
            path = d / f"{SCENE}.aggregation.json"
            path.write_bytes(_json_mutation(data, json.loads(path.read_text())))
        elif target == "meta":
            path = d / f"{SCENE}.txt"
            value = data.draw(st.sampled_from(["nan " * 16, "inf " * 16, "a " * 16, ""])
                              | st.lists(st.floats(), max_size=20).map(lambda v: " ".join(map(repr, v))))
            path.write_bytes(f"axisAlignment = {value}\n".encode() if data.draw(st.booleans()) else b"\xff\xfe=\x00")
        else:
            path = d / "pose" / "1.txt" if target == "pose" else d / "intrinsic" / "intrinsic_color.txt"
            kind, raw = _matrix_text(data)
            path.write_bytes(raw)
        event(f"scannet: {target} {kind or ''}")
        scene = _named(lambda: read_scannet_scene(d), path.name)
        if target == "pose" and kind in ("-inf", "nan"):
            assert scene is not None and scene.meta["skipped_frames"] == 1 and len(scene.views) == 2
        if scene is not None:
            assert scene.instance is None or (scene.instance.shape == (4,) and scene.instance.dtype == np.int32)
            assert np.isfinite(scene.meta["axis_alignment"]).all() and scene.meta["axis_alignment"].shape == (4, 4)
            for view in scene.views:
                assert np.isfinite(view.world_to_camera).all() and np.isfinite(view.intrinsic).all()
                assert view.load_color().shape == (H, W, 3)


# --------------------------------------------------------------------------------------------
# .sens recordings
# --------------------------------------------------------------------------------------------
def _sens_bytes(poses: list[np.ndarray], rng: np.random.Generator) -> bytes:
    """A SensReader v4 file: jpeg colour, zlib depth (layout in preprocess/datasets/sens.py)."""
    def mat(m: np.ndarray) -> bytes:
        return struct.pack("<16f", *np.asarray(m, np.float32).ravel())

    out = [struct.pack("<IQ", 4, 6), b"fuzzer", mat(K4), mat(np.eye(4)), mat(K4), mat(np.eye(4)),
           struct.pack("<2i4If", 2, 1, W, H, W, H, 1000.0), struct.pack("<Q", len(poses))]
    for i, pose in enumerate(poses):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(buf, format="JPEG")
        depth = zlib.compress(rng.integers(0, 5000, (H, W)).astype("<u2").tobytes())
        out += [mat(pose), struct.pack("<4Q", i, i, len(buf.getvalue()), len(depth)), buf.getvalue(), depth]
    return b"".join(out)


HEADER_FIELDS = {  # name -> (byte offset, struct format) in a file with a 6-byte sensor name
    "version": (0, "<I"), "name_length": (4, "<Q"), "compression": (274, "<i"), "color_width": (282, "<I"),
    "depth_height": (294, "<I"), "depth_shift": (298, "<f"), "num_frames": (302, "<Q"),
    "color_bytes": (310 + 64 + 16, "<Q"), "depth_bytes": (310 + 64 + 24, "<Q"),
}


@settings(FUZZ, max_examples=250)
@given(data=st.data())
def test_sens_fuzz(data: st.DataObject) -> None:
    """A scan folder viewed through its .sens only: every view's pixels are decoded too."""
    n = data.draw(st.integers(1, 3))
    poses = []
    for i in range(n):
        pose = np.eye(4)
        pose[:3, 3] = (i, 0, -2)
        poses.append(pose)
    kind = data.draw(st.sampled_from(["none", "truncate", "field", "pose", "flip"]))
    frame = data.draw(st.integers(0, n - 1))
    if kind == "pose":
        poses[frame] = np.full((4, 4), data.draw(st.sampled_from([-np.inf, np.nan, 0.0])))
    raw = bytearray(_sens_bytes(poses, np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))))
    if kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "field":
        name = data.draw(st.sampled_from(sorted(HEADER_FIELDS)))
        offset, fmt = HEADER_FIELDS[name]
        size = struct.calcsize(fmt)
        value = data.draw(st.floats(width=32) if fmt == "<f" else st.integers(0, 2 ** (8 * size) - 1))
        if fmt == "<i":
            value -= 2**31
        raw[offset: offset + size] = struct.pack(fmt, value)
        event(f"sens: field {name}")
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if kind != "field":
        event(f"sens: {kind}")
    with _fresh_dir() as root:
        d = _scan(root)
        for sub in ("pose", "color", "intrinsic"):
            for f in (d / sub).iterdir():
                f.unlink()
            (d / sub).rmdir()
        path = d / f"{SCENE}.sens"
        path.write_bytes(bytes(raw))
        scene = _named(lambda: read_scannet_scene(d), path.name)
        if kind == "none" or (kind == "pose" and not np.all(poses[frame] == 0)):
            assert scene is not None and len(scene.views) + scene.meta["skipped_frames"] == n
        if scene is None:
            return
        for view in scene.views:
            assert np.isfinite(view.world_to_camera).all() and np.isfinite(view.intrinsic).all()
            colour = _named(view.load_color, path.name)
            depth = _named(view.load_depth, path.name)
            if kind in ("none", "pose"):
                assert colour is not None and depth is not None
            if colour is not None:
                assert colour.dtype == np.uint8 and colour.ndim == 3
            if depth is not None:
                assert depth[0].dtype == np.float32 and depth[0].ndim == 2


# --------------------------------------------------------------------------------------------
# nuScenes tables
# --------------------------------------------------------------------------------------------
NU_VERSION = "v1.0-fuzz"
NU_SCENE = "scene-0916_000"


def _nuscenes_tables() -> dict[str, list[dict]]:
    """The structure of v1.0-mini for one keyframe: LIDAR_TOP and CAM_FRONT, with lidarseg."""
    return {
        "scene": [{"token": "sc", "log_token": "lg", "nbr_samples": 1, "first_sample_token": "s0",
                   "last_sample_token": "s0", "name": "scene-0916", "description": "fuzz"}],
        "sample": [{"token": "s0", "timestamp": 10, "prev": "", "next": "", "scene_token": "sc"}],
        "sensor": [{"token": "lid", "channel": "LIDAR_TOP", "modality": "lidar"},
                   {"token": "cam", "channel": "CAM_FRONT", "modality": "camera"}],
        "calibrated_sensor": [
            {"token": "cs_l", "sensor_token": "lid", "translation": [0.9, 0.0, 1.8],
             "rotation": [0.7, 0.0, 0.0, -0.7], "camera_intrinsic": []},
            {"token": "cs_c", "sensor_token": "cam", "translation": [1.7, 0.0, 1.5], "rotation": [0.5, -0.5, 0.5, -0.5],
             "camera_intrinsic": [[100.0, 0.0, 8.0], [0.0, 100.0, 6.0], [0.0, 0.0, 1.0]]},
        ],
        "ego_pose": [
            {"token": "el", "timestamp": 10, "rotation": [0.8, 0.0, 0.0, -0.6], "translation": [715.0, 1809.0, 0.0]},
            {"token": "ec", "timestamp": 12, "rotation": [0.8, 0.0, 0.0, -0.6], "translation": [715.1, 1809.0, 0.0]},
        ],
        "sample_data": [
            {"token": "sd_l", "sample_token": "s0", "ego_pose_token": "el", "calibrated_sensor_token": "cs_l",
             "timestamp": 10, "fileformat": "pcd", "is_key_frame": True, "height": 0, "width": 0,
             "filename": "samples/LIDAR_TOP/s0.pcd.bin", "prev": "", "next": ""},
            {"token": "sd_c", "sample_token": "s0", "ego_pose_token": "ec", "calibrated_sensor_token": "cs_c",
             "timestamp": 12, "fileformat": "jpg", "is_key_frame": True, "height": H, "width": W,
             "filename": "samples/CAM_FRONT/s0.jpg", "prev": "", "next": ""},
        ],
        "lidarseg": [{"token": "ls", "sample_data_token": "sd_l", "filename": "lidarseg/ls_lidarseg.bin"}],
        "category": [{"token": "c", "name": "vehicle.car", "description": "", "index": 17}],
    }


def _nuscenes(root: Path, tables: dict[str, list[dict]], points: np.ndarray, labels: np.ndarray) -> None:
    (root / NU_VERSION).mkdir()
    for name, records in tables.items():
        (root / NU_VERSION / f"{name}.json").write_text(json.dumps(records))
    for sub in ("samples/LIDAR_TOP", "samples/CAM_FRONT", "lidarseg"):
        (root / sub).mkdir(parents=True)
    points.astype("<f4").tofile(root / "samples/LIDAR_TOP/s0.pcd.bin")
    labels.astype(np.uint8).tofile(root / "lidarseg/ls_lidarseg.bin")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "samples/CAM_FRONT/s0.jpg")


NU_MUTATIONS = ("none", "drop_table", "json", "drop_record", "drop_key", "dangling", "value",
                "points_length", "points_nan", "labels_length", "labels_value", "drop_file")


@settings(FUZZ, max_examples=300)
@given(kind=st.sampled_from(NU_MUTATIONS), data=st.data())
def test_nuscenes_fuzz(kind: str, data: st.DataObject) -> None:
    tables = _nuscenes_tables()
    n = data.draw(st.integers(1, 6))
    points = np.random.default_rng(n).normal(size=(n, 5)).astype(np.float32)
    labels = np.full(n, 17, np.uint8)
    with _fresh_dir() as root:
        _nuscenes(root, tables, points, labels)
        table_dir = root / NU_VERSION
        # Damaged records may surface in a referring table or as a missing file the table names.
        names: tuple[str, ...] = (str(root),)
        table = data.draw(st.sampled_from(sorted(tables)))
        records = tables[table]
        if kind == "drop_table":
            (table_dir / f"{table}.json").unlink()
            names = (f"{table}.json",)
        elif kind == "json":
            (table_dir / f"{table}.json").write_bytes(_json_mutation(data, records))
        elif kind in ("drop_record", "drop_key", "dangling", "value"):
            i = data.draw(st.integers(0, len(records) - 1))
            key = data.draw(st.sampled_from(sorted(records[i])))
            if kind == "drop_record":
                del records[i]
            elif kind == "drop_key":
                del records[i][key]
            elif kind == "dangling":
                key = data.draw(st.sampled_from([k for k in sorted(records[i]) if k.endswith("token")]))
                records[i][key] = data.draw(st.text(max_size=8))
            else:
                records[i][key] = data.draw(JSON_VALUES)
            (table_dir / f"{table}.json").write_text(json.dumps(records))
            event(f"nuscenes: {kind} {table}" + ("" if kind == "drop_record" else f".{key}"))
        elif kind == "points_length":
            size = data.draw(st.integers(0, 20 * n + 40).filter(lambda s: s != 20 * n))
            path = root / "samples/LIDAR_TOP/s0.pcd.bin"
            path.write_bytes((points.tobytes() + bytes(40))[:size])
            names = (path.name,)
        elif kind == "points_nan":
            points[data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, 2))] = np.nan
            path = root / "samples/LIDAR_TOP/s0.pcd.bin"
            points.tofile(path)
            names = (path.name,)
        elif kind == "labels_length":
            path = root / "lidarseg/ls_lidarseg.bin"
            path.write_bytes(bytes([17]) * data.draw(st.integers(0, n + 5).filter(lambda s: s != n)))
            names = (path.name,)
        elif kind == "labels_value":
            path = root / "lidarseg/ls_lidarseg.bin"
            labels[data.draw(st.integers(0, n - 1))] = data.draw(st.integers(32, 255))
            labels.tofile(path)
            names = (path.name,)
        elif kind == "drop_file":
            path = root / data.draw(st.sampled_from(["samples/LIDAR_TOP/s0.pcd.bin", "samples/CAM_FRONT/s0.jpg",
                                                      "lidarseg/ls_lidarseg.bin"]))
            path.unlink()
            names = (path.name,)
        if kind not in ("drop_record", "drop_key", "dangling", "value"):
            event(f"nuscenes: {kind}")
        scene = _named(lambda: read_nuscenes_sample(root, NU_VERSION, NU_SCENE), *names)
        if kind == "none":
            assert scene is not None and len(scene.views) == 1 and scene.gt is not None and len(scene.gt) == n
        elif kind in ("points_length", "points_nan", "labels_length", "labels_value", "drop_file"):
            assert scene is None, f"{kind}: accepted"
        if scene is not None:
            assert scene.xyz.shape == (len(scene.xyz), 3) and np.isfinite(scene.xyz).all()
            assert scene.gt is None or scene.gt.shape == (len(scene.xyz),)
            assert np.isfinite(scene.meta["lidar_to_global"]).all()
            for view in scene.views:
                assert np.isfinite(view.world_to_camera).all() and view.intrinsic.shape == (3, 3)
                assert np.isfinite(view.intrinsic).all()
