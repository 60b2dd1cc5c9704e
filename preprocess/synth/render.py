"""RGB-D frames of a room's mesh, ray-cast with the project's `MeshRaycaster`."""

from __future__ import annotations

import numpy as np

from shared.render import MeshRaycaster
from preprocess.synth.rooms import SynthMesh


def intrinsic_for(width: int, height: int) -> np.ndarray:
    """A ScanNet-like pinhole (58 degrees across) for a width x height image."""
    return np.array([[0.9 * width, 0, (width - 1) / 2], [0, 0.9 * width, (height - 1) / 2], [0, 0, 1.0]])


def render_frames(mesh: SynthMesh, camera_to_world: np.ndarray, intrinsic: np.ndarray, width: int, height: int,
                  raycaster: MeshRaycaster) -> tuple[np.ndarray, np.ndarray]:
    """Colour (frames,H,W,3) uint8 — each pixel its face's mean vertex colour, shaded by how
    squarely the face is seen — and true depth (frames,H,W) float32 metres (0 = nothing hit).

    All frames are cast in one call of `raycaster`, the mesh's, built once per room: building
    the BVH once instead of per frame is what keeps a room at a few seconds."""
    depth, face = raycaster.render(np.linalg.inv(camera_to_world), intrinsic, width, height)
    missed = face < 0
    forward = camera_to_world[:, :3, 2]
    corners = mesh.xyz[mesh.faces].astype(np.float64)
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    face_colour = mesh.rgb[mesh.faces].astype(np.float64).mean(axis=1)
    face = np.where(missed, 0, face)
    shade = 0.55 + 0.45 * np.abs(np.einsum("fhwc,fc->fhw", normal[face], forward))
    colour = np.where(missed[..., None], 0, np.clip(np.rint(face_colour[face] * shade[..., None]), 0, 255))
    return colour.astype(np.uint8), depth
