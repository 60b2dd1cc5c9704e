"""The preprocessing pipeline end to end on tiny generated scenes: caching, recomputation of
exactly what a parameter change affects, and a real Dask cluster giving the same store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from preprocess.synth import generate
from preprocess.pipeline import run
from shared.config import load_pipeline
from shared.errors import ConfigError
from shared.schema import Layout, read_manifest
from shared.store import Store

PIPELINE = """
[dataset]
name = "synthetic"
root = "{root}"
train = "scannetv2_train.txt"
val = "scannetv2_val.txt"
[store]
path = "{store}"
[[partitions]]
method = "felzenszwalb"
k = {k}
[labels]
labeler = "simulated-clip"
frame_skip = 2
label_width = 160
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root, scenes=2, seed=3, resolution=0.12, frames=8, width=160, height=120)
    return root


def pipeline_file(tmp_path: Path, root: Path, store: Path, k: float = 0.01) -> Path:
    path = tmp_path / f"p{k}.toml"
    path.write_text(PIPELINE.format(root=root, store=store, k=k))
    return path


def counts(summary):
    return {stage: (c["computed"], c["cached"], c["failed"]) for stage, c in summary.counts().items()}


def snapshot(store_path: Path) -> dict[str, np.ndarray]:
    """Every array of every complete output, by scene/group/name."""
    store = Store(store_path)
    out = {}
    for scene in store.scenes():
        groups = ["points"] + [f"{kind}/{g}" for kind in ("partitions", "pseudo") for g in store.outputs(scene, kind)]
        for group in groups:
            for name, array in store.read(scene, group).items():
                out[f"{scene}/{group}/{name}"] = array
    return out


def test_rerun_is_cached_and_a_parameter_change_recomputes_only_its_dependents(tmp_path, dataset):
    store = tmp_path / "s.zarr"
    first = run(load_pipeline(pipeline_file(tmp_path, dataset, store)), scheduler="inline", progress=False)
    assert not first.failures, first.describe()
    assert counts(first) == {
        "text": (1, 0, 0), "ingest": (2, 0, 0), "partitions": (2, 0, 0), "labels": (2, 0, 0), "refine": (2, 0, 0)
    }
    again = run(load_pipeline(pipeline_file(tmp_path, dataset, store)), scheduler="inline", progress=False)
    assert counts(again) == {
        "text": (0, 1, 0), "ingest": (0, 2, 0), "partitions": (0, 2, 0), "labels": (0, 2, 0), "refine": (0, 2, 0)
    }
    changed = run(load_pipeline(pipeline_file(tmp_path, dataset, store, k=0.03)), scheduler="inline", progress=False)
    assert counts(changed) == {
        "text": (0, 1, 0), "ingest": (0, 2, 0), "partitions": (2, 0, 0), "labels": (0, 2, 0), "refine": (2, 0, 0)
    }
    # both partitions now live side by side, each with its parameters, and the manifest lists them
    s = Store(store)
    manifest = read_manifest(s)
    scene = s.scenes()[0]
    groups = [g for g in manifest.scenes[scene] if s.attrs(scene, g)["stage"] == "partitions"]
    assert sorted(s.attrs(scene, g)["params"]["k"] for g in groups) == [0.01, 0.03]
    assert manifest.dataset == "synthetic" and len(manifest.classes) == 20 and len(manifest.text) == 1
    (split,) = manifest.splits.values()
    assert split["train"] + split["val"] == ["scene0000_00", "scene0001_00"] and split["spec"]["train"] == "scannetv2_train.txt"


def test_an_experiment_preprocesses_what_each_of_its_runs_trains_on(tmp_path, dataset):
    """A run that changes refine.rho gets its own refinement; shared stages are computed once."""
    path = pipeline_file(tmp_path, dataset, tmp_path / "s.zarr")
    path.write_text(path.read_text() + '[[runs]]\nname = "a"\n[[runs]]\nname = "b"\nset = {"refine.rho" = 0.8}\n')
    summary = run(load_pipeline(path), scheduler="inline", progress=False)
    assert counts(summary) == {
        "text": (1, 0, 0), "ingest": (2, 0, 0), "partitions": (2, 0, 0), "labels": (2, 0, 0), "refine": (4, 0, 0)
    }


def test_bad_scene_fails_alone_with_its_file_named(tmp_path, dataset):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(dataset, root)
    mesh = root / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.ply"
    mesh.write_bytes(mesh.read_bytes()[:500])  # truncated
    summary = run(load_pipeline(pipeline_file(tmp_path, root, tmp_path / "s.zarr")), scheduler="inline", progress=False)
    failed = {(r.stage, r.scene) for r in summary.failures}
    assert ("ingest", "scene0000_00") in failed
    assert all(r.scene != "scene0001_00" for r in summary.failures)
    ingest_error = next(r.error for r in summary.failures if r.stage == "ingest")
    assert "scene0000_00_vh_clean_2.ply" in ingest_error
    assert Store(tmp_path / "s.zarr").scenes() == ["scene0001_00"]


