"""Rooms written as ScanNet v2 scan folders (the scanned mesh with its labels and instance
annotation, meta .txt, exported frames, poses) plus the split files, each scene drawn from its
own `numpy.random.default_rng([seed, index])`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from shared.render import MeshRaycaster
from preprocess.synth.annotation import annotation_files
from preprocess.synth.render import intrinsic_for, render_frames
from preprocess.synth.rooms import SynthMesh, SynthRoom, build_mesh, make_room
from preprocess.synth.scan import SCAN_POSES, reconstruct, sensor_depth
from shared.ply import write_ply


def _matrix_text(matrix: np.ndarray) -> str:
    return "".join(" ".join(f"{v:f}" for v in row) + "\n" for row in matrix)


def write_scene(scene_dir: Path, scene_id: str, room: SynthRoom, mesh: SynthMesh, camera_to_world: np.ndarray,
                colours: np.ndarray, depths: np.ndarray) -> None:
    """The ScanNet v2 scan folder of `scene_id`: the mesh with its labels and instance
    annotation, meta .txt, and the exported frames (colour, depth in millimetres, poses)."""
    alpha = np.full(len(mesh.xyz), 255, np.uint8)
    write_ply(scene_dir / f"{scene_id}_vh_clean_2.ply", mesh.xyz, mesh.rgb, mesh.faces, alpha=alpha)
    write_ply(scene_dir / f"{scene_id}_vh_clean_2.labels.ply", mesh.xyz, mesh.rgb, mesh.faces, alpha=alpha, label=mesh.nyu40)
    segs, aggregation = annotation_files(scene_id, mesh, [o.name for o in room.objects])
    (scene_dir / f"{scene_id}_vh_clean_2.0.010000.segs.json").write_text(segs)
    (scene_dir / f"{scene_id}.aggregation.json").write_text(aggregation)
    frames, height, width = depths.shape
    k = intrinsic_for(width, height)
    info = {
        "axisAlignment": " ".join(f"{v:f}" for v in np.eye(4).ravel()),
        "colorHeight": height, "colorWidth": width, "depthHeight": height, "depthWidth": width,
        "fx_color": f"{k[0, 0]:f}", "fx_depth": f"{k[0, 0]:f}", "fy_color": f"{k[1, 1]:f}", "fy_depth": f"{k[1, 1]:f}",
        "mx_color": f"{k[0, 2]:f}", "mx_depth": f"{k[0, 2]:f}", "my_color": f"{k[1, 2]:f}", "my_depth": f"{k[1, 2]:f}",
        "numColorFrames": frames, "numDepthFrames": frames, "sceneType": room.scene_type.title(),
    }
    (scene_dir / f"{scene_id}.txt").write_text("".join(f"{key} = {value}\n" for key, value in info.items()))
    for sub in ("color", "depth", "pose", "intrinsic"):
        (scene_dir / sub).mkdir()
    k4 = np.eye(4)
    k4[:3, :3] = k
    for name in ("intrinsic_color", "intrinsic_depth"):
        (scene_dir / "intrinsic" / f"{name}.txt").write_text(_matrix_text(k4))
    for name in ("extrinsic_color", "extrinsic_depth"):
        (scene_dir / "intrinsic" / f"{name}.txt").write_text(_matrix_text(np.eye(4)))
    for i, (pose, colour, depth) in enumerate(zip(camera_to_world, colours, depths)):
        Image.fromarray(colour).save(scene_dir / "color" / f"{i}.jpg", quality=90)
        Image.fromarray(depth).save(scene_dir / "depth" / f"{i}.png", compress_level=1)
        (scene_dir / "pose" / f"{i}.txt").write_text(_matrix_text(pose))


def generate_scene(scene_dir: str | Path, index: int, seed: int = 0, resolution: float = 0.04, frames: int = 30,
                   width: int = 320, height: int = 240, voxel: float | None = None,
                   vertices: int | None = None) -> SynthMesh:
    """Generate and write scene `index` of the dataset of `seed`; returns the written mesh.

    The room's surfaces are meshed at `resolution` metres and scanned (`scan.reconstruct`):
    `SCAN_POSES` RGB-D frames (at least `frames`) at half the exported size, fused at `voxel`
    metres (default 5/8 of `resolution`: 2.5 cm), decimated to ScanNet's density (or to about
    `vertices` vertices, as many as a `voxel` fine enough gives) and labelled from the nearest
    generated surface. The exported frames are `frames` of the scan's poses,
    evenly spread, rendered at `width` x `height` with the same sensor noise. The folder is
    written beside its final place and then renamed, so it is never seen half-written."""
    rng = np.random.default_rng([seed, index])
    poses = max(SCAN_POSES, frames)
    room = make_room(rng, poses)
    source = build_mesh(room, np.random.default_rng(int(rng.integers(0, 2**63))), resolution)
    sensor = np.random.default_rng(int(rng.integers(0, 2**63)))
    raycaster = MeshRaycaster(source.xyz, source.faces)
    mesh = reconstruct(source, raycaster, room.camera_to_world, max(1, width // 2), max(1, height // 2),
                       resolution * 5 / 8 if voxel is None else voxel, sensor, vertices)
    exported = room.camera_to_world[np.arange(frames) * poses // frames]
    colours, depths = render_frames(source, exported, intrinsic_for(width, height), width, height, raycaster)
    scene_dir = Path(scene_dir)
    partial = scene_dir.with_name(f".{scene_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    write_scene(partial, scene_dir.name, room, mesh, exported, colours, sensor_depth(depths, sensor))
    shutil.rmtree(scene_dir, ignore_errors=True)
    partial.rename(scene_dir)
    return mesh


def generate(out_dir: str | Path, scenes: int = 10, seed: int = 0, val_fraction: float = 0.2, **scene_options) -> list[str]:
    """Write `scenes` rooms as `out_dir/scans/sceneXXXX_00/` plus `scannetv2_train.txt` and
    `scannetv2_val.txt` (the last `val_fraction` of the scenes, at least one when there are two
    or more). `scene_options` go to `generate_scene` (resolution, frames, width, height,
    voxel, vertices). Returns the scene ids."""
    if scenes < 1:
        raise ValueError(f"scenes must be >= 1, got {scenes}")
    out_dir = Path(out_dir)
    ids = [f"scene{i:04d}_00" for i in range(scenes)]
    for i, scene_id in enumerate(ids):
        generate_scene(out_dir / "scans" / scene_id, i, seed, **scene_options)
    n_val = max(1, round(scenes * val_fraction)) if scenes > 1 else 0
    (out_dir / "scannetv2_train.txt").write_text("".join(f"{s}\n" for s in ids[: scenes - n_val]))
    (out_dir / "scannetv2_val.txt").write_text("".join(f"{s}\n" for s in ids[scenes - n_val:]))
    return ids
