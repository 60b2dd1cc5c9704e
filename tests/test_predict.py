"""A trained model people can use: a tiny model trained on generated rooms, then its pipeline file
and store deleted, and `python -m train predict` run from the checkpoint alone on a mesh PLY, a
point-cloud PLY, a nuScenes sweep and arrays; the benchmarks' submission layouts; the Python API;
open-vocabulary queries in the simulated text space; one line per bad input or checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from preprocess.pipeline import run
from preprocess.synth import generate
from shared.classes import NUSCENES_NAMES, SCANNET_NAMES, SCANNET_NYU40_IDS
from shared.config import load_pipeline
from shared.ply import read_ply, write_ply
from shared.scans import read_scan
from train.cli import main
from train.engine.dataset import SceneDataset
from train.engine.loop import fit
from train.inference.submission import LidarsegSubmission, benchmark_ids
from train.reports.evaluate import load_method, predict

from test_pipeline import PIPELINE

# test_pipeline's tiny generated rooms, labelled by the simulated labeler in a 32-d text space,
# and a short training of a small network on them.
TRAIN = """
[labels.simulated]
feature_dim = 32
[train]
method = "{method}"
head = "{head}"
voxel_size = 0.1
epochs = 2
batch_size = 1
num_workers = 0
width = 0.25
lr = 0.01
warmup_steps = 1
input_features = ["rgb", "normal", "height"]
out_dir = "{root}/run-{head}"
"""

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Two generated rooms, preprocessed; a text-head (pseudo-ce) and a linear-head (hicl) model trained on them;
    the val room's predictions by `evaluate`'s path; then the pipeline files and store deleted."""
    root = tmp_path_factory.mktemp("rooms")
    generate(root, scenes=2, seed=3, resolution=0.12, frames=8, width=160, height=120)
    out = {"root": root}
    for head in ("text", "linear"):
        path = root / f"{head}.toml"
        path.write_text(PIPELINE.format(root=root, store=root / "store.zarr", k=0.01) + TRAIN.format(root=root, head=head, method={"text": "pseudo-ce", "linear": "hicl"}[head]))
        pipeline = load_pipeline(path)
        if head == "text":
            run(pipeline, scheduler="inline", progress=False)
        torch.manual_seed(0)
        fit(pipeline)
        out[head] = root / f"{head}.pt"
        shutil.copy(root / f"run-{head}" / "last.pt", out[head])
        if head == "text":
            val = SceneDataset(pipeline, "val", with_gt=True, fields=())
            method = load_method(pipeline, out[head], val, torch.device("cpu"))
            out["val_scene"] = val.scenes[0]
            out["eval_pred"] = next(predict(method, val, torch.device("cpu")))[1]
            out["eval_main"] = main(["eval", str(path), "--checkpoint", str(out[head]), "--tta", "2", "--render", "1",
                                     "--out", str(root / "eval")])
        path.unlink()
        shutil.rmtree(root / f"run-{head}")
    shutil.rmtree(root / "store.zarr")
    return out


def nuscenes_sweep(root: Path, points: np.ndarray) -> Path:
    """A sweep where nuScenes keeps it, with the sample_data table that names its token."""
    sweep = root / "samples" / "LIDAR_TOP" / "n000__LIDAR_TOP__1.pcd.bin"
    sweep.parent.mkdir(parents=True)
    np.c_[points, np.zeros((len(points), 2))].astype("<f4").tofile(sweep)
    (root / "v1.0-test").mkdir()
    (root / "v1.0-test" / "sample_data.json").write_text(json.dumps(
        [{"token": TOKEN, "filename": "samples/LIDAR_TOP/n000__LIDAR_TOP__1.pcd.bin"}]))
    return sweep


