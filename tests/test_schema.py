"""The store's schema is the one contract between preprocess and train: keys, names, manifest."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from shared import schema
from shared.config import load_pipeline
from shared.errors import MissingData
from shared.store import Store

ROOT = Path(__file__).resolve().parents[1]


def test_stage_key_depends_on_everything():
    base = schema.stage_key("partitions", {"k": 0.01}, ["abc"])
    assert base == schema.stage_key("partitions", {"k": 0.01}, ["abc"])
    assert base != schema.stage_key("partitions", {"k": 0.02}, ["abc"])
    assert base != schema.stage_key("partitions", {"k": 0.01}, ["abd"])
    assert base != schema.stage_key("labels", {"k": 0.01}, ["abc"])


def test_only_the_schema_spells_group_names_and_keys():
    """Group names and stage_key calls live in shared/schema.py; every other module asks it."""
    spelled = re.compile(r"""stage_key\(|["'](pseudo|partitions|text)/|f["'](pseudo|partitions|text)/""")
    offenders = []
    for folder in ("preprocess", "train", "shared", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "schema.py" and path.parent.name == "shared":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if spelled.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


PIPELINE = """
[dataset]
name = "synthetic"
root = "{root}"
train = ["a", "b"]
val = ["c"]
[store]
path = "{store}"
[[partitions]]
method = "felzenszwalb"
[[partitions]]
name = "coarse"
method = "felzenszwalb"
k = 0.05
[labels]
labeler = "simulated-clip"
"""


def _pipeline(tmp_path: Path):
    path = tmp_path / "p.toml"
    path.write_text(PIPELINE.format(root=tmp_path / "raw", store=tmp_path / "s.zarr"))
    return load_pipeline(path)


def test_layout_names_every_output_from_the_manifest(tmp_path):
    pipeline = _pipeline(tmp_path)
    store = Store(pipeline.store.path)
    points = schema.points_output(pipeline, "fingerprint-a")
    fine = schema.partition_output(pipeline.partition("felzenszwalb"), points.key)
    coarse = schema.partition_output(pipeline.partition("coarse"), points.key)
    labels = schema.labels_output(pipeline, points.key)
    refined = schema.refined_output(pipeline, labels.key, coarse.key)
    schema.record_outputs(store, pipeline, {"train": ["a", "b"], "val": ["c"]},
                          [("a", o) for o in (points, fine, coarse, labels, refined)] + [("", schema.text_output(pipeline))])
    layout = schema.Layout(store, pipeline)
    assert layout.split("train") == ["a"]  # b never got its points: left out
    assert layout.partition("a", "coarse") == coarse.group != fine.group
    assert layout.labels("a") == labels.group and layout.refined("a", "coarse") == refined.group
    assert layout.text() == schema.text_output(pipeline).group
    # a refinement that was not made (other partition) is named with the command that makes it
    with pytest.raises(MissingData, match=r"scene 'a' has no refined pseudo-labels over partition 'felzenszwalb' "
                                          r"for .*p\.toml; run `python -m preprocess run .*p\.toml`"):
        layout.refined("a", "felzenszwalb")
    # re-ingested points (a new key) take the outputs that hung off the old ones out of the manifest
    again = schema.points_output(pipeline, "fingerprint-a2")
    schema.record_outputs(store, pipeline, None, [("a", again)])
    assert schema.read_manifest(store).scenes["a"] == {schema.POINTS: again.key}


def test_manifest_refuses_a_store_of_another_dataset(tmp_path):
    pipeline = _pipeline(tmp_path)
    store = Store(pipeline.store.path)
    schema.record_outputs(store, pipeline, None, [])
    other = load_pipeline(pipeline.source, {"dataset.name": "scannet"})
    with pytest.raises(MissingData, match=r"holds dataset 'synthetic', not 'scannet'; give .* its own store.path"):
        schema.record_outputs(store, other, None, [])


@pytest.mark.slow
def test_train_and_eval_need_only_the_store(tmp_path):
    """Preprocess a generated dataset, delete it, then train and evaluate from the store alone;
    the label-quality report and the eval report score the same stored refined labels."""
    from preprocess.pipeline import run
    from preprocess.reports import label_quality
    from preprocess.synth import generate
    from train.engine.loop import fit
    from train.reports.evaluate import evaluate

    root = tmp_path / "raw"
    generate(root, scenes=3, seed=5, resolution=0.12, frames=6, width=160, height=120)
    (root / "scannetv2_train.txt").write_text("scene0000_00\nscene0001_00\n")
    (root / "scannetv2_val.txt").write_text("scene0002_00\n")
    path = tmp_path / "p.toml"
    path.write_text(f"""
[dataset]
name = "synthetic"
root = "{root}"
train = "scannetv2_train.txt"
val = "scannetv2_val.txt"
[store]
path = "{tmp_path / 's.zarr'}"
[[partitions]]
method = "felzenszwalb"
[labels]
labeler = "simulated-clip"
frame_skip = 2
label_width = 160
[train]
method = "hicl"
voxel_size = 0.1
epochs = 1
batch_size = 2
num_workers = 0
head = "linear"
width = 0.25
out_dir = "{tmp_path / 'run'}"
[train.hicl]
queries_per_scene = 64
memory_size = 64
""")
    pipeline = load_pipeline(path)
    summary = run(pipeline, scheduler="inline", progress=False)
    assert not summary.failures, summary.describe()
    shutil.rmtree(root)
    fit(pipeline, max_steps=1)
    results = evaluate(pipeline, tmp_path / "run" / "last.pt", tmp_path / "eval", render=0)
    assert json.loads((tmp_path / "eval" / "run.json").read_text())["val scenes"] == 1
    label_quality(pipeline, tmp_path / "lq", split="val")
    lq = json.loads((tmp_path / "lq" / "label_quality.json").read_text())["rows"]
    eval_refined = next(r for name, r in results.items() if name.startswith("refined pseudo-labels (felzenszwalb"))
    lq_refined = lq["refined over felzenszwalb (rho=0.5)"]
    assert np.isclose(lq_refined["mIoU"], eval_refined.as_dict()["mIoU"])
    assert lq_refined["classes"] == eval_refined.as_dict()["classes"]


def test_side_file_fingerprints_are_in_keys_and_the_manifest(tmp_path):
    """Outputs made from mask files or label maps key on their fingerprint; the manifest keeps it,
    so the Layout names them without the files, and says what to run where it has none."""
    path = tmp_path / "p.toml"
    path.write_text(PIPELINE.format(root=tmp_path / "raw", store=tmp_path / "s.zarr") + """
[[partitions]]
name = "sam"
method = "masks"
source = "precomputed"
[labels.precomputed]
folder = "maps"
""")
    pipeline = load_pipeline(path, {"labels.labeler": "precomputed", "train.head": "linear"})
    store = Store(pipeline.store.path)
    points = schema.points_output(pipeline, "raw-a")
    sam = schema.partition_output(pipeline.partition("sam"), points.key, {"frames:masks": "f1"})
    assert sam.key != schema.partition_output(pipeline.partition("sam"), points.key, {"frames:masks": "f2"}).key
    assert sam.sources == {"frames:masks": "f1"}
    labels = schema.labels_output(pipeline, points.key, {"frames:maps": "m1"})
    schema.record_outputs(store, pipeline, {"train": ["a", "b"], "val": []},
                          [("a", points), ("a", sam), ("a", labels), ("b", schema.points_output(pipeline, "raw-b"))])
    layout = schema.Layout(store, pipeline)
    assert layout.partition("a", "sam") == sam.group and layout.labels("a") == labels.group
    assert schema.read_manifest(store).sources == {"a": {"frames:masks": "f1", "frames:maps": "m1"}}
    with pytest.raises(MissingData, match=r"scene 'b' has no partition 'sam' for .*; run `python -m preprocess run"):
        layout.partition("b", "sam")