@pytest.mark.slow
def test_local_dask_cluster_matches_inline(tmp_path, dataset):
    inline_store, dask_store = tmp_path / "inline.zarr", tmp_path / "dask.zarr"
    run(load_pipeline(pipeline_file(tmp_path, dataset, inline_store)), scheduler="inline", progress=False)
    summary = run(load_pipeline(pipeline_file(tmp_path, dataset, dask_store)), workers=2, progress=False)
    assert not summary.failures, summary.describe()
    a, b = snapshot(inline_store), snapshot(dask_store)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_configuration_that_cannot_work_fails_before_any_scene_in_one_line(tmp_path, dataset, capsys):
    """CLIP weights that are not there, or a labeler that cannot label the dataset: one line
    naming the fixes that fit the dataset, no traceback, no store, no scene touched."""
    from preprocess.__main__ import main

    path = pipeline_file(tmp_path, dataset, tmp_path / "s.zarr")
    missing = tmp_path / "ViT-B-16.pt"
    code = main(["run", str(path), "--set", "labels.labeler=maskclip", "--set", f"labels.maskclip.pretrained={missing}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"CLIP checkpoint '{missing}' not found; set labels.maskclip.pretrained to a local CLIP checkpoint" in err
    assert 'labels.labeler = "precomputed"' in err and 'labels.labeler = "simulated-clip"' in err
    assert not (tmp_path / "s.zarr").exists()
    code = main(["run", str(path), "--set", "dataset.train=nosuch.txt"])
    err = capsys.readouterr().err
    assert code == 2 and "nosuch.txt: split file not found" in err and err.count("\n") == 1


def test_simulated_labels_cannot_be_asked_of_lidar(tmp_path):
    from preprocess.labels.checks import check_labeler

    path = pipeline_file(tmp_path, tmp_path, tmp_path / "s.zarr")
    with pytest.raises(ConfigError, match=r'"simulated-clip" renders ground-truth label images from a labelled '
                                          r'mesh, and nuscenes has none; set labels.labeler = "maskclip" and '
                                          r'.* or write per-frame label maps of another 2D model'):
        check_labeler(load_pipeline(path, {"dataset.name": "nuscenes"}))


def test_visual_weighting_is_the_refine_stages_and_uses_the_stored_features(tmp_path, dataset):
    from shared.refine import refine_labels

    path = pipeline_file(tmp_path, dataset, tmp_path / "s.zarr")
    plain = load_pipeline(path, {"labels.store_features": True})
    weighted = load_pipeline(path, {"labels.store_features": True, "refine.visual_weighting": True})
    run(plain, scheduler="inline", progress=False)
    summary = run(weighted, scheduler="inline", progress=False)
    assert counts(summary)["refine"] == (2, 0, 0) and counts(summary)["labels"] == (0, 2, 0)
    store, layout = Store(weighted.store.path), Layout(Store(weighted.store.path), weighted)
    scene = layout.split("train")[0]
    pseudo = store.read(scene, layout.labels(scene))
    segment = store.read(scene, layout.partition(scene, "felzenszwalb"), ["segment"])["segment"]
    expected = refine_labels(pseudo["label"], pseudo["score"].astype(np.float32), segment, 20, features=pseudo["feat"])
    np.testing.assert_array_equal(store.read(scene, layout.refined(scene, "felzenszwalb"))["label"], expected)
    assert layout.refined(scene, "felzenszwalb") != Layout(store, plain).refined(scene, "felzenszwalb")


def test_the_labels_stage_stores_pairs_that_reproduce_its_vote(tmp_path, dataset):
    """With labels.store_pairs the labels output gains the pixel-point pairs (its own key; the
    key without pairs is unchanged), and the score-weighted vote of the pairs' labels is the
    stored fused label, score and view count."""
    from preprocess.labels.transfer import fuse
    from shared import schema

    path = pipeline_file(tmp_path, dataset, tmp_path / "s.zarr")
    plain = load_pipeline(path, {"labels.store_features": True})
    pipeline = load_pipeline(path, {"labels.store_features": True, "labels.store_pairs": True})
    assert "store_pairs" not in schema.labels_params(plain) and schema.labels_params(pipeline)["store_pairs"]
    summary = run(pipeline, only=("ingest", "labels"), scheduler="inline", progress=False)
    assert not summary.failures, summary.describe()
    store = Store(pipeline.store.path)
    layout = schema.Layout(store, pipeline)
    scene = layout.split("train")[0]
    out = store.read(scene, layout.labels(scene))
    assert store.attrs(scene, layout.labels(scene))["pairs"] == len(out[schema.PAIRS_POINT]) > 1000
    view, point = out[schema.PAIRS_VIEW], out[schema.PAIRS_POINT]
    views = [view == k for k in range(int(view.max()) + 1)]
    assert len(views) == 4  # 8 frames, frame_skip 2
    again = fuse(len(out["label"]), 20, [(point[m], out[schema.PAIRS_LABEL][m], out[schema.PAIRS_SCORE][m],
                                          (out[schema.PATCH_FEAT], out[schema.PAIRS_PATCH][m])) for m in views])
    for name in ("label", "score", "views", "feat"):
        np.testing.assert_array_equal(getattr(again, name), out[name], err_msg=name)
    with pytest.raises(Exception, match="pseudo-labels"):
        schema.Layout(store, plain).labels(scene)  # the output without pairs was never made