def test_predict_from_the_checkpoint_alone(trained, tmp_path, capsys):
    root, scene = trained["root"], trained["val_scene"]
    assert not (root / "store.zarr").exists() and not list(root.glob("*.toml"))
    mesh = root / "scans" / scene / f"{scene}_vh_clean_2.ply"
    room = read_ply(mesh)
    cloud = write_ply(tmp_path / "cloud.ply", room["xyz"], room["rgb"])  # the same room, points only
    sweep = nuscenes_sweep(tmp_path / "nuscenes", room["xyz"][::3])
    np.save(tmp_path / "room.npy", np.c_[room["xyz"], room["rgb"] / 255.0])
    bad = tmp_path / "broken.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 9\nproperty float x\nend_header\n")
    out = tmp_path / "out"
    code = main(["predict", str(trained["text"]), str(mesh), str(cloud), str(sweep), str(tmp_path / "room.npy"),
                 str(bad), "--out", str(out), "--format", "scannet", "--probs", "--features"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("skipped", "error"))]
    assert code == 1 and len(err) == 1 and err[0].startswith(f"skipped {bad}: {bad}: ")
    classes = [line.split()[1:-3] for line in (out / "classes.txt").read_text().splitlines()]
    assert [" ".join(c) for c in classes] == list(SCANNET_NAMES)

    # The mesh: every vertex labelled exactly as evaluation labels the room from the store.
    labels = np.load(out / f"{scene}_vh_clean_2" / "labels.npy")
    assert np.array_equal(labels, trained["eval_pred"])
    ply = read_ply(out / f"{scene}_vh_clean_2" / f"{scene}_vh_clean_2.ply")
    assert np.array_equal(ply["label"], labels) and np.array_equal(ply["faces"], room["faces"])
    probs = np.load(out / f"{scene}_vh_clean_2" / "probs.npy").astype(np.float32)
    assert probs.shape == (len(labels), 20) and np.allclose(probs.sum(axis=1), 1, atol=1e-2)
    assert np.load(out / f"{scene}_vh_clean_2" / "features.npy").shape == (len(labels), 24)
    # ScanNet's submission: one nyu40 id per line per vertex.
    txt = np.loadtxt(out / "scannet" / f"{scene}_vh_clean_2.txt", dtype=np.int64)
    assert np.array_equal(txt, np.array(SCANNET_NYU40_IDS)[labels])
    # The point cloud (normals by k-NN PCA), the sweep (no colours) and the array are labelled too.
    for name, n in (("cloud", len(room["xyz"])), ("n000__LIDAR_TOP__1", len(room["xyz"][::3])), ("room", len(room["xyz"]))):
        assert np.load(out / name / "labels.npy").shape == (n,)
    assert np.array_equal(np.load(out / "room" / "labels.npy"), np.load(out / "cloud" / "labels.npy"))


def test_python_api(trained, tmp_path):
    from train import load_model

    model = load_model(trained["text"], "cpu")
    scan = read_scan(trained["root"] / "scans" / trained["val_scene"])
    labels, probs = model.predict(scan.xyz, scan.rgb, faces=scan.faces)
    assert np.array_equal(labels, trained["eval_pred"]) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    features = model.features(scan.xyz, scan.rgb, faces=scan.faces)
    assert features.shape == (len(scan.xyz), model.backbone.out_channels)
    voted, voted_probs = model.predict(scan.xyz, scan.rgb, faces=scan.faces, tta=4)
    assert voted.shape == labels.shape and np.allclose(voted_probs.sum(axis=1), 1, atol=1e-5)
    assert "pseudo-ce, 20 synthetic classes, 10 cm voxels, inputs rgb+normal+height" in repr(model)
    small = tmp_path / "model.pt"
    assert main(["export", str(trained["text"]), str(small)]) == 0
    assert small.stat().st_size < 0.6 * trained["text"].stat().st_size
    assert np.array_equal(load_model(small, "cpu").predict(scan.xyz, scan.rgb, faces=scan.faces)[0], labels)


def test_eval_reports_pointcept_accuracies_and_oblique_renders(trained):
    root = trained["root"]
    assert trained["eval_main"] == 0
    md = (root / "eval" / "results.md").read_text()
    assert "| Method | mIoU | mAcc | allAcc |" in md and "averaged over 2 turns" in md
    run = json.loads((root / "eval" / "run.json").read_text())
    assert {"mIoU", "mAcc", "allAcc"} <= set(run["rows"]["pseudo-ce"])
    assert (root / "eval" / "render" / f"{trained['val_scene']}.png").stat().st_size < 300_000


