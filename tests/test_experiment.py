"""Experiment tables: every run keeps its own reference rows; seeds give mean ± std and a
verdict on which differences exceed the noise."""

from __future__ import annotations

import json

import numpy as np

from shared.metrics import IoUAccumulator, SeedResults, markdown_table
from train.experiment import noise_sentence, reference_rows, teacher_sentence

NAMES = ("wall", "floor", "chair")
GT = np.array([0, 0, 1, 1, 2, 2])


def _result(pred: list[int]):
    acc = IoUAccumulator(NAMES)
    acc.add(np.array(pred), GT)
    return acc.result()


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


def test_seed_results_are_means_with_their_spread():
    perfect, half = _result([0, 0, 1, 1, 2, 2]), _result([0, 0, 1, 1, 0, 0])  # mIoU 1 and (1/2 + 1 + 0)/3
    row = SeedResults((perfect, half))
    assert np.isclose(row.miou, 0.75) and np.isclose(row.std, np.std([1, 0.5], ddof=1))
    np.testing.assert_allclose(row.iou, (perfect.iou + half.iou) / 2)
    assert f"| m | {100 * row.miou:.2f} ± {100 * row.std:.2f} |" in markdown_table({"m": row})
    assert SeedResults((perfect,)).std == 0.0 and "±" not in markdown_table({"m": SeedResults((perfect,))})


def test_noise_sentence_separates_real_differences_from_noise():
    a = SeedResults((_result([0, 0, 1, 1, 2, 2]), _result([0, 0, 1, 1, 2, 2]), _result([0, 0, 1, 1, 2, 0])))
    b = SeedResults((_result([0, 0, 1, 0, 0, 0]), _result([0, 0, 1, 0, 0, 1]), _result([0, 0, 0, 1, 0, 0])))
    c = SeedResults((_result([0, 0, 1, 0, 0, 0]), _result([0, 0, 1, 0, 0, 1]), _result([0, 0, 1, 0, 0, 0])))
    text = noise_sentence({"A": a, "B": b, "C": c})
    beyond, within = text.split("Within the noise:")
    assert "A vs B: +" in beyond and "A vs C: +" in beyond and "B vs C" in within
    assert noise_sentence({"A": SeedResults((a.runs[0],))}).startswith("One seed per model")


def test_teacher_sentence_says_which_labels_the_model_beats():
    model = SeedResults((_result([0, 0, 1, 1, 2, 0]),))
    refs = {"raw pseudo-labels": _result([0, 1, 1, 0, 2, 0]), "refined pseudo-labels": _result([0, 0, 1, 1, 2, 2]),
            "raw pseudo-labels, seen points only": _result([0, 0, 1, 1, 2, 2]), "voxel ceiling (5 cm voxels)": _result([0, 0, 1, 1, 2, 2])}
    text = teacher_sentence("HICL", model, refs)
    assert text.startswith(f"HICL {100 * model.miou:.2f}: above its raw pseudo-labels")
    assert "below its refined pseudo-labels (100.00)" in text and "ceiling" not in text and "seen" not in text


def test_an_experiment_trains_each_run_once_per_seed(tmp_path):
    from shared.config import load_pipeline
    from toy_store import make_toy_store
    from train.experiment import run_experiment

    path = make_toy_store(tmp_path, method="pseudo-ce", epochs=1)
    path.write_text(path.read_text() + '[experiment]\nseeds = [0, 1]\n[[runs]]\nname = "ce"\n'
                    '[[runs]]\nname = "gt"\nset = { "train.method" = "gt" }\n')
    rows = run_experiment(load_pipeline(path), out_dir=tmp_path / "report", render=0)
    assert [len(r.runs) for r in rows.values()] == [2, 2]
    assert (tmp_path / "run" / "ce" / "seed1" / "last.pt").is_file()
    info = json.loads((tmp_path / "report" / "experiment.json").read_text())
    assert info["seeds"] == [0, 1] and len(info["runs"][0]["mIoU_seeds"]) == 2
    table = (tmp_path / "report" / "table.md").read_text()
    assert "| ce | " in table and " ± " in table and "ce vs gt" in table and "ce " in info["teacher"][0]
