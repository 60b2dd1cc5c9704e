"""Scans as users have them, read into one shape: what `python -m train predict` labels, and
what a dataset of the user's own files can read.

`read_scan(path)` takes
- a PLY mesh or point cloud (x, y, z; red, green, blue and nx, ny, nz where present);
- a `.npy` array (N, 3 | 6 | 9): x y z [r g b [nx ny nz]], colours 0-255 (or 0-1);
- a `.pth` file (loaded without running pickled code): Pointcept's dict ({"coord", "color",
  "normal"}) or OpenScene's tuple (coords, colours in [-1, 1][, labels]);
- a nuScenes LiDAR sweep (`.pcd.bin`, no colours);
- a folder: a ScanNet scene (`<scene>/<scene>_vh_clean_2.ply`, with its ground truth where
  `<scene>_vh_clean_2.labels.ply` is beside it) or Pointcept's scene folder (coord.npy[,
  color.npy, normal.npy]).
`scan_inputs(paths)` expands other folders into the files above inside them. A dataset of PLY
files (preprocess/datasets/ply_folder.py) reads its scenes with `scan_of_ply`, so a model
trained on it sees the same points, colours and normals in `predict`.

Every problem is a `DatasetError` naming the file and the fix, so a caller labelling many files
can report one line for a bad one and go on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from shared.errors import DatasetError, first_line
from shared.lidar import read_lidar_points
from shared.ply import read_ply

SWEEP_SUFFIX = ".pcd.bin"
SCAN_SUFFIXES = (".ply", ".npy", ".pth", SWEEP_SUFFIX)
SCANNET_MESH = "{}_vh_clean_2.ply"


@dataclass(frozen=True)
class Scan:
    """One scan's points; `faces` only for a mesh, `rgb` / `normal` only where the file has them."""

    name: str  # the scene's name: a ScanNet folder's name, else the file name without its suffix
    source: Path
    kind: str  # "mesh" | "points" | "sweep"
    xyz: np.ndarray  # (N, 3) f32
    rgb: np.ndarray | None = None  # (N, 3) u8
    normal: np.ndarray | None = None  # (N, 3) f32, unit
    faces: np.ndarray | None = None  # (F, 3) i32
    gt: np.ndarray | None = None  # (N,) ground-truth class per point, into `gt_classes` (-1: none)
    gt_classes: tuple[str, ...] = ()

    def with_normals(self, knn: int = 30) -> "Scan":
        """This scan with normals: its own, else made as the ingest stage makes them
        (`shared.normals.scan_normals`)."""
        if self.normal is not None:
            return self
        from shared.normals import scan_normals  # open3d: only where normals are made

        return replace(self, normal=scan_normals(self.xyz, self.faces, knn, sweep=self.kind == "sweep"))


def scan_name(path: Path) -> str:
    return path.name[: -len(SWEEP_SUFFIX)] if path.name.endswith(SWEEP_SUFFIX) else path.stem


def is_scan_folder(path: Path) -> bool:
    return (path / SCANNET_MESH.format(path.name)).is_file() or (path / "coord.npy").is_file()


