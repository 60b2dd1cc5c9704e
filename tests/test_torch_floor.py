"""The torch version the trainer needs is stated once in pyproject.toml and checked at import."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from train import TORCH_FLOOR, check_torch


def test_pyproject_floor_is_the_one_checked_at_import():
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    (floor,) = [re.fullmatch(r"torch>=(\d+)\.(\d+)", d).groups() for d in project["dependencies"] if d.startswith("torch>")]
    assert tuple(map(int, floor)) == TORCH_FLOOR == (2, 4)


def test_an_older_torch_is_one_clear_line():
    with pytest.raises(ImportError, match=r"^the trainer needs torch >= 2\.4, found 2\.3\.1\+cu121: pip install 'torch>=2\.4'$"):
        check_torch("2.3.1+cu121")
    check_torch("2.4.0")
    check_torch("2.11.0a0+git1234")
