"""The trainer's packages import only downward: sparse < amp < models, losses < engine, reports,
inference < experiment, run_record < cli. Every import counts, also those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lowest first. Engine, reports and inference share a layer: training validates through
# reports.evaluate, reports build networks through the engine and score a voxel's turns through
# inference, and inference loads the engine's checkpoints.
LAYERS = [("train.sparse",), ("train.amp",), ("train.models", "train.losses"),
          ("train.engine", "train.reports", "train.inference"), ("train.experiment", "train.run_record"),
          ("train.cli", "train.__main__")]


def layer(module: str) -> int | None:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def upward(module: str, source: str, package: bool = False) -> list[str]:
    """'line: target' for every import in `source` (the text of `module`) of a higher layer,
    relative imports resolved, imports inside functions included."""
    parent = module.split(".") if package else module.split(".")[:-1]
    own, found = layer(module), []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = parent[: len(parent) - node.level + 1] if node.level else []
            targets = [".".join([*base, node.module or ""]).strip(".")]
        else:
            continue
        found += [f"{node.lineno}: {t}" for t in targets if (theirs := layer(t)) is not None and theirs > own]
    return found


def test_every_trainer_module_has_a_layer():
    unplaced = [module_name(p) for p in (ROOT / "train").rglob("*.py")
                if module_name(p) != "train" and layer(module_name(p)) is None]
    assert unplaced == []


def test_no_module_imports_a_higher_layer():
    found = [f"{path.relative_to(ROOT)}:{hit}" for path in sorted((ROOT / "train").rglob("*.py"))
             if module_name(path) != "train"
             for hit in upward(module_name(path), path.read_text(), path.name == "__init__.py")]
    assert found == []


def test_the_check_sees_lazy_and_relative_imports():
    source = "import torch\nfrom . import minkunet\ndef f():\n    from train.engine.loop import fit\n    from ..losses import x\n"
    assert upward("train.models.heads", source) == ["4: train.engine.loop"]
    assert upward("train.sparse", "from ..amp import widened\n", package=True) == ["1: train.amp"]
