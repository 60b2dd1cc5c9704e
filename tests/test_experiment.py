"""Experiments: every run keeps its own reference rows; seeds give mean ± std, Welch and one-sample
t-tests; finished runs are recorded and reused by config hash, without their checkpoints; a
partial experiment's table names what is missing."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest

from shared import schema
from shared.config import load_pipeline
from shared.metrics import IoUAccumulator, SeedResults, markdown_table, one_sample_p, welch_p
from shared.store import Store
from train.experiment import gather, noise_sentence, reference_rows, run_experiment, teacher_sentence
from train.run_record import RunRecord, config_hash, store_keys

NAMES = ("wall", "floor", "chair")
GT = np.array([0, 0, 1, 1, 2, 2])


def _result(pred: list[int], gt: np.ndarray = GT, names: tuple[str, ...] = NAMES):
    acc = IoUAccumulator(names)
    acc.add(np.array(pred), gt)
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


def test_every_row_averages_over_the_classes_with_ground_truth():
    """A class no val point has (sofa) is n/a for a model that predicts it falsely as for one that
    does not: its false predictions cost the true class (floor) instead."""
    names = ("wall", "floor", "chair", "sofa")
    quiet = _result([0, 0, 1, 1, 2, 2], names=names)
    false_sofa = _result([0, 0, 1, 3, 2, 2], names=names)
    assert np.isnan(quiet.iou[3]) and np.isnan(false_sofa.iou[3])
    assert quiet.miou == 1.0 and np.isclose(false_sofa.miou, (1 + 0.5 + 1) / 3)
    assert "| a | 83.33 | 100.00 | 50.00 | 100.00 | n/a |" in markdown_table({"a": false_sofa})


def test_counts_round_trip_with_unlabelled_points():
    acc = IoUAccumulator(NAMES)
    acc.add(np.array([0, -1, 1, 1, -1, -1]), GT)  # chair never labelled: IoU 0, not n/a
    result = acc.result()
    again = type(result).from_counts(NAMES, **result.counts())
    np.testing.assert_array_equal(again.iou, result.iou)
    assert result.iou.tolist() == [0.5, 1.0, 0.0] and result.counts()["missed"] == [1, 0, 2]


def test_welch_p_values_are_those_of_the_issue():
    """Issue 22 computed them from the 114-step comparison's seeds."""
    pseudo_ce, clip2scene, hicl = [10.45, 9.87, 8.2], [7.21, 6.81, 7.36], [10.2, 11.14, 9.65]
    assert round(welch_p(pseudo_ce, clip2scene), 3) == 0.064
    assert round(welch_p(hicl, clip2scene), 3) == 0.010
    assert round(welch_p(hicl, pseudo_ce), 2) == 0.37
    assert math.isnan(welch_p([1.0], [2.0, 3.0]))


def test_one_sample_p_against_a_fixed_score():
    # t = 2 / (1 / sqrt 3) on 2 degrees of freedom, where the t distribution's two-sided tail is
    # 1 - t / sqrt(2 + t^2)
    t = 2 * math.sqrt(3)
    assert math.isclose(one_sample_p([1, 2, 3], 0.0), 1 - t / math.sqrt(2 + t * t), rel_tol=1e-9)
    assert math.isnan(one_sample_p([1.0], 0.0))


def test_noise_sentence_gives_welch_p_values():
    a = SeedResults((_result([0, 0, 1, 1, 2, 2]), _result([0, 0, 1, 1, 2, 2]), _result([0, 0, 1, 1, 2, 0])))
    b = SeedResults((_result([0, 0, 1, 0, 0, 0]), _result([0, 0, 1, 0, 0, 1]), _result([0, 0, 0, 1, 0, 0])))
    c = SeedResults((_result([0, 0, 1, 0, 0, 0]), _result([0, 0, 1, 0, 0, 1]), _result([0, 0, 1, 0, 0, 0])))
    text = noise_sentence({"A": a, "B": b, "C": c})
    beyond, within = text.split("Not established:")
    p_ab = welch_p(a.mious, b.mious)
    assert f"A vs B: {100 * (a.miou - b.miou):+.2f} (p = {p_ab:.3f})" in beyond and "A vs C: +" in beyond
    assert "B vs C" in within and "Welch" in text
    assert noise_sentence({"A": SeedResults((a.runs[0],))}).startswith("One seed per model")
    assert noise_sentence({"A": a, "B": SeedResults((b.runs[0],))}).startswith(
        "Only A has two seeds or more: no other row has a noise estimate")


