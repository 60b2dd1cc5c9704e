"""The trainer. Importing it checks the torch version first: older ones fail deep inside a run
(at the first convolution, or the first AMP step) with messages that do not say why."""

from __future__ import annotations

import re

import torch

# pyproject.toml's floor: torch.get_autocast_dtype and torch.is_autocast_enabled(device_type)
# (sparse convs under autocast), torch.amp.GradScaler(device), fused AdamW on CPU.
TORCH_FLOOR = (2, 4)


def check_torch(version: str) -> None:
    """ImportError, one line saying what to install, where `version` is below TORCH_FLOOR."""
    found = tuple(int(v) for v in re.match(r"(\d+)\.(\d+)", version).groups())
    if found < TORCH_FLOOR:
        floor = ".".join(map(str, TORCH_FLOOR))
        raise ImportError(f"the trainer needs torch >= {floor}, found {version}: pip install 'torch>={floor}'")


check_torch(torch.__version__)
