"""Values are checked at the door: every numeric key has a range, a bad value is one error naming
the file or the --set that gave it, --set reaches list entries, and hints repeat the overrides."""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import test_config
from shared import schema
from shared.cli import format_override, parse_overrides, set_arguments
from shared.config import SECTIONS, load_pipeline
from shared.errors import ConfigError
from shared.partitioners import PARTITIONERS
from shared.ranges import OneOf, Range

MINIMAL = test_config.MINIMAL + """
[[partitions]]
method = "vccs"
[[partitions]]
method = "superpoints"
[[partitions]]
method = "masks"
"""


@pytest.fixture(scope="module")
def minimal(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "p.toml"
    path.write_text(MINIMAL)
    return path


def _keys(cls: type, prefix: str) -> list[tuple[str, object]]:
    """(dotted key, its type) of every leaf key of a section, nested sections included."""
    out = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls, include_extras=True)[f.name]
        if dataclasses.is_dataclass(tp):
            out += _keys(tp, f"{prefix}.{f.name}")
        else:
            out.append((f"{prefix}.{f.name}", tp))
    return out


KEYS = [k for name, cls in SECTIONS.items() for k in _keys(cls, name)] + [
    k for method, entry in PARTITIONERS.items() for k in _keys(entry.Params, f"partitions.{method}")
]


def _numeric(tp) -> bool:
    base = typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp
    if typing.get_origin(base) is list:
        return _numeric(typing.get_args(base)[0])
    return base in (int, float)


def _constraints(tp) -> list:
    if typing.get_origin(tp) is list:
        return _constraints(typing.get_args(tp)[0])
    return list(typing.get_args(tp)[1:]) if typing.get_origin(tp) is Annotated else []


def test_every_numeric_key_has_a_range():
    missing = [key for key, tp in KEYS if _numeric(tp) and not any(isinstance(c, Range) for c in _constraints(tp))]
    assert not missing, f"numeric keys without a range: {missing}"
    assert len([key for key, tp in KEYS if _numeric(tp)]) > 60  # the walk found the sections


@pytest.mark.parametrize("key,value,expected", [
    ("train.voxel_size", 0, r"must be a length in metres in \[0.0001, 10000\]"),
    ("refine.rho", 7, r"must be a share in \(0, 1\]"),
    ("refine.rho", 0.0, r"must be a share in \(0, 1\]"),
    ("train.epochs", -3, "must be >= 1"),
    ("train.batch_size", 0, "must be >= 1"),
    ("train.lr", -1, "must be > 0"),
    ("train.width", 0, "must be >= 0.03125"),
    ("partitions.0.k", 0, "must be > 0"),
    ("partitions.felzenszwalb.min_verts", 0, "must be >= 1"),
    ("partitions.vccs.seed_resolution", float("nan"), "must be a length in metres"),
    ("labels.depth_tolerance", float("inf"), "must be a length in metres"),
    ("labels.simulated.confusion", 0.7, r"must be in \[0, 0.5\]"),
    ("train.hicl.tau", 0, "must be > 0"),
    ("experiment.seeds", [0, -1], "must be in"),
])
def test_nonsense_values_are_refused_naming_the_set(minimal, key, value, expected):
    with pytest.raises(ConfigError, match=rf"p\.toml with --set {key}=.*: '.*' = .* {expected}") as error:
        load_pipeline(minimal, {key: value})
    assert "\n" not in str(error.value)


def test_a_value_is_blamed_on_the_file_it_came_from(tmp_path, minimal):
    base = tmp_path / "base.toml"
    base.write_text(MINIMAL + "[train]\nepochs = 0\n")
    child = tmp_path / "child.toml"
    child.write_text('base = "base.toml"\n[train]\nbatch_size = 2\n')
    with pytest.raises(ConfigError, match=r"base\.toml: 'train\.epochs' = 0 must be >= 1"):
        load_pipeline(child)
    assert load_pipeline(child, {"train.epochs": 3}).train.epochs == 3  # the override replaces the bad value
    child.write_text('base = "base.toml"\n[train]\nepochs = 2\nbatch_size = 0\n')
    with pytest.raises(ConfigError, match=r"child\.toml: 'train\.batch_size' = 0 must be >= 1"):
        load_pipeline(child)


