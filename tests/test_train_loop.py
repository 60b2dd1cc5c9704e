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
from train.reports.evaluate import evaluate

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
    (run / "broken.pt").write_bytes((run / "last.pt").read_bytes()[:1000])
    assert main(["eval", str(pipeline.source), "--checkpoint", str(run / "broken.pt")]) == 2  # one line, no traceback


@pytest.fixture
def one_thread(monkeypatch):
    """Bit-exact runs: one intra-op thread, which `fit` keeps because OMP_NUM_THREADS is set (with
    several, a BLAS that sheds threads on a busy machine sums in another order: CI saw 2e-7 apart)."""
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", ["gt", "hicl"])
def test_resume_equals_uninterrupted(tmp_path, method, one_thread):
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
    # the command that makes the store repeats the user's --set
    assert f"run `python -m preprocess run {path} --set store.path={tmp_path / 'none.zarr'}`" in capsys.readouterr().err
    assert main(["fit", str(path), "--set", "train.optimizer=adam"]) == 2
    assert "train.optimizer" in capsys.readouterr().err
    assert main(["eval", str(path), "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_schedule_warmup_then_cosine():
    factors = [lr_factor(s, warmup=4, total=12) for s in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0] and factors[4] == 1.0
    assert all(a >= b for a, b in zip(factors[4:], factors[5:])) and factors[12] == pytest.approx(0.0)
    assert torch.isfinite(torch.tensor(factors)).all()


def test_clip2scene_fits_on_pairs_and_evaluates(tmp_path):
    """CLIP2Scene on the toy store's pixel-point pairs, through its switch epoch: the loss goes
    down and the network beats chance by far on the held-out scene."""
    overrides = {"train.epochs": 6, "train.batch_size": 1, "train.clip2scene.switch_epoch": 3}
    pipeline = load_pipeline(make_toy_store(tmp_path, method="clip2scene"), overrides)
    losses = fit(pipeline)
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    with (tmp_path / "run" / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    ce = [float(r["ce"]) for r in rows]
    assert sum(ce[-3:]) / 3 < 0.7 * sum(ce[:3]) / 3 and all(float(r["distill"]) > 0 for r in rows)
    assert {r["spatial_temporal"] for r in rows} == {""}  # a mesh dataset: no spatial-temporal term
    results = evaluate(pipeline, tmp_path / "run" / "last.pt", tmp_path / "eval", render=0)
    miou = results["clip2scene"].as_dict()["mIoU"]
    print(f"clip2scene on the toy store: mIoU {miou}")
    assert miou > 40, miou  # all points called the most common class (wall, ~40%) would score ~13


def test_clip2scene_step_under_cpu_bf16_autocast(tmp_path):
    """Reduced precision (what train.amp runs on a GPU, here CPU bfloat16) in the heads keeps
    the losses finite and near their float32 values, and the gradients finite. (The backbone
    runs in float32 here: the sparse backends' autocast is issue 12's.)"""
    from train.engine.batch import collate
    from train.engine.dataset import SceneDataset
    from train.engine.methods import build_method

    overrides = {"train.clip2scene.spatial_temporal": True}
    pipeline = load_pipeline(make_toy_store(tmp_path, method="clip2scene"), overrides)
    ds = SceneDataset(pipeline, "train", fields=("pairs", "pair_feat"))
    method = build_method(pipeline, ds, torch.device("cpu"))
    batch = collate([ds[(0, 0)], ds[(1, 0)]])
    method.model.eval()  # batch norm in eval mode, so both passes see the same network
    feats = method.model.backbone.forward_features(method.sparse_input(batch))
    heads = method.model.heads
    with torch.no_grad():
        exact = method.loss({name: head(feats) for name, head in heads.items()}, batch, epoch=0)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = {name: head(feats) for name, head in heads.items()}
        assert out["logits"].dtype == torch.bfloat16
        loss, low = method.loss(out, batch, epoch=0)
    loss.backward()
    assert set(low) == {"ce", "distill", "spatial_temporal"}
    for name in low:
        assert math.isfinite(low[name]) and float(low[name]) == pytest.approx(float(exact[name]), rel=0.05), name
    assert all(torch.isfinite(p.grad).all() for p in method.parameters() if p.grad is not None)


def test_cpu_threads_leave_the_loader_workers_their_cores(monkeypatch) -> None:
    from train.engine.loop import cpu_threads

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert cpu_threads(num_workers=1) == 1  # a 2-core machine: one core trains, one loads
    assert cpu_threads(num_workers=4) == 1  # never fewer than one
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert cpu_threads(num_workers=2) == 14
    assert cpu_threads(num_workers=2, world=2) == 6  # two processes share what the four workers leave


def test_best_checkpoint_kept_beside_last_when_validating(tmp_path, one_thread):
    from train.engine.checkpoint import load_checkpoint
    from train.engine.dataset import SceneDataset
    from train.reports.evaluate import load_method, validate

    pipeline = load_pipeline(make_toy_store(tmp_path, method="gt"), {**FAST, "train.eval_every_epochs": 1})
    fit(pipeline)
    run = tmp_path / "run"
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert best["step"] <= last["step"] and best["best_miou"] == last["best_miou"] > 0
    dataset = SceneDataset(pipeline, "val", with_gt=True, fields=())
    rescored = validate(pipeline, load_method(pipeline, run / "best.pt", dataset, torch.device("cpu")), torch.device("cpu"))
    assert rescored.miou == best["best_miou"]


def test_pseudo_ce_with_clip2scenes_dot_product_head(tmp_path):
    """train.head = "dot-text" gives any method CLIP2Scene's classifier (what separates its head
    from its per-pair loss); the checkpoint names it, so the model loads from it alone."""
    from train import load_model
    from train.engine.dataset import SceneDataset
    from train.engine.methods import build_method
    from train.models import DotTextHead

    pipeline = load_pipeline(make_toy_store(tmp_path, method="pseudo-ce"), {**FAST, "train.epochs": 1, "train.head": "dot-text"})
    method = build_method(pipeline, SceneDataset(pipeline, "train", fields=("pseudo",)), torch.device("cpu"))
    assert type(method.model.heads["logits"]) is DotTextHead
    fit(pipeline)
    model = load_model(tmp_path / "run" / "last.pt", "cpu")
    assert type(model.head) is DotTextHead
    torch.testing.assert_close(model.head.text_embeddings, method.model.heads["logits"].text_embeddings)
