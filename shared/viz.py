"""Pictures both programs draw: the class palette, top-down orthographic renders, panels.

The render is a z-buffer rasteriser in NumPy: points fall into pixels of an orthographic view
from above and per pixel the highest point wins, so ceilings aside a room reads like a floor
plan with its furniture.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

UNLABELLED = np.array([128, 128, 128], dtype=np.uint8)  # ignore / unseen points
BACKGROUND = 255


def palette(num_classes: int) -> np.ndarray:
    """(C, 3) u8 colours, distinct for up to 20 classes (matplotlib's tab20)."""
    colours = plt.get_cmap("tab20")(np.arange(num_classes) % 20)[:, :3]
    return (colours * 255).astype(np.uint8)


def colour_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, 3) u8 colours per label; labels outside [0, C) are grey."""
    valid = (labels >= 0) & (labels < num_classes)
    out = np.tile(UNLABELLED, (len(labels), 1))
    out[valid] = palette(num_classes)[labels[valid]]
    return out


def topdown_index(xyz: np.ndarray, size: int = 512, point_px: int = 1) -> np.ndarray:
    """(H, W) index of the point seen at each pixel of an orthographic view from +z (-1: empty).

    The longer horizontal side spans `size` pixels, y points up in the image, each point covers a
    `point_px` square, and per pixel the highest point wins (found by sorting, not a loop)."""
    lo, hi = xyz[:, :2].min(axis=0), xyz[:, :2].max(axis=0)
    scale = (size - 1) / max(float((hi - lo).max()), 1e-9)
    width, height = (np.floor((hi - lo) * scale).astype(int) + 1)
    col = np.floor((xyz[:, 0] - lo[0]) * scale).astype(np.int64)
    row = (height - 1) - np.floor((xyz[:, 1] - lo[1]) * scale).astype(np.int64)
    shifts = np.arange(point_px) - (point_px - 1) // 2
    dr, dc = (d.ravel() for d in np.meshgrid(shifts, shifts, indexing="ij"))
    rows, cols = (row[:, None] + dr).ravel(), (col[:, None] + dc).ravel()
    ids = np.repeat(np.arange(len(xyz)), len(dr))
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    pixel, ids = rows[inside] * width + cols[inside], ids[inside]
    order = np.lexsort((xyz[ids, 2], pixel))  # by pixel, then height: the last of a run is on top
    pixel, ids = pixel[order], ids[order]
    top = np.r_[pixel[1:] != pixel[:-1], True]
    index = np.full(height * width, -1, dtype=np.int64)
    index[pixel[top]] = ids[top]
    return index.reshape(height, width)


def render_topdown(xyz: np.ndarray, rgb: np.ndarray, size: int = 512, max_z: float | None = None) -> np.ndarray:
    """(H, W, 3) u8 orthographic view from +z (see `topdown_index`); empty pixels are white.

    Points above `max_z` are dropped (e.g. to look under a ceiling)."""
    keep = np.ones(len(xyz), bool) if max_z is None else xyz[:, 2] <= max_z
    index = topdown_index(xyz[keep], size)
    image = np.full(index.shape + (3,), BACKGROUND, dtype=np.uint8)
    image[index >= 0] = rgb[keep][index[index >= 0]]
    return image


def save_panels(path: str | Path, panels: dict[str, np.ndarray], legend: list[str] | None = None) -> Path:
    """Side-by-side images with titles (input, ground truth, pseudo-labels, prediction, ...)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.4), squeeze=False)
    for ax, (title, image) in zip(axes[0], panels.items()):
        ax.imshow(image)
        ax.set_title(title)
        ax.axis("off")
    if legend:
        colours = palette(len(legend)) / 255.0
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours]
        fig.legend(handles, legend, loc="lower center", ncol=min(10, len(legend)), fontsize=7, frameon=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
