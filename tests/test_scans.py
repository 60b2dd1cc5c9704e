"""Reading scans as users have them (shared/scans.py): every format into one shape, colours and
normals normalised, folders expanded, pickled code refused, one clear error per bad file."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from shared.errors import DatasetError
from shared.ply import write_ply
from shared.scans import read_scan, scan_from_arrays, scan_inputs

XYZ = np.random.default_rng(0).uniform(0, 2, (200, 3)).astype(np.float32)
RGB = np.random.default_rng(1).integers(0, 256, (200, 3)).astype(np.uint8)


def test_every_format_reads_to_the_same_points(tmp_path):
    normal = np.tile([0.0, 0.0, 2.0], (200, 1))  # not unit: normalised on reading
    write_ply(tmp_path / "cloud.ply", XYZ, RGB, nx=normal[:, 0].astype(np.float32), ny=normal[:, 1].astype(np.float32),
              nz=normal[:, 2].astype(np.float32))
    np.save(tmp_path / "cols.npy", np.c_[XYZ, RGB, normal])
    np.save(tmp_path / "unit.npy", np.c_[XYZ, RGB / 255.0])
    torch.save({"coord": XYZ, "color": RGB, "normal": normal}, tmp_path / "pointcept.pth")
    torch.save((torch.from_numpy(XYZ), torch.from_numpy(RGB / 127.5 - 1)), tmp_path / "openscene.pth")
    folder = tmp_path / "scene7"
    folder.mkdir()
    np.save(folder / "coord.npy", XYZ)
    np.save(folder / "color.npy", RGB)
    for name in ("cloud.ply", "cols.npy", "unit.npy", "pointcept.pth", "openscene.pth", "scene7"):
        scan = read_scan(tmp_path / name)
        assert scan.kind == "points" and np.array_equal(scan.xyz, XYZ), name
        assert np.array_equal(scan.rgb, RGB), name
        if name in ("cloud.ply", "cols.npy", "pointcept.pth"):
            assert np.allclose(scan.normal, [0, 0, 1]), name
    assert read_scan(folder).name == "scene7" and read_scan(tmp_path / "cols.npy").name == "cols"


def test_meshes_sweeps_and_folders(tmp_path):
    faces = np.array([[0, 1, 2], [1, 2, 3]])
    scene = tmp_path / "scans" / "scene0001_00"
    write_ply(scene / "scene0001_00_vh_clean_2.ply", XYZ[:4], RGB[:4], faces)
    mesh = read_scan(scene)
    assert mesh.kind == "mesh" and mesh.name == "scene0001_00" and np.array_equal(mesh.faces, faces)
    assert np.allclose(np.linalg.norm(mesh.with_normals().normal, axis=1), 1)
    sweep = tmp_path / "scans" / "a.pcd.bin"
    np.c_[XYZ, np.zeros((200, 2))].astype("<f4").tofile(sweep)
    scan = read_scan(sweep)
    assert scan.kind == "sweep" and scan.name == "a" and scan.rgb is None and np.allclose(scan.xyz, XYZ)
    towards_sensor = (scan.with_normals().normal * -scan.xyz).sum(axis=1)
    assert (towards_sensor >= -1e-6).all()  # a sweep's normals face its sensor at the origin
    (tmp_path / "scans" / "notes.txt").write_text("not a scan")
    assert scan_inputs([tmp_path / "scans"]) == [sweep, scene]  # sorted; the scene folder is one scan


def test_pickled_code_in_a_pth_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"coord": XYZ, "hook": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(DatasetError, match="evil.pth: cannot read it as arrays without running pickled code"):
        read_scan(tmp_path / "evil.pth")
    assert not marker.exists()


@pytest.mark.parametrize("array, message", [
    (np.zeros((5, 4)), r"shape \(5, 4\); expected \(N, 3\), \(N, 6\) or \(N, 9\)"),
    (np.r_[np.zeros((2, 3)), [[np.nan, 0, 0]]], "1 points have NaN or infinite coordinates"),
    (np.c_[np.zeros((3, 3)), np.full((3, 3), 300.0)], "colours outside 0-255"),
    (np.array(["a", "b"], dtype=object), "not a plain numeric array"),
])
def test_bad_arrays_are_one_clear_error(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array, allow_pickle=True)
    with pytest.raises(DatasetError, match=message):
        read_scan(tmp_path / "bad.npy")


def test_missing_unknown_and_empty_inputs(tmp_path):
    with pytest.raises(DatasetError, match="none.ply: not found"):
        read_scan(tmp_path / "none.ply")
    (tmp_path / "x.xyz").write_text("0 0 0\n")
    with pytest.raises(DatasetError, match="x.xyz: unknown scan format"):
        read_scan(tmp_path / "x.xyz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: a folder that holds no scan"):
        read_scan(scan_inputs([tmp_path / "empty"])[0])
    with pytest.raises(DatasetError, match=r"faces must be \(F, 3\) vertex ids below 4"):
        scan_from_arrays(XYZ[:4], faces=np.array([[0, 1, 9]]))


@pytest.mark.realdata
def test_a_real_sweep_is_named_by_its_sample_data_token(shared_data):
    import json

    from shared.lidar import sample_data_token

    root = shared_data / "nuscenes"
    sweep = sorted((root / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))[0]
    records = json.loads((root / "v1.0-mini" / "sample_data.json").read_text())
    token = sample_data_token(sweep)
    assert [r["filename"] for r in records if r["token"] == token] == [f"samples/LIDAR_TOP/{sweep.name}"]
    scan = read_scan(sweep)
    assert scan.kind == "sweep" and len(scan.xyz) == sweep.stat().st_size // 20
