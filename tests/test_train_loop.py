"""Training on the toy store: loss goes down, resume equals an uninterrupted run, eval writes a report,
the CLI reports missing data clearly."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from shared.config import load_pipeline
from toy_store import make_toy_store
from train.cli import main
from train.engine.loop import fit, lr_factor

FAST = {"train.epochs": 4, "train.batch_size": 1}


def test_fit_gt_drives_loss_down_and_eval_reports(tmp_path):
    pipeline = load_pipeline(make_toy_store(tmp_path, method="gt"), {"train.epochs": 6, "train.batch_size": 1})
    losses = fit(pipeline)
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3
    run = tmp_path / "run"
    with (run / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 13)) and float(rows[0]["points_per_s"]) > 0
    assert (run / "last.pt").is_file() and any((run / "tb").iterdir())
    assert main(["eval", str(pipeline.source), "--checkpoint", str(run / "last.pt"), "--render", "1"]) == 0
    report = (run / "eval" / "results.md").read_text()
    assert "| gt |" in report and "pseudo-labels" in report and "| voxel ceiling (10 cm voxels) |" in report
    assert "n/a" in report
    assert (run / "eval" / "render" / "toy2.png").is_file() and (run / "eval" / "ply" / "toy2_pred.ply").is_file()


@pytest.mark.parametrize("method", ["gt", "hicl"])
def test_resume_equals_uninterrupted(tmp_path, method):
    overrides = {**FAST, "train.hicl.queries_per_scene": 64, "train.hicl.feedback_warmup_epochs": 1,
                 "train.class_weights": "inverse-sqrt"}
    whole = fit(load_pipeline(make_toy_store(tmp_path / "a", method=method), overrides))
    path = make_toy_store(tmp_path / "b", method=method)
    first = fit(load_pipeline(path, overrides), max_steps=3)  # stops mid-epoch, checkpoint at step 3
    rest = fit(load_pipeline(path, overrides), resume=True)
    assert len(first) == 3 and first + rest == whole
    with (tmp_path / "b" / "run" / "log.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, len(whole) + 1))


def test_hicl_with_similar_positives_trains(tmp_path):
    overrides = {**FAST, "train.hicl.queries_per_scene": 64, "train.hicl.similar_positives": True}
    losses = fit(load_pipeline(make_toy_store(tmp_path, method="hicl"), overrides), max_steps=3)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)


def test_cli_errors_are_clear(tmp_path, capsys):
    path = make_toy_store(tmp_path)
    assert main(["fit", str(path), "--set", "store.path=" + str(tmp_path / "none.zarr")]) == 2
    assert "make preprocess" in capsys.readouterr().err
    assert main(["fit", str(path), "--set", "train.optimizer=adam"]) == 2
    assert "train.optimizer" in capsys.readouterr().err
    assert main(["eval", str(path), "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_schedule_warmup_then_cosine():
    factors = [lr_factor(s, warmup=4, total=12) for s in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0] and factors[4] == 1.0
    assert all(a >= b for a, b in zip(factors[4:], factors[5:])) and factors[12] == pytest.approx(0.0)
    assert torch.isfinite(torch.tensor(factors)).all()
