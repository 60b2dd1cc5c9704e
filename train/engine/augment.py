"""Training-time geometric augmentation (CLIP2Scene / Pointcept settings).

Rotation about z, uniform scaling in [0.9, 1.1], random flips of x and y, small Gaussian jitter.
Only coordinates and normals change, so every per-point label stays attached to its point.
The random generator is passed in, so a sample is a pure function of its seed (exact resume).
"""

from __future__ import annotations

import numpy as np


def augment(
    xyz: np.ndarray,
    normal: np.ndarray | None,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.9, 1.1),
    jitter: float = 0.005,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Randomly rotated (about z), scaled, flipped and jittered copies of `xyz` and `normal`.

    Normals get the rotation and flips (not the uniform scale or the jitter), so they stay unit
    vectors pointing the same way relative to the surface. `jitter` is the std in metres.
    """
    theta = rng.uniform(0.0, 2.0 * np.pi)
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    flip = np.where(rng.random(2) < 0.5, -1.0, 1.0)
    linear = rot @ np.diag([flip[0], flip[1], 1.0])  # flip first, then rotate
    factor = rng.uniform(*scale)
    out = (xyz.astype(np.float64) @ (linear.T * factor)).astype(np.float32)
    if jitter > 0:
        out += rng.normal(0.0, jitter, size=out.shape).astype(np.float32)
    turned = None if normal is None else (normal.astype(np.float64) @ linear.T).astype(np.float32)
    return out, turned
