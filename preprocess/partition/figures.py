"""Pictures of partitions, side by side (like the seed paper's Figure 1).

For eyeballing what a method and its parameters do to a scene: each panel shows one partition
with a random colour per set (grey: in no set), in an oblique perspective view rendered with
the project's ray caster (shared/viz.py): the mesh where there are faces, else the points as
small squares. The view is cast once and every panel only recolours it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.viz import UNLABELLED, oblique_camera, render_view, save_figure


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
    """Write a PNG with one oblique panel per partition, a random colour per set.

    Parameters
    ----------
    xyz : (N,3) float array
        Vertex or point coordinates; z is up.
    faces : (F,3) integer array or None
        Triangles of a mesh (rendered solid); None draws the points as squares.
    partitions : dict of name -> (N,) integer segment ids
        One panel each, left to right, titled with its name and number of sets (ids < 0: in no set).
    out_png : path
        Where to write the picture: the panels side by side, each `panel_px` wide, titled with
        the partition's name and number of sets.
    title : str, optional
        Heading over all panels.
    panel_px : int, default 400
        Width of each panel in pixels (its height follows the view).
    point_px : int, default 2
        Side of each point's square, in pixels at the scene's centre, when `faces` is None.
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
    if faces is not None:
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
            raise ValueError(f"faces must be an integer (F,3) array, got shape {faces.shape}")
        if faces.size and (faces.min() < 0 or faces.max() >= len(xyz)):
            raise ValueError(f"faces hold vertex ids outside 0..{len(xyz) - 1}")
    camera = oblique_camera(xyz, panel_px)
    mesh = faces is not None and len(faces) > 0
    splat = None
    if not mesh:  # `point_px` pixels at the scene's centre
        distance = float(np.linalg.norm(camera.position - (xyz.min(axis=0) + xyz.max(axis=0)) / 2))
        splat = point_px * distance / camera.intrinsic[0, 0]
    view = render_view(xyz, camera, faces if mesh else None, splat=splat)
    rng = np.random.default_rng(seed)
    panels = {}
    for name, segment in partitions.items():
        ids, compact = np.unique(np.asarray(segment), return_inverse=True)
        colours = rng.integers(40, 230, size=(len(ids), 3), dtype=np.uint8)
        colours[ids < 0] = UNLABELLED
        panels[f"{name} ({int((ids >= 0).sum())} sets)"] = view.image(colours[compact.ravel()])
    return save_figure(out_png, panels, title=title)
