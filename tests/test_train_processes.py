"""Training as real processes: SIGKILL mid-run then --resume continues the log from the last
checkpoint; a 2-process CPU DDP run (torchrun, gloo) scores like one process."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shared.config import load_pipeline
from toy_store import make_toy_store
from train.reports.evaluate import evaluate

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}


def _steps(run: Path) -> list[int]:
    with (run / "log.csv").open() as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_sigkill_then_resume_continues_from_the_last_checkpoint(tmp_path):
    path = make_toy_store(tmp_path, epochs=12, batch_size=1, checkpoint_every=3)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "train", "fit", str(path)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # wait for a checkpoint past the first one
            if (run / "last.pt").exists() and (run / "log.csv").exists() and len(_steps(run)) >= 7:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = len(_steps(run))
    saved = torch.load(run / "last.pt", weights_only=False)["step"]
    assert 3 <= saved <= killed_at and saved % 3 == 0
    assert subprocess.run(cmd + ["--resume"], env=ENV, capture_output=True).returncode == 0
    steps = _steps(run)
    assert steps == list(range(1, 25))  # the log was cut back to the checkpoint and continued


@pytest.mark.slow
def test_two_process_ddp_scores_like_one_process(tmp_path):
    # one process with 2 scenes per step == two processes with 1 scene each (global batch 2)
    single = make_toy_store(tmp_path / "one", epochs=8, batch_size=2)
    ddp = make_toy_store(tmp_path / "two", epochs=8, batch_size=1)
    assert subprocess.run([sys.executable, "-m", "train", "fit", str(single)], env=ENV, capture_output=True).returncode == 0
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "train", "fit", str(ddp)], env=ENV, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert _steps(tmp_path / "two" / "run") == _steps(tmp_path / "one" / "run")  # same number of steps
    scores = []
    for root in ("one", "two"):
        pipeline = load_pipeline(tmp_path / root / "toy.toml")
        scores.append(next(iter(evaluate(pipeline, tmp_path / root / "run" / "last.pt", render=0).values())).miou)
    assert abs(scores[0] - scores[1]) < 0.15, scores


def test_ddp_trains_every_method_and_the_refinement_only_row(tmp_path):
    """Two gloo processes, a few steps of every method, and of the configurations whose heads
    once got no gradient (HICL with every correlation term off; feedback alone before its
    warm-up; CLIP2Scene without distillation): DDP finishes and the ranks end with equal weights."""
    path = make_toy_store(tmp_path, method="hicl")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "tests/ddp_methods.py", str(path), str(tmp_path / "runs")], env=ENV, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("gt", "pseudo-ce", "clip2scene", "clip2scene-no-distill", "hicl", "hicl-refinement-only",
                 "hicl-feedback-warming-up"):
        assert f"rank 1 {name}: 3 steps, parameters equal across ranks: True" in result.stdout
