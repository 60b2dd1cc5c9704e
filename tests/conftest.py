"""Fixtures: the real sample data beside the repository (skipped cleanly where absent)."""

from __future__ import annotations

import os
from pathlib import Path

# One BLAS/OpenMP thread per process: the tests' tensors are small, and the 2-core machines this
# runs on oversubscribe badly when torch, Numba and Dask workers each spin up a thread pool.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

SHARED_DATA = Path(os.environ.get("HICL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: real ScanNet and nuScenes samples; tests using it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def scannet_scene0000(shared_data: Path) -> Path:
    path = shared_data / "scannet" / "scans" / "scene0000_00"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture()
def one_thread():
    """Single-threaded torch for tests on scenes of a few thousand voxels: on a shared 2-core
    machine thread hand-offs cost more than they save."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
