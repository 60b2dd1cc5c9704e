"""Checkpoints written atomically, plus the RNG state a resumed run needs to continue exactly.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over the previous one with os.replace (atomic on POSIX): a run killed mid-write leaves the old
checkpoint intact and at worst a stray `*.tmp-<pid>` file that nothing reads.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.errors import MissingData


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """torch.save `state` to `path` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint's state dict; a clear error where the file is missing or unreadable.

    Loaded on the CPU, then every tensor but the generator states moved to `map_location`: those
    (uint8) stay CPU ByteTensors, the only kind Generator.set_state, torch.set_rng_state and
    torch.cuda.set_rng_state_all take (mapped to a GPU, resuming failed on one)."""
    path = Path(path)
    if not path.is_file():
        raise MissingData(f"{path}: checkpoint not found; train it with `python -m train fit` or give --checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as e:
        raise MissingData(f"{path}: not a readable checkpoint ({e}); train again or give another --checkpoint") from None
    return _moved(state, torch.device(map_location))


def _moved(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value if value.dtype == torch.uint8 else value.to(device)
    if isinstance(value, dict):
        return {key: _moved(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_moved(item, device) for item in value)
    return value


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) generator states."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
