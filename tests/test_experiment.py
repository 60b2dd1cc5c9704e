"""Experiment tables: every run keeps its own reference rows."""

from __future__ import annotations

import numpy as np

from shared.metrics import evaluate_labels
from train.experiment import reference_rows

NAMES = ("wall", "floor", "chair")
GT = np.array([0, 0, 1, 1, 2, 2])


def _result(pred: list[int]):
    return evaluate_labels(np.array(pred), GT, NAMES)


def test_each_run_keeps_its_own_rows_and_identical_rows_are_shared():
    raw = _result([0, 0, 1, 1, 2, 0])
    per_run = [
        ("vccs", {"pseudo": raw, "refined": _result([0, 0, 1, 1, 0, 0])}),
        ("spg", {"pseudo": raw, "refined": _result([0, 0, 1, 1, 2, 2])}),
        ("felzenszwalb", {"pseudo": raw, "refined": _result([0, 0, 1, 1, 0, 0])}),
    ]
    rows = reference_rows(per_run)
    assert list(rows) == ["pseudo", "refined [vccs, felzenszwalb]", "refined [spg]"]
    assert rows["refined [spg]"].miou == 1.0
    assert rows["refined [vccs, felzenszwalb]"].miou < 1.0
    assert rows["pseudo"] is raw


def test_a_row_only_some_runs_have_names_them():
    raw = _result([0, 0, 1, 1, 2, 0])
    rows = reference_rows([("a", {"pseudo": raw, "ceiling": raw}), ("b", {"pseudo": raw})])
    assert list(rows) == ["pseudo", "ceiling [a]"]
