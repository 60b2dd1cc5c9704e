"""Command-line helpers both programs use: `--set key=value` overrides of a pipeline file."""

from __future__ import annotations

import tomllib
from typing import Any


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["train.epochs=3", "dataset.root=/x"]` -> {"train.epochs": 3, "dataset.root": "/x"};
    values are read as TOML (numbers, booleans, lists), anything else as a string."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = text
    return out
