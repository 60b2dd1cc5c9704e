"""Mixed precision (train.amp): the dtype autocast runs the network in, whether gradients need
scaling, and a way for losses to leave autocast.

- "auto": on a CUDA GPU, bfloat16 where it has it (Ampere and later) and float16 before, or the
  sparse backend's own choice where its kernels cast to float16 under autocast anyway (spconv,
  torchsparse); on CPU off, where bfloat16 convolutions are no faster.
- "fp16" / "bf16": that dtype on any device. CPU autocast runs bfloat16 (and float16), which is
  how the tests exercise the GPU path without a GPU.
- "off": float32 throughout.
float16 needs a GradScaler (its smallest normal number is 6e-5: small gradients would flush to
zero); bfloat16 has float32's range and needs none.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import TypeVar

import torch

from shared.config import AMP_SETTINGS, ConfigError
from train.sparse import Backend

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_NAMES = {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass(frozen=True)
class Precision:
    """Autocast's dtype on one device type (None: full float32)."""

    device_type: str
    dtype: torch.dtype | None

    @property
    def name(self) -> str:
        return _NAMES[self.dtype]

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def allow_tf32(self) -> None:
        """Let CUDA float32 matrix products use TF32 tensor cores where autocast is off (float32
        throughout: the network's products, up to 8x faster on Ampere and later, with float32's
        range and a 10-bit mantissa). Under autocast the float32 left is the losses', which stay
        full float32 (`outside_autocast`)."""
        if self.device_type == "cuda" and self.dtype is None:
            torch.set_float32_matmul_precision("high")

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler that scales only for float16."""
        return torch.amp.GradScaler(self.device_type, enabled=self.dtype == torch.float16)


def resolve_precision(setting: str, device: torch.device | str, backend: Backend) -> Precision:
    """The Precision `setting` (AMP_SETTINGS) means on `device` with `backend`; ConfigError where
    that device or backend cannot run it."""
    device = torch.device(device)
    if setting not in AMP_SETTINGS:
        raise ConfigError(f"train.amp = {setting!r}; choose one of {', '.join(AMP_SETTINGS)}")
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return Precision(device.type, None)
    if setting == "auto":
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        return Precision(device.type, backend.amp_dtype or (torch.bfloat16 if bf16 else torch.float16))
    dtype = _DTYPES[setting]
    if backend.amp_dtype is not None and dtype != backend.amp_dtype:
        raise ConfigError(
            f"train.amp = {setting!r}, but the {backend.name} backend computes in {_NAMES[backend.amp_dtype]} under "
            f"autocast; set train.amp = \"auto\" or \"{_NAMES[backend.amp_dtype]}\" (or --backend torch)"
        )
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ConfigError(f"train.amp = 'bf16', but {torch.cuda.get_device_name(device)} has no bfloat16; use 'fp16' or 'auto'")
    return Precision(device.type, dtype)


def widened(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 as float32; float32 and float64 as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


F = TypeVar("F", bound=Callable)


def outside_autocast(fn: F) -> F:
    """Run `fn` with autocast off wherever it is on. For losses: they take exp and log of
    similarities divided by a temperature and sum many terms, which bfloat16 would round (three
    significant digits) and float16 overflow (65504 at most). Callers widen their inputs (`widened`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with ExitStack() as stack:
            for device_type in ("cpu", "cuda"):
                if torch.is_autocast_enabled(device_type):
                    stack.enter_context(torch.autocast(device_type, enabled=False))
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