def test_teacher_sentence_says_which_labels_the_model_beats():
    model = SeedResults((_result([0, 0, 1, 1, 2, 0]),))
    refs = {"raw pseudo-labels": _result([0, 1, 1, 0, 2, 0]), "refined pseudo-labels": _result([0, 0, 1, 1, 2, 2]),
            "raw pseudo-labels, seen points only": _result([0, 0, 1, 1, 2, 2]), "voxel ceiling (5 cm voxels)": _result([0, 0, 1, 1, 2, 2])}
    text = teacher_sentence("HICL", model, refs)
    assert text.startswith(f"HICL {100 * model.miou:.2f}: above its raw pseudo-labels")
    assert "below its refined pseudo-labels (100.00)" in text and "ceiling" not in text and "seen" not in text
    seeds = SeedResults((model.runs[0], _result([0, 0, 1, 1, 2, 2])))
    p = one_sample_p(seeds.mious, refs["raw pseudo-labels"].miou)
    assert f"above its raw pseudo-labels ({100 * refs['raw pseudo-labels'].miou:.2f}; p = {p:.3f})" in \
        teacher_sentence("HICL", seeds, refs)


# ----------------------------------------------------------------------------- records and reuse
EXPERIMENT = '[experiment]\nseeds = [0, 1]\n[[runs]]\nname = "ce"\n[[runs]]\nname = "gt"\nset = { "train.method" = "gt" }\n'


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A toy store with a second partition (its own keys, as the partition ablation's), an
    experiment file of two runs and two seeds, and the run ce seed 0 trained and recorded with
    a learning curve."""
    from toy_store import make_toy_store

    tmp = tmp_path_factory.mktemp("experiment")
    path = make_toy_store(tmp, method="pseudo-ce", epochs=2, eval_every_epochs=1)
    text = path.read_text().replace("[labels]", '[[partitions]]\nname = "fine"\nmethod = "felzenszwalb"\nk = 0.02\n'
                                    '[[partitions]]\nname = "renamed"\nmethod = "felzenszwalb"\n[labels]')
    path.write_text(text + EXPERIMENT)
    _add_partition(load_pipeline(path), "fine")
    reports = tmp / "reports"
    run_experiment(load_pipeline(path), reports / "exp", render=0, runs=["ce"], seeds=[0])
    return path, reports


def _add_partition(pipeline, name):
    """Write the partition `name` (the toy's sets) and its refined labels for every scene."""
    store = Store(pipeline.store.path)
    layout = schema.Layout(store, pipeline)
    part = pipeline.partition(name)
    outputs = []
    for scene in layout.split("train") + layout.split("val"):
        points = layout.points_key(scene)
        out = schema.partition_output(part, points)
        labels = schema.labels_output(pipeline, points)
        refined = schema.refined_output(pipeline, labels.key, out.key)
        old = store.read(scene, layout.partition(scene, "felzenszwalb"), ["segment"])
        old_refined = store.read(scene, layout.refined(scene, "felzenszwalb"), ["label", "score", "views"])
        for o, arrays in ((out, old), (refined, old_refined)):
            store.write(scene, o.group, arrays, {"key": o.key, "stage": o.stage, "params": o.params})
            outputs.append((scene, o))
    schema.record_outputs(store, pipeline, {"train": layout.split("train"), "val": layout.split("val")}, outputs)


def test_config_hash_follows_the_model_not_the_paths(toy):
    path, _ = toy
    base = load_pipeline(path)
    h = config_hash(base)
    same = {"train.out_dir": "elsewhere", "train.num_workers": 3, "train.checkpoint_every": 7,
            "train.partition": "renamed"}  # the default's sets under another name: same store keys
    assert config_hash(load_pipeline(path, same)) == h
    for change in ({"train.lr": 0.01}, {"train.seed": 1}, {"train.partition": "fine"}):
        assert config_hash(load_pipeline(path, change)) != h, change


# The train keys (dotted) of every record committed before keys were added (TRAINER_VERSION 1).
# A train key added later must be in run_record.ADDED_KEYS at its neutral value, or every
# committed record, and every run training now, stops matching and is trained again.
RECORDED_TRAIN_KEYS = {
    "method", "partition", "voxel_size", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "warmup_steps",
    "grad_clip", "class_weights", "width", "head", "num_workers", "seed", "checkpoint_every", "eval_every_epochs",
    "out_dir", "backend", "amp", "max_points", "input_features", "hicl.refine", "hicl.intra_set", "hicl.intra_scene",
    "hicl.inter_scene", "hicl.feedback", "hicl.tau", "hicl.exclude_own_set", "hicl.similar_positives",
    "hicl.similar_visual", "hicl.similar_normal", "hicl.embed_dim", "hicl.queries_per_scene", "hicl.memory_size",
    "hicl.lambda_set", "hicl.lambda_intra", "hicl.lambda_inter", "hicl.lambda_feedback", "hicl.feedback_warmup_epochs",
    "clip2scene.distill_weight", "clip2scene.switch_epoch", "clip2scene.switch_prob", "clip2scene.max_views",
    "clip2scene.spatial_temporal",
}


def _dotted(settings: dict, prefix: str = "") -> set[str]:
    return {name for key, value in settings.items()
            for name in (_dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key})}


def _get(settings: dict, dotted: str):
    for name in dotted.split("."):
        settings = settings[name]
    return settings


def test_keys_added_after_records_leave_their_hashes_alone(toy):
    from dataclasses import asdict

    from shared.config import TrainConfig
    from train.run_record import ADDED_KEYS, NOT_HASHED, hashed_settings

    path, _ = toy
    cropped = {"train.max_points": 400}
    base = load_pipeline(path, cropped)
    assert _dotted(hashed_settings(base)) == RECORDED_TRAIN_KEYS - NOT_HASHED  # what the records hashed
    assert _dotted(asdict(TrainConfig())) == RECORDED_TRAIN_KEYS | set(ADDED_KEYS)
    defaults = load_pipeline(path).train
    for dotted, neutral in ADDED_KEYS.items():  # a pipeline that does not name the key trains as before
        assert _get(asdict(defaults), dotted) == neutral, dotted
    h = config_hash(base)
    assert config_hash(load_pipeline(path, {**cropped, "train.crop_centre": "uniform"})) == h
    balanced = load_pipeline(path, {**cropped, "train.crop_centre": "class-balanced"})
    assert hashed_settings(balanced)["crop_centre"] == "class-balanced" and config_hash(balanced) != h


def test_config_hash_reads_each_partitions_own_store_keys(toy, monkeypatch):
    path, _ = toy
    fine = load_pipeline(path, {"train.partition": "fine"})
    store = Store(fine.store.path)
    val = store_keys(fine)["val"][0]
    groups = schema.Layout(store, fine)
    assert val == [val[0], groups.points_key(val[0]), groups.labels(val[0]), groups.partition(val[0], "fine"),
                   groups.refined(val[0], "fine")]
    assert val[3] != groups.partition(val[0], "felzenszwalb") and None not in val
    h = config_hash(fine)
    monkeypatch.setattr("train.run_record.TRAINER_VERSION", 2)
    assert config_hash(fine) != h


def test_a_recorded_run_is_reused_without_its_checkpoint(toy, monkeypatch):
    path, reports = toy
    folder = reports / "exp" / "ce" / "seed0"
    record = RunRecord.read(folder)
    assert record.config_hash == config_hash(load_pipeline(path, {"train.out_dir": "x/ce/seed0"}))
    assert [p["step"] for p in record.curve] == [1, 2] and record.steps == 2 and record.code_version
    assert list(record.rows)[0] == "pseudo-ce" and any(n.startswith("voxel ceiling") for n in record.rows)
    assert math.isclose(record.curve[-1]["mIoU"], round(100 * record.network.miou, 2))
    shutil.rmtree(load_pipeline(path).train.out_dir)  # a fresh clone: no checkpoints, only committed files

    def refuse(*args, **kwargs):
        raise AssertionError("a recorded run was trained or evaluated again")

    monkeypatch.setattr("train.experiment.fit", refuse)
    monkeypatch.setattr("train.experiment.evaluate", refuse)
    rows = run_experiment(load_pipeline(path), reports / "exp", render=0, runs=["ce"], seeds=[0])
    np.testing.assert_array_equal(rows["ce"].runs[0].confusion, record.network.confusion)
    # the same run in another experiment is found there and copied
    rows = run_experiment(load_pipeline(path), reports / "other", render=0, runs=["ce"], seeds=[0])
    assert RunRecord.read(reports / "other" / "ce" / "seed0").config_hash == record.config_hash
    with pytest.raises(AssertionError, match="trained or evaluated again"):  # other settings: trained
        run_experiment(load_pipeline(path, {"train.lr": 0.01}), reports / "exp", render=0, runs=["ce"], seeds=[0])


def test_table_from_records_names_missing_and_stale_runs(toy):
    path, reports = toy
    rows = gather(load_pipeline(path), reports / "exp")
    assert list(rows) == ["ce"] and len(rows["ce"].runs) == 1
    table = (reports / "exp" / "table.md").read_text()
    assert "Not trained yet (no record): ce seed 1, gt seed 0, gt seed 1." in table
    assert "| ce | " in table and "voxel ceiling" in table and "ce " in table.split("One seed per model")[1]
    info = json.loads((reports / "exp" / "experiment.json").read_text())
    assert info["missing"] == ["ce seed 1", "gt seed 0", "gt seed 1"] and info["hashes_checked"]
    assert (reports / "exp" / "learning_curves.png").stat().st_size > 1000
    stale = (reports / "stale")
    shutil.copytree(reports / "exp", stale)
    with pytest.raises(Exception, match="1 stale"):
        gather(load_pipeline(path, {"train.lr": 0.01}), stale)


def test_cli_gathers_the_table_and_refuses_mixed_options(toy, capsys):
    from train.cli import main

    path, reports = toy
    assert main(["experiment", str(path), "--out", str(reports / "cli"), "--table-only", "--set", "train.lr=0.01"]) == 2
    assert "no finished run" in capsys.readouterr().err  # nothing recorded under these settings anywhere
    assert main(["experiment", str(path), "--out", str(reports / "exp"), "--table-only"]) == 0
    assert capsys.readouterr().out.startswith("ce: mIoU ")
    # a folder without records takes another experiment's record of the same hash, as training does
    assert main(["experiment", str(path), "--out", str(reports / "cli"), "--table-only"]) == 0
    assert capsys.readouterr().out.startswith("ce: mIoU ") and not (reports / "cli" / "ce").exists()
    assert main(["experiment", str(path), "--table-only", "--runs", "ce"]) == 2
    assert "leave out --runs and --seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["experiment", str(path), "--seeds", "0,one"])
    assert "--seeds expects integers" in capsys.readouterr().err


def test_experiment_refuses_unknown_runs_and_seeds(toy):
    from shared.errors import ConfigError

    path, reports = toy
    with pytest.raises(ConfigError, match="no \\[\\[runs\\]\\] entry named 'hicl'"):
        run_experiment(load_pipeline(path), reports / "exp", runs=["hicl"])
    with pytest.raises(ConfigError, match="seed 5 is not in experiment.seeds"):
        run_experiment(load_pipeline(path), reports / "exp", seeds=[5])


def test_an_experiment_trains_each_run_once_per_seed(tmp_path):
    from toy_store import make_toy_store

    path = make_toy_store(tmp_path, method="pseudo-ce", epochs=1)
    path.write_text(path.read_text() + EXPERIMENT)
    rows = run_experiment(load_pipeline(path), out_dir=tmp_path / "report", render=0)
    assert [len(r.runs) for r in rows.values()] == [2, 2]
    assert (tmp_path / "run" / "ce" / "seed1" / "last.pt").is_file()
    info = json.loads((tmp_path / "report" / "experiment.json").read_text())
    assert info["seeds"] == [0, 1] and len(info["runs"][0]["mIoU_seeds"]) == 2 and not info["missing"]
    table = (tmp_path / "report" / "table.md").read_text()
    assert "| ce | " in table and " ± " in table and "ce vs gt" in table and "ce " in info["teacher"][0]
    assert not (tmp_path / "report" / "learning_curves.png").exists()  # no validation during training


def test_the_synthetic_experiments_are_what_their_rows_say():
    """The comparison's rows, the budget's thirds, and the runs the experiments share (trained
    once: equal settings and the same partition parameters give equal config hashes)."""
    from shared.config import run_pipeline
    from train.engine.methods import method_class
    from train.run_record import hashed_settings

    def runs(name):
        p = load_pipeline(f"pipelines/synthetic-{name}.toml")
        return {r.name: run_pipeline(p, r, 0) for r in p.runs}

    compare = runs("compare")
    assert list(compare) == ["pseudo-ce", "refined-ce", "hicl", "clip2scene", "clip2scene-no-switch",
                             "pseudo-ce-dot-text", "clip2scene-sgd"]
    for name, p in compare.items():
        fields = method_class(p.train).fields_for(p.train)
        assert ("refined" in fields) == (name in ("refined-ce", "hicl")), name  # CE targets: refined or raw
        assert name.startswith("clip2scene") or p.train.head == ("dot-text" if name == "pseudo-ce-dot-text" else "linear")
    terms = ("intra_set", "intra_scene", "inter_scene", "feedback")
    assert not any(getattr(compare["refined-ce"].train.hicl, t) for t in terms)
    epochs = compare["hicl"].train.epochs
    assert compare["hicl"].train.hicl.feedback_warmup_epochs == compare["clip2scene"].train.clip2scene.switch_epoch \
        == round(epochs / 3)
    assert compare["clip2scene"].train.clip2scene.switch_prob > 0
    assert compare["clip2scene-no-switch"].train.clip2scene.switch_prob == 0
    budget, components = runs("budget"), runs("components")
    budget_rows = {"gt-240": budget["gt"], "hicl-240": budget["hicl"], "refined-ce-240": budget["refined-ce"],
                   "inter-scene-240": components["inter-scene"], "pseudo-ce-240": compare["pseudo-ce"]}
    assert sorted(budget_rows) == sorted(name for name in budget if name.endswith("-240"))
    for doubled, budget_row in budget_rows.items():  # the budget's run stretched: twice the epochs, the rest kept
        long, short = budget[doubled].train, budget_row.train
        assert long.epochs == 2 * short.epochs, doubled
        short_hicl = dataclasses.replace(long.hicl, feedback_warmup_epochs=short.hicl.feedback_warmup_epochs)
        assert dataclasses.replace(long, epochs=short.epochs, eval_every_epochs=short.eval_every_epochs,
                                   hicl=short_hicl, out_dir=short.out_dir) == short, doubled
        if long.method == "hicl" and long.hicl.feedback:  # the feedback still starts at a third
            assert long.hicl.feedback_warmup_epochs == round(long.epochs / 3), doubled
    shared = [(compare["refined-ce"], components["refine"], budget["refined-ce"]),
              (compare["hicl"], components["feedback"], runs("partition")["felzenszwalb"],
               runs("threshold")["k0.01"], budget["hicl"])]
    for same in shared:
        assert all(hashed_settings(p) == hashed_settings(same[0]) for p in same)
        assert all(p.partition(p.train.partition).params == same[0].partition(same[0].train.partition).params for p in same)
