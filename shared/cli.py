"""Command-line helpers both programs use: `--set key=value` overrides of a pipeline file."""

from __future__ import annotations

import math
import shlex
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


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    escaped = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else "\\" + c if c in '"\\' else c
                      for c in text)
    return f'"{escaped}"'


def _toml(value: Any, bare_strings: bool = False) -> str:
    """`value` as TOML text; with `bare_strings`, a string that TOML would not read as another
    value stays unquoted (as people type paths after --set)."""
    if isinstance(value, str):
        if bare_strings and value == value.strip() and value.isprintable() and value:
            try:
                tomllib.loads(f"v = {value}")
            except tomllib.TOMLDecodeError:
                return value
        return _toml_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_string(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML text for {type(value).__name__}")


def format_override(key: str, value: Any) -> str:
    """`key=value` as `--set` takes it: `parse_overrides` reads it back as `value`."""
    return f"{key}={_toml(value, bare_strings=True)}"


def set_arguments(overrides: dict[str, Any]) -> str:
    """The shell arguments that repeat `overrides` (` --set a=1 --set b=x`, or "")."""
    return "".join(f" --set {shlex.quote(format_override(k, v))}" for k, v in overrides.items())
