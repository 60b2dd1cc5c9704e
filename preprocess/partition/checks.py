"""The argument check the partitioners share: one clear ValueError for a malformed point array."""

from __future__ import annotations

from typing import Any

import numpy as np


def finite_points(name: str, array: Any, like: np.ndarray | None = None) -> np.ndarray:
    """`array` as C-contiguous float32, shaped (N, 3) with N >= 1 (or exactly like `like`: the
    normals or colours of those points) and every value finite; else one ValueError naming
    `name` and what is wrong, before any kernel sees the data."""
    a = np.asarray(array)
    wanted = "a non-empty (N, 3)" if like is None else f"an array of the shape of points {like.shape}, a"
    good_shape = a.shape == like.shape if like is not None else (a.ndim == 2 and a.shape[1] == 3 and len(a) > 0)
    if not good_shape or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be {wanted} numeric array, got shape {a.shape} dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return a
