"""The trainer; `from train import load_model` runs a checkpoint on new scans (train/inference/).

Importing it checks the installed torch first (by its metadata: no torch import, so `python -m
train` and its light subcommands start fast): older ones fail deep inside a run, at the first
convolution or the first AMP step, with messages that do not say why."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version

# pyproject.toml's floor: torch.get_autocast_dtype and torch.is_autocast_enabled(device_type)
# (sparse convs under autocast), torch.amp.GradScaler(device), fused AdamW on CPU.
TORCH_FLOOR = (2, 4)


def check_torch(found: str | None) -> None:
    """ImportError, one line saying what to install, where torch is absent (None) or `found` is
    below TORCH_FLOOR."""
    floor = ".".join(map(str, TORCH_FLOOR))
    if found is None or tuple(int(v) for v in re.match(r"(\d+)\.(\d+)", found).groups()) < TORCH_FLOOR:
        raise ImportError(f"the trainer needs torch >= {floor}, found {found or 'none'}: pip install 'torch>={floor}'")


def _installed(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


check_torch(_installed("torch"))


def __getattr__(name: str):
    # Lazy, so `python -m train` and its light subcommands do not import torch and the network.
    if name == "load_model":
        from train.inference.model import load_model

        return load_model
    raise AttributeError(f"module 'train' has no attribute {name!r}")
