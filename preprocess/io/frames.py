"""Per-frame files another program made for a view (2D masks, label maps, scores, features):
read and checked at the boundary, so a bad file fails naming itself and the fix.

Maps may be made at any size with the camera's aspect ratio (a 1600x900 image's maps may be
400x225 or 1600x900); they are used at their own size (points are projected to it), never
resampled. Any other aspect ratio is an error, since it would put labels on the wrong points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from preprocess.datasets.scene import View
from shared.errors import DatasetError

ASPECT_TOLERANCE = 1.0  # pixels: a map's height may differ this much from the camera's aspect (rounding)


def read_id_png(path: Path, what: str, fix: str) -> np.ndarray:
    """(h, w) values of a single-channel 8-bit (uint8) or 16-bit (uint16/int32, as PIL reads it)
    PNG: ids, labels, scaled scores. `what` names the file's role and `fix` how to make it."""
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found; {fix}")
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            array = np.asarray(image)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable PNG ({e}); write it again ({fix})") from None
    if array.ndim != 2 or mode not in ("L", "I;16", "I;16B", "I;16L", "I"):
        raise DatasetError(f"{path}: {what} must be a single-channel 8- or 16-bit PNG, got mode {mode} "
                           f"shape {array.shape}; {fix}")
    return array


def check_aspect(path: Path, shape: tuple[int, ...], view: View) -> None:
    """A map of (h, w[, ...]) must have the camera's aspect ratio (any size)."""
    h, w = shape[:2]
    expected = w * view.height / view.width
    if h < 1 or w < 1 or abs(h - expected) > ASPECT_TOLERANCE:
        raise DatasetError(
            f"{path}: {w}x{h} does not have the aspect ratio of the {view.width}x{view.height} camera image of "
            f"view {view.name}; make it at the image's size (or scaled, aspect kept)"
        )


def read_npy(path: Path, what: str, fix: str, ndim: int) -> np.ndarray:
    """A finite float .npy of `ndim` dimensions (feature maps, text embeddings)."""
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found; {fix}")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable .npy ({e}); write it again with numpy.save") from None
    if array.ndim != ndim or not np.issubdtype(array.dtype, np.floating):
        raise DatasetError(f"{path}: {what} must be a {ndim}-D float array, got {array.dtype} {array.shape}; {fix}")
    if not np.isfinite(array).all():
        raise DatasetError(f"{path}: {what} holds NaN or infinite values; write it again")
    return array