def test_set_reaches_list_entries_by_position_and_by_name(minimal):
    p = load_pipeline(minimal, {"partitions.0.k": 0.03, "partitions.vccs.seed_resolution": 0.3})
    assert p.partition("felzenszwalb").params.k == 0.03 and p.partition("vccs").params.seed_resolution == 0.3
    assert p.partition("superpoints").params.reg == 0.1  # the others keep their values
    with pytest.raises(ConfigError, match=r"with --set partitions.9.k=0.02: 'partitions' has no entry '9': give its "
                                          r"position \(0..3\), its name \(felzenszwalb, vccs, superpoints, masks\)"):
        load_pipeline(minimal, {"partitions.9.k": 0.02})
    named = load_pipeline(minimal, {"partitions.0.name": "fine", "train.partition": "fine"})
    assert load_pipeline(minimal, {**named.overrides, "partitions.felzenszwalb.k": 0.05}).partition("fine").params.k == 0.05
    with pytest.raises(ConfigError, match=r"'partitions\[2\]\.k_graph' = 50 must be <= k_nn = 45"):
        load_pipeline(minimal, {"partitions.superpoints.k_graph": 50})


def test_hints_repeat_the_overrides(minimal):
    p = load_pipeline(minimal, {"store.path": "/elsewhere/s.zarr", "labels.frame_skip": 5})
    assert schema.preprocess_command(p) == (f"`python -m preprocess run {minimal} --set store.path=/elsewhere/s.zarr "
                                            "--set labels.frame_skip=5`")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: "=" not in k and k.strip() == k),
                       st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(), st.booleans(), st.text(max_size=12),
                                 st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=4)), max_size=3)),
                       max_size=3))
def test_overrides_read_back_as_given(overrides):
    parsed = parse_overrides([format_override(k, v) for k, v in overrides.items()])
    assert parsed.keys() == overrides.keys()
    for key, value in overrides.items():
        assert parsed[key] == value or (isinstance(value, float) and math.isnan(value) and math.isnan(parsed[key]))
    assert set_arguments({}) == ""


# ------------------------------------------------------------------------ every key, any value
VALUES = st.one_of(
    st.integers(-3, 3), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2, 2), st.booleans(), st.text(max_size=6), st.sampled_from(["knn", "rgb", "text", "auto", "slic", ""]),
    st.lists(st.one_of(st.integers(-2, 3), st.text(max_size=4)), max_size=3),
)
CLOUD = np.random.default_rng(0).random((60, 3)).astype(np.float32)
POINTS = {"xyz": CLOUD, "normal": np.tile(np.float32([0, 0, 1]), (60, 1)), "rgb": np.zeros((60, 3), np.uint8)}


def _downstream(p, key: str) -> None:
    """What loading promises: every cache key can be named, and (where `key` is a partition's)
    each 3D partition method runs with its parameters on a small cloud."""
    points = schema.points_output(p, "raw")
    for part in p.partitions:
        fingerprints = {s.name: "x" for s in schema.partition_sources(part)}
        key = schema.partition_output(part, points.key, fingerprints).key
        schema.refined_output(p, schema.labels_output(p, points.key, {s.name: "y" for s in schema.labels_sources(p)}).key, key)
        if key.startswith("partitions") and not PARTITIONERS[part.method].needs_views:
            segment, _ = PARTITIONERS[part.method].run(part.params, POINTS)
            assert segment.shape == (60,) and segment.min() >= 0
    if p.has_text:
        schema.text_output(p, {s.name: "z" for s in schema.text_sources(p)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from([k for k, _ in KEYS]), value=VALUES)
def test_any_value_of_any_key_loads_and_works_or_is_one_clear_error(minimal, key, value):
    try:
        p = load_pipeline(minimal, {key: value})
    except ConfigError as error:
        message = str(error)
        assert "\n" not in message and f"with --set {key}=" in message, message
        return
    _downstream(p, key)


@pytest.mark.parametrize("key", [k for k, tp in KEYS if _numeric(tp)])
def test_edge_values_of_every_numeric_key(minimal, key):
    for value in (0, -1, 1, 0.5, 1e-300, 1e300, float("nan"), float("inf"), 2**62, [1]):
        try:
            p = load_pipeline(minimal, {key: value})
        except ConfigError as error:
            assert "\n" not in str(error) and f"with --set {key}=" in str(error)
            continue
        _downstream(p, key)


def test_choices_are_listed(minimal):
    choices = [(key, tp, c) for key, tp in KEYS for c in _constraints(tp) if isinstance(c, OneOf)]
    assert len(choices) >= 10
    for key, tp, choice in choices:
        with pytest.raises(ConfigError, match=rf"must be one of {', '.join(choice.options)}".replace("+", r"\+")):
            load_pipeline(minimal, {key: ["nonsense"] if typing.get_origin(tp) is list else "nonsense"})
