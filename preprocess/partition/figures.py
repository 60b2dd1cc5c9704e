"""Top-down pictures of partitions, side by side (like the seed paper's Figure 1).

For eyeballing what a method and its parameters do to a scene: each panel shows one
partition with a random colour per segment, seen from above in orthographic projection. The
view is rendered once (which vertex is seen at each pixel) and every panel only recolours it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open3d as o3d
from matplotlib.figure import Figure

from shared.viz import BACKGROUND, topdown_index

_DPI = 100


def _pixel_grid(xyz: np.ndarray, size: int, margin: int) -> tuple[np.ndarray, np.ndarray, float]:
    """World x,y of every pixel centre of a square top-down view (north up), and the pixel size."""
    lo, hi = xyz[:, :2].min(axis=0), xyz[:, :2].max(axis=0)
    pixel = max(float((hi - lo).max()), 1e-9) / (size - 2 * margin)
    centre = (lo + hi) / 2
    offsets = (np.arange(size) - (size - 1) / 2) * pixel
    return centre[0] + offsets, centre[1] - offsets, pixel


def _visible_mesh(xyz: np.ndarray, faces: np.ndarray, size: int, margin: int) -> np.ndarray:
    """Vertex seen from above at each pixel (the hit face's nearest corner), -1 for background."""
    xs, ys, _ = _pixel_grid(xyz, size, margin)
    gx, gy = np.meshgrid(xs, ys)
    top = float(xyz[:, 2].max()) + 1.0
    rays = np.zeros((size, size, 6), dtype=np.float32)
    rays[..., 0], rays[..., 1], rays[..., 2], rays[..., 5] = gx, gy, top, -1.0
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.ascontiguousarray(xyz, dtype=np.float32)),
        o3d.core.Tensor(np.ascontiguousarray(faces, dtype=np.uint32)),
    )
    hit = scene.cast_rays(o3d.core.Tensor(rays))
    face = hit["primitive_ids"].numpy().astype(np.int64)
    missed = ~np.isfinite(hit["t_hit"].numpy())
    uv = hit["primitive_uvs"].numpy()
    barycentric = np.stack([1 - uv[..., 0] - uv[..., 1], uv[..., 0], uv[..., 1]], axis=-1)
    corner = barycentric.argmax(axis=-1)
    vertex = faces[np.where(missed, 0, face), corner]
    return np.where(missed, -1, vertex)


def _visible_points(xyz: np.ndarray, size: int, margin: int, point_px: int) -> np.ndarray:
    """Highest point at each pixel of a square panel (the view centred in it), -1 for background."""
    index = topdown_index(xyz, size - 2 * margin, point_px)
    panel = np.full((size, size), -1, dtype=np.int64)
    top, left = (size - index.shape[0]) // 2, (size - index.shape[1]) // 2
    panel[top : top + index.shape[0], left : left + index.shape[1]] = index
    return panel


def plot_partitions(
    xyz: np.ndarray,
    faces: np.ndarray | None,
    partitions: dict[str, np.ndarray],
    out_png: str | Path,
    title: str | None = None,
    panel_px: int = 400,
    point_px: int = 2,
    seed: int = 0,
) -> Path:
    """Write a PNG with one top-down panel per partition, a random colour per segment.

    Parameters
    ----------
    xyz : (N,3) float array
        Vertex or point coordinates; z is up.
    faces : (F,3) integer array or None
        Triangles of a mesh (rendered solid); None draws the points as squares.
    partitions : dict of name -> (N,) integer segment ids
        One panel each, left to right, titled with its name and number of segments.
    out_png : path
        Where to write the picture: len(partitions) * panel_px wide, panel_px plus a title
        band (30 px, 60 px with `title`) high.
    title : str, optional
        Heading over all panels.
    panel_px : int, default 400
        Side of each square panel in pixels.
    point_px : int, default 2
        Side of each point's square in pixels when `faces` is None.
    seed : int, default 0
        Seed of the random segment colours (the same seed gives the same picture).

    Returns
    -------
    The path written.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0 or not np.isfinite(xyz).all():
        raise ValueError(f"xyz must be a non-empty finite (N,3) array, got shape {xyz.shape}")
    if not partitions:
        raise ValueError("partitions is empty: nothing to draw")
    for name, segment in partitions.items():
        segment = np.asarray(segment)
        if segment.shape != (len(xyz),) or not np.issubdtype(segment.dtype, np.integer):
            raise ValueError(f"partition {name!r} must be an integer array of shape ({len(xyz)},)")
    if int(panel_px) != panel_px or panel_px < 16 or int(point_px) != point_px or point_px < 1:
        raise ValueError(f"panel_px must be an integer >= 16 and point_px >= 1, got {panel_px}, {point_px}")
    margin = max(2, panel_px // 50)
    if faces is not None:
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
            raise ValueError(f"faces must be an integer (F,3) array, got shape {faces.shape}")
        if faces.size and (faces.min() < 0 or faces.max() >= len(xyz)):
            raise ValueError(f"faces hold vertex ids outside 0..{len(xyz) - 1}")
    if faces is None or len(faces) == 0:
        visible = _visible_points(xyz, panel_px, margin, point_px)
    else:
        visible = _visible_mesh(xyz, faces, panel_px, margin)
    seen = visible >= 0

    header = 60 if title else 30
    n = len(partitions)
    figure = Figure(figsize=(n * panel_px / _DPI, (panel_px + header) / _DPI), dpi=_DPI)
    rng = np.random.default_rng(seed)
    for i, (name, segment) in enumerate(partitions.items()):
        ids, compact = np.unique(np.asarray(segment), return_inverse=True)
        colours = rng.integers(40, 230, size=(len(ids), 3), dtype=np.uint8)
        image = np.full((panel_px, panel_px, 3), BACKGROUND, dtype=np.uint8)
        image[seen] = colours[compact[visible[seen]]]
        axes = figure.add_axes((i / n, 0, 1 / n, panel_px / (panel_px + header)))
        axes.imshow(image, interpolation="none")
        axes.set_axis_off()
        axes.set_title(f"{name} ({len(ids)} segments)", fontsize=10)
    if title:
        figure.suptitle(title, fontsize=12, y=1 - 12 / (panel_px + header), va="top")
    out_png = Path(out_png)
    figure.savefig(out_png, dpi=_DPI)
    return out_png
