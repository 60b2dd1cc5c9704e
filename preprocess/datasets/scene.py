"""What every dataset reader returns: one scene's points and its camera views.

Readers validate at the boundary (shapes, finite values, files present) and raise
`DatasetError` naming the file and the fix; everything downstream trusts these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from shared.render import MeshRaycaster


@dataclass(frozen=True)
class View:
    """One camera image of a scene.

    `world_to_camera` maps the scene's point coordinates (the frame of `Scene.xyz`) into the
    OpenCV camera frame (x right, y down, z forward); `intrinsic` is the 3x3 matrix of the
    colour image at `width` x `height`.
    """

    name: str
    world_to_camera: np.ndarray  # (4,4) float64
    intrinsic: np.ndarray  # (3,3) float64
    width: int
    height: int
    load_color: Callable[[], np.ndarray]  # -> (H,W,3) uint8
    # -> (depth (h,w) float32 metres, 0 = no measurement, its (3,3) intrinsic); None: no depth
    load_depth: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
    # Where files another program made for this frame live (2D masks, label maps): see `frame_file`
    frame_root: Path | None = None
    frame: str = ""

    def frame_file(self, folder: str, suffix: str) -> Path:
        """`<frame_root>/<folder>/<frame><suffix>`: ScanNet layout `<scene>/<folder>/<view name>.png`,
        nuScenes `<root>/<folder>/<CAM>/<image stem>.png` (the readers set root and frame)."""
        if self.frame_root is None:
            raise ValueError(f"view {self.name}: its reader gives no place for per-frame files")
        return self.frame_root / folder / f"{self.frame}{suffix}"


@dataclass
class Scene:
    """A scene's geometry (mesh vertices or LiDAR points) and its views."""

    scene_id: str
    xyz: np.ndarray  # (N,3) float32
    rgb: np.ndarray  # (N,3) uint8 (zeros where the sensor gives no colour)
    faces: np.ndarray | None = None  # (F,3) int32 triangle vertex ids, meshes only
    gt: np.ndarray | None = None  # (N,) int16 benchmark class ids, -1 ignore
    instance: np.ndarray | None = None  # (N,) int32 instance ids (-1 none) where annotated
    normal: np.ndarray | None = None  # (N,3) float32 unit normals where the file has them (else ingest makes them)
    views: list[View] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)  # files whose content defines the scene
    meta: dict = field(default_factory=dict)  # axis_alignment, skipped frames, timestamps...

    @cached_property
    def raycaster(self) -> MeshRaycaster:
        """The mesh's ray-casting structure, built on first use and shared by every stage and
        view that renders this scene (building it costs more than casting a view)."""
        if self.faces is None:
            raise ValueError(f"scene {self.scene_id} has no mesh to cast rays at")
        from shared.render import MeshRaycaster  # open3d, only where something renders

        return MeshRaycaster(self.xyz, self.faces)
