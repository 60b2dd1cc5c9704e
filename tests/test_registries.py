"""One owner per family of choices: each name a pipeline file can choose (dataset, partition
method, labeler, training method) lives in one registry dict, whose class carries its
parameters, checks and run function; nothing else spells the names, and a parameter section
repeats its algorithm's defaults exactly."""

from __future__ import annotations

import dataclasses
import inspect
import io
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from shared.datasets import DATASETS
from shared.labelers import LABELERS
from shared.methods import METHODS
from shared.partitioners import PARTITIONERS

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {  # registry module -> its names
    "shared/datasets.py": DATASETS,
    "shared/partitioners.py": PARTITIONERS,
    "shared/labelers.py": LABELERS,
    "shared/methods.py": METHODS,
}
# Words that are a family's name and also something else, with the files that use the other meaning.
OTHER_MEANINGS = {
    "gt": "every file (the ground-truth array `points/gt` and the sample field that holds it)",
    "precomputed": "shared/partitioners.py (masks' source = \"precomputed\": mask files, not the labeler)",
}


def _parameter_sections():
    for family in (PARTITIONERS, LABELERS, METHODS):
        for name, entry in family.items():
            if entry.Params is not None:
                yield name, entry


@pytest.mark.parametrize("name,entry", list(_parameter_sections()), ids=lambda x: x if isinstance(x, str) else "")
def test_parameter_defaults_are_the_algorithms_defaults(name, entry):
    """A key's default in the pipeline file is the default of the function it is passed to, so
    calling the algorithm directly and running the pipeline agree."""
    defaults = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
                for f in dataclasses.fields(entry.Params)}
    compared = []
    for function in entry.algorithms():
        for parameter in inspect.signature(function).parameters.values():
            if parameter.name in defaults and parameter.default is not inspect.Parameter.empty:
                assert parameter.default == defaults[parameter.name], (
                    f"{name}: {function.__qualname__}({parameter.name}={parameter.default!r}) but "
                    f"{entry.Params.__name__}.{parameter.name} = {defaults[parameter.name]!r}")
                compared.append(parameter.name)
    if entry.algorithms():
        assert compared, f"{name}: no parameter of {entry.Params.__name__} is a keyword of its algorithms"


STRING_TOKENS = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}  # f-strings: Python 3.12+


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal of a module that is not a docstring (comments are not
    tokens of this kind either)."""
    out, previous = [], tokenize.NEWLINE
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        statement_start = previous in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT)
        if token.type in STRING_TOKENS and not statement_start:
            out.append((token.start[0], token.string))
        if token.type not in (tokenize.COMMENT, tokenize.NL):
            previous = token.type
    return out


def test_each_family_registry_is_the_only_place_its_names_appear():
    """No module but the registry compares, lists or advises a dataset, partition method,
    labeler or training method by its name: they ask the registry (strings in code, not
    docstrings or comments, in preprocess/, train/ and shared/)."""
    offenders = []
    for registry, names in FAMILIES.items():
        for folder in ("preprocess", "train", "shared"):
            for path in sorted((ROOT / folder).rglob("*.py")):
                where = str(path.relative_to(ROOT))
                if where == registry:
                    continue
                for line, text in _code_strings(path):
                    for name in names:
                        if name in OTHER_MEANINGS and (OTHER_MEANINGS[name].startswith("every") or
                                                       OTHER_MEANINGS[name].startswith(where)):
                            continue
                        quoted = (f'"{name}"', f"'{name}'", f'\\"{name}\\"')
                        if any(q in text for q in quoted):
                            offenders.append(f"{where}:{line}: {name!r} in {text}")
    assert not offenders, "\n".join(offenders)


def test_every_entry_carries_what_its_family_needs():
    for name, entry in PARTITIONERS.items():
        assert dataclasses.is_dataclass(entry.Params) and entry.algorithms(), name
    for name, entry in LABELERS.items():
        assert dataclasses.is_dataclass(entry.Params) and entry.advice, name
        assert {f.name for f in dataclasses.fields(entry.Params)} >= {"batch_size"}, f"{name}: no batch size of its own"
    for name, entry in METHODS.items():
        assert isinstance(entry.implementation(), type), name
    from preprocess.datasets.registry import reader_module

    for name in DATASETS:
        assert inspect.ismodule(reader_module(name)), name  # checks that it offers every reader function


def test_the_registries_load_neither_program():
    """The trainer reads the registries (class names, cache keys) without loading preprocess/,
    and preprocessing without torch: a family's run function imports its program only when called."""
    code = ("import sys, shared.config, shared.schema, shared.datasets, shared.labelers, shared.methods, "
            "shared.partitioners; print(sorted({m.split('.')[0] for m in sys.modules} & {'preprocess', 'train', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