def test_nuscenes_submission_layout(tmp_path):
    """The devkit's validate_submission layout: lidarseg/<split>/<token>_lidarseg.bin of uint8
    class indices 1-16 (one per point), <split>/submission.json with the five booleans."""
    sweep = nuscenes_sweep(tmp_path / "nuscenes", np.random.default_rng(0).normal(size=(50, 3)))
    scan = read_scan(sweep)
    labels = np.arange(50) % 16
    ids = benchmark_ids("nuscenes", NUSCENES_NAMES)
    path = LidarsegSubmission.write(tmp_path / "sub", scan, labels, ids, "test")
    assert path == tmp_path / "sub" / "lidarseg" / "test" / f"{TOKEN}_lidarseg.bin"
    values = np.fromfile(path, dtype=np.uint8)
    assert np.array_equal(values, labels + 1) and path.stat().st_size == 50
    LidarsegSubmission.finish(tmp_path / "sub", "test", use_external=True)
    meta = json.loads((tmp_path / "sub" / "test" / "submission.json").read_text())["meta"]
    assert meta == {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": True}
    assert (tmp_path / "sub" / "test" / "submission.json").is_file()
    # Open-vocabulary subsets map by name; a name the benchmark lacks is one error.
    assert benchmark_ids("nuscenes", ("car", "barrier")).tolist() == [4, 1]
    with pytest.raises(Exception, match=r"--format scannet: the classes \['car'\] are not among"):
        benchmark_ids("scannet", ("chair", "car"))


def test_nuscenes_format_needs_nuscenes_classes(trained, tmp_path, capsys):
    sweep = nuscenes_sweep(tmp_path / "nuscenes", np.random.default_rng(0).normal(size=(50, 3)))
    assert main(["predict", str(trained["text"]), str(sweep), "--out", str(tmp_path / "o"), "--format", "nuscenes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith("error: --format nuscenes: the classes ['wall', 'floor'")


def test_open_vocabulary_queries_in_the_simulated_text_space(trained, tmp_path, capsys):
    """The training names reproduce the closed-set predictions exactly; a subset gives the argmax
    over that subset; a phrase the space cannot embed, or a linear head, is one line."""
    from train import load_model

    model = load_model(trained["text"], "cpu")
    scan = read_scan(trained["root"] / "scans" / trained["val_scene"])
    closed, probs = model.predict(scan.xyz, scan.rgb, faces=scan.faces)
    same, _ = model.predict(scan.xyz, scan.rgb, faces=scan.faces, classes=list(SCANNET_NAMES))
    assert np.array_equal(same, closed)
    subset = ["chair", "floor", "wall", "table"]
    picked, subset_probs = model.predict(scan.xyz, scan.rgb, faces=scan.faces, classes=subset)
    columns = [SCANNET_NAMES.index(n) for n in subset]
    assert np.array_equal(picked, probs[:, columns].argmax(axis=1)) and subset_probs.shape == (len(closed), 4)

    names = tmp_path / "classes.txt"
    names.write_text("# my classes\nchair\nfloor\nwall\ntable\n")
    mesh = trained["root"] / "scans" / trained["val_scene"]
    assert main(["predict", str(trained["text"]), str(mesh), "--out", str(tmp_path / "o"), "--classes", str(names),
                 "--format", "scannet", "--render"]) == 0
    assert 0 < (tmp_path / "o" / trained["val_scene"] / f"{trained['val_scene']}.png").stat().st_size < 300_000
    assert np.array_equal(np.load(tmp_path / "o" / trained["val_scene"] / "labels.npy"), picked)
    txt = np.loadtxt(tmp_path / "o" / "scannet" / f"{trained['val_scene']}.txt", dtype=np.int64)
    assert np.array_equal(txt, np.array([5, 2, 1, 7])[picked])  # nyu40 ids of chair, floor, wall, table

    assert main(["query", str(trained["text"]), str(mesh), "chair", "floor", "--out", str(tmp_path / "q")]) == 0
    query = read_ply(tmp_path / "q" / f"{trained['val_scene']}_chair.ply")
    logits = model.similarity_scan(scan, model.embed(list(SCANNET_NAMES)))
    assert np.allclose(query["similarity"], logits[:, SCANNET_NAMES.index("chair")], atol=1e-5)
    assert 0 < (tmp_path / "q" / f"{trained['val_scene']}_query.png").stat().st_size < 300_000

    capsys.readouterr()
    assert main(["query", str(trained["text"]), str(mesh), "a red chair", "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "['a red chair'] cannot be embedded: the model's head lives in the simulated text space" in err[0]
    assert main(["predict", str(trained["linear"]), str(mesh), "--out", str(tmp_path / "l"), "--classes", "chair"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the model has a linear head" in err[0]


def test_absent_clip_weights_are_one_line(trained, tmp_path, capsys):
    """A model of the CLIP text space asked for new names where CLIP's weights cannot be had."""
    state = torch.load(trained["text"], weights_only=True)
    state["inference"]["text_space"] = {"kind": "open_clip", "model": "ViT-B-16", "pretrained": str(tmp_path / "clip.pt"),
                                        "templates": ["a photo of a {}."]}
    torch.save(state, tmp_path / "clip-model.pt")
    mesh = trained["root"] / "scans" / trained["val_scene"]
    assert main(["predict", str(tmp_path / "clip-model.pt"), str(mesh), "--out", str(tmp_path / "o"), "--classes", "sofa"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"CLIP checkpoint '{tmp_path / 'clip.pt'}' not found" in err[0] and "--clip-weights" in err[0]


@pytest.mark.parametrize("kind", ["pickled callable", "corrupt", "foreign"])
def test_a_bad_checkpoint_is_one_line(tmp_path, capsys, kind):
    path = tmp_path / "model.pt"
    if kind == "pickled callable":
        torch.save({"format": "hicl3d-checkpoint", "hook": print}, path)
    elif kind == "corrupt":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    else:
        torch.save({"state_dict": {}}, path)
    cloud = write_ply(tmp_path / "c.ply", np.zeros((4, 3)))
    assert main(["predict", str(path), str(cloud), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = {"pickled callable": "refused: it holds the pickled Python object print,",
                "corrupt": "not a readable checkpoint", "foreign": "not a hicl3d checkpoint"}[kind]
    assert len(err) == 1 and err[0].startswith(f"error: {path}: {expected}")


def test_attention_from_a_checkpoint_and_two_scans(trained, tmp_path, capsys):
    scans = trained["root"] / "scans"
    scene, other = sorted(p.name for p in scans.iterdir())
    assert main(["attention", str(trained["linear"]), "--scans", str(scans / scene), str(scans / other),
                 "--out", str(tmp_path)]) == 0
    assert 0 < (tmp_path / "attention.png").stat().st_size < 300_000
    assert main(["attention", str(trained["text"]), "--scans", str(scans / scene), str(scans / other),
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a pseudo-ce model has no embedding head" in err[0]


@pytest.mark.realdata
def test_predict_a_real_scannet_scene(trained, scannet_scene0000, tmp_path):
    """The real scene0000_00 folder: every vertex gets one nyu40 id in the submission file, and
    the picture shows its ground truth (read from _vh_clean_2.labels.ply)."""
    assert main(["predict", str(trained["text"]), str(scannet_scene0000), "--out", str(tmp_path), "--format", "scannet",
                 "--render"]) == 0
    ids = np.loadtxt(tmp_path / "scannet" / "scene0000_00.txt", dtype=np.int64)
    assert ids.shape == (81369,) and set(ids.tolist()) <= set(SCANNET_NYU40_IDS)
    assert read_scan(scannet_scene0000).gt_classes == SCANNET_NAMES
    assert 0 < (tmp_path / "scene0000_00" / "scene0000_00.png").stat().st_size < 300_000