def scan_inputs(paths: list[str | os.PathLike]) -> list[Path]:
    """The scans named by `paths`, in order: files as given, scene folders as one scan each,
    other folders expanded (sorted) into the scans inside them."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir() and not is_scan_folder(path):
            inside = sorted(p for p in path.iterdir() if (p.is_file() and p.name.endswith(SCAN_SUFFIXES)) or
                            (p.is_dir() and is_scan_folder(p)))
            out.extend(inside or [path])  # an empty folder stays, to be reported by read_scan
        else:
            out.append(path)
    return out


def read_scan(path: str | os.PathLike) -> Scan:
    """The scan in `path` (a file or scene folder, see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        mesh = path / SCANNET_MESH.format(path.name)
        if mesh.is_file():
            return replace(_read_ply(mesh), name=path.name, source=path, **_scannet_gt(mesh))
        if (path / "coord.npy").is_file():
            return _read_pointcept_folder(path)
        raise DatasetError(f"{path}: a folder that holds no scan (expected {SCANNET_MESH.format(path.name)}, "
                           f"coord.npy, or files ending in {', '.join(SCAN_SUFFIXES)})")
    if not path.is_file():
        raise DatasetError(f"{path}: not found")
    if path.name.endswith(SWEEP_SUFFIX):
        return Scan(scan_name(path), path, "sweep", np.ascontiguousarray(read_lidar_points(path)[:, :3]))
    reader = {".ply": _read_ply, ".npy": _read_npy, ".pth": _read_pth}.get(path.suffix.lower())
    if reader is None:
        raise DatasetError(f"{path}: unknown scan format; give a .ply, .npy, .pth or .pcd.bin file or a ScanNet scene folder")
    return reader(path)


def _scannet_gt(mesh: Path) -> dict:
    """A ScanNet mesh's ground truth (the nyu40 `label` of `_vh_clean_2.labels.ply`) as benchmark
    classes, where that file is present and matches the mesh."""
    from shared.classes import SCANNET

    labels = mesh.with_name(mesh.name.replace(".ply", ".labels.ply"))
    if not labels.is_file():
        return {}
    raw = read_ply(labels)
    if "label" not in raw or len(raw["xyz"]) != len(read_ply(mesh)["xyz"]):
        raise DatasetError(f"{labels}: no per-vertex 'label' for every vertex of {mesh.name}; download it again")
    return {"gt": SCANNET.map_raw(raw["label"]).astype(np.int64), "gt_classes": SCANNET.names}


def _read_ply(path: Path) -> Scan:
    return scan_of_ply(path, read_ply(path))


def scan_of_ply(path: Path, ply: dict) -> Scan:
    """The scan of a PLY file as `read_ply` returned it (its other vertex properties, e.g. a
    `label`, are the caller's to read)."""
    faces = ply["faces"] if ply["faces"] is not None and len(ply["faces"]) else None
    normal = None
    if all(k in ply for k in ("nx", "ny", "nz")):
        normal = _unit(np.stack([ply["nx"], ply["ny"], ply["nz"]], axis=1), path)
    return Scan(scan_name(path), path, "mesh" if faces is not None else "points", ply["xyz"], ply.get("rgb"), normal, faces)


def _read_npy(path: Path) -> Scan:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as e:  # object arrays need pickle: refused
        raise DatasetError(f"{path}: not a plain numeric array ({e}); save an (N, 3|6|9) float array") from None
    return _columns(array, path)


def _read_pth(path: Path) -> Scan:
    import torch

    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's array constructor, under whichever module name it has
    dtypes = {type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.uint8, np.int16, np.int32, np.int64, np.uint32, bool)}
    try:
        with torch.serialization.safe_globals([reconstruct, np.ndarray, np.dtype, *dtypes]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- pickled code is refused; a corrupt file fails anywhere
        raise DatasetError(f"{path}: cannot read it as arrays without running pickled code ({first_line(e)}); save plain "
                           "tensors or NumPy arrays") from None
    if isinstance(data, dict):
        xyz = _pick(data, ("coord", "xyz", "points"), path, required=True)
        return scan_from_arrays(xyz, _pick(data, ("color", "rgb", "colors"), path), _pick(data, ("normal", "normals"), path), source=path)
    if isinstance(data, (tuple, list)) and data:
        arrays = [_as_array(a, path) for a in data]
        return scan_from_arrays(arrays[0], arrays[1] if len(arrays) > 1 and arrays[1].ndim == 2 else None, source=path)
    return _columns(_as_array(data, path), path)


def _read_pointcept_folder(path: Path) -> Scan:
    arrays = {name: np.load(path / f"{name}.npy", allow_pickle=False) if (path / f"{name}.npy").is_file() else None
              for name in ("coord", "color", "normal")}
    return replace(scan_from_arrays(arrays["coord"], arrays["color"], arrays["normal"], source=path / "coord.npy"), name=path.name, source=path)


def _pick(data: dict, names: tuple[str, ...], path: Path, required: bool = False) -> np.ndarray | None:
    for name in names:
        if name in data:
            return _as_array(data[name], path)
    if required:
        raise DatasetError(f"{path}: a dict without point coordinates (keys {sorted(map(str, data))}); expected one of {list(names)}")
    return None


def _as_array(value: object, path: Path) -> np.ndarray:
    if hasattr(value, "numpy"):
        value = value.numpy()
    if not isinstance(value, np.ndarray):
        raise DatasetError(f"{path}: holds a {type(value).__name__} where an array was expected")
    return value


def _columns(array: np.ndarray, path: Path) -> Scan:
    """x y z [r g b [nx ny nz]] columns of one array."""
    if array.ndim != 2 or array.shape[1] not in (3, 6, 9):
        raise DatasetError(f"{path}: an array of shape {array.shape}; expected (N, 3), (N, 6) or (N, 9): x y z [r g b [nx ny nz]]")
    columns = array.shape[1]
    return scan_from_arrays(array[:, :3], array[:, 3:6] if columns >= 6 else None, array[:, 6:9] if columns == 9 else None, source=path)


def scan_from_arrays(xyz: np.ndarray, rgb: np.ndarray | None = None, normal: np.ndarray | None = None,
                     faces: np.ndarray | None = None, source: str | os.PathLike = "arrays") -> Scan:
    """A scan of arrays, checked: (N, 3) finite coordinates, colours and normals of the same
    shape (colours 0-255, 0-1 or [-1, 1]), triangles inside the vertex range."""
    path = Path(source)
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or not len(xyz):
        raise DatasetError(f"{path}: point coordinates of shape {xyz.shape}; expected (N, 3) with N > 0")
    xyz = xyz.astype(np.float32)
    if not np.isfinite(xyz).all():
        raise DatasetError(f"{path}: {int((~np.isfinite(xyz).all(axis=1)).sum())} points have NaN or infinite coordinates; remove them")
    for name, array in (("colours", rgb), ("normals", normal)):
        if array is not None and np.asarray(array).shape != xyz.shape:
            raise DatasetError(f"{path}: {name} of shape {np.asarray(array).shape} for {len(xyz)} points; expected {xyz.shape}")
    if faces is not None:
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and (faces.min() < 0 or faces.max() >= len(xyz))):
            raise DatasetError(f"{path}: faces must be (F, 3) vertex ids below {len(xyz)}")
        faces = faces.astype(np.int32)
    return Scan(scan_name(path), path, "points" if faces is None or not len(faces) else "mesh", xyz,
                None if rgb is None else _colours(np.asarray(rgb), path),
                None if normal is None else _unit(np.asarray(normal), path), faces)


def _colours(rgb: np.ndarray, path: Path) -> np.ndarray:
    """u8 colours from 0-255, 0-1 or [-1, 1] (OpenScene) values."""
    if rgb.dtype == np.uint8:
        return rgb
    rgb = rgb.astype(np.float64)
    if not np.isfinite(rgb).all() or rgb.min() < -1 or rgb.max() > 255:
        raise DatasetError(f"{path}: colours outside 0-255 (found {rgb.min():g} to {rgb.max():g})")
    if rgb.min() < 0:
        rgb = (rgb + 1) * 127.5
    elif rgb.max() <= 1:
        rgb = rgb * 255
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _unit(normal: np.ndarray, path: Path) -> np.ndarray:
    normal = normal.astype(np.float32)
    if not np.isfinite(normal).all():
        raise DatasetError(f"{path}: normals with NaN or infinite values")
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    return np.where(length > 0, normal / np.maximum(length, 1e-12), 0).astype(np.float32)
