"""The allowed values of a pipeline key, written into its type: `k: Positive = 0.01`.

A key's annotation carries its range (`Range`) or its choices (`OneOf`); the loader
(`shared.config`) checks every value against them when a file loads, so `voxel_size = 0` or
`rho = 7` is one error naming the key, instead of a run that silently does nothing useful.
Every int and float key of every section has a range (tests/test_config_values.py checks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any


FLOAT32 = (1.1754944e-38, 3.4028235e38)  # the sizes a float32 holds without becoming 0 or infinity


@dataclass(frozen=True)
class Range:
    """low <= value <= high (either end open, or absent). A float must also be a float32 number
    (0, or between FLOAT32's bounds in size): the kernels compute in float32, where a larger
    value would become infinity and a smaller one 0."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    what: str = ""  # a name for the kind of value, e.g. "a cosine"

    def problem(self, value: float) -> str | None:
        """What is wrong with `value` ("must be ..."), or None."""
        if isinstance(value, float) and (not math.isfinite(value) or
                                         (value != 0 and not FLOAT32[0] <= abs(value) <= FLOAT32[1])):
            return f"must be {self.describe()} and a float32 number (0, or {FLOAT32[0]:.2g} to {FLOAT32[1]:.2g} in size)"
        return None if self._admits(value) else f"must be {self.describe()}"

    def _admits(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"{self.what} {text}" if self.what else text


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of strings."""

    options: tuple[str, ...]

    def problem(self, value: Any) -> str | None:
        return None if value in self.options else f"must be {self.describe()}"

    def describe(self) -> str:
        return f"one of {', '.join(self.options)}"


Positive = Annotated[float, Range(0, low_open=True)]
Metres = Annotated[float, Range(1e-4, 1e4, what="a length in metres")]  # a voxel, a tolerance: 0.1 mm to 10 km
NonNegative = Annotated[float, Range(0)]
Share = Annotated[float, Range(0, 1, low_open=True, what="a share")]  # a fraction that must be above zero
Probability = Annotated[float, Range(0, 1)]
Cosine = Annotated[float, Range(-1, 1, what="a cosine")]
Count = Annotated[int, Range(1)]  # how many of something, at least one
Index = Annotated[int, Range(0)]  # a count or number that may be zero (0 often means "off" or "all")
Seed = Annotated[int, Range(0, 2**63 - 1)]  # NumPy and torch take non-negative 64-bit seeds


def one_folder(name: str) -> bool:
    """A per-frame folder is named, not a path: the layout puts it under each scene (or CAM)."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")
