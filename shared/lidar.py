"""nuScenes LiDAR sweeps for both programs: the reader ingests them, `predict` labels them and
names its lidarseg submission files after their sample_data tokens."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from shared.errors import DatasetError


def read_lidar_points(path: str | os.PathLike) -> np.ndarray:
    """A `.pcd.bin` sweep: (N,5) float32 x, y, z, intensity, ring, in the LiDAR frame."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: LiDAR sweep not found; download the nuScenes samples/LIDAR_TOP blobs")
    size = path.stat().st_size
    if size % 20:  # fromfile would silently drop a trailing partial float
        raise DatasetError(
            f"{path}: {size} bytes is not a whole number of 5-float32 points; the file is truncated, download it again"
        )
    points = np.fromfile(path, dtype="<f4").reshape(-1, 5)
    if not np.isfinite(points[:, :3]).all():
        raise DatasetError(f"{path}: non-finite point coordinates; the file is corrupt, download it again")
    return points


def sample_data_token(sweep: str | os.PathLike) -> str:
    """The sample_data token of a sweep kept where nuScenes puts it (`<root>/samples/LIDAR_TOP/<file>`),
    from `<root>/v1.0-*/sample_data.json`: the lidarseg benchmark names each prediction file after it."""
    sweep = Path(sweep).resolve()
    root = sweep.parents[2] if len(sweep.parents) > 2 else sweep.parent
    tables = sorted(root.glob("v1.0-*/sample_data.json"))
    if not tables:
        raise DatasetError(
            f"{sweep}: no nuScenes table {root}/v1.0-*/sample_data.json beside it, so its sample_data token is "
            "unknown; keep the sweep in its nuScenes folder (<root>/samples/LIDAR_TOP/) with the metadata"
        )
    name = f"{sweep.parent.parent.name}/{sweep.parent.name}/{sweep.name}"
    for table in tables:
        token = _tokens_by_filename(table).get(name)
        if token is not None:
            return token
    raise DatasetError(f"{sweep}: not listed in {', '.join(map(str, tables))}; is it a sweep of this nuScenes version?")


@lru_cache(maxsize=4)
def _tokens_by_filename(table: Path) -> dict[str, str]:
    """filename -> token of every record of a sample_data table (read once per process)."""
    try:
        records = json.loads(table.read_bytes())
        return {r["filename"]: r["token"] for r in records}
    except (ValueError, TypeError, KeyError) as e:
        raise DatasetError(f"{table}: not a nuScenes sample_data table ({type(e).__name__}: {e}); download the metadata again") from None
