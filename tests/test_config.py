from pathlib import Path

import pytest

from shared.config import load_pipeline
from shared.errors import ConfigError
from shared.partitioners import FelzenszwalbParams

MINIMAL = """
[dataset]
name = "synthetic"
root = "data/x"
[store]
path = "cache/x.zarr"
[[partitions]]
method = "felzenszwalb"
k = 0.02
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def test_shipped_pipelines_load():
    for path in sorted(Path("pipelines").glob("*.toml")):
        p = load_pipeline(path)
        assert p.partitions, path


def test_minimal_fills_defaults(tmp_path):
    p = load_pipeline(write(tmp_path, MINIMAL))
    assert p.partitions[0].params == FelzenszwalbParams(k=0.02, min_verts=20)
    assert p.partitions[0].name == "felzenszwalb"
    assert p.train.method == "hicl" and p.labels.labeler == "simulated-clip"


def test_unknown_key_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"p\.toml: unknown key 'train\.epoch'"):
        load_pipeline(write(tmp_path, MINIMAL + "[train]\nepoch = 3\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'partitions\[0\]\.kk'"):
        load_pipeline(write(tmp_path, MINIMAL + "kk = 1\n"))
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_pipeline(write(tmp_path, MINIMAL + "[trian]\n"))


def test_wrong_type_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'train\.epochs' = 'ten' must be int"):
        load_pipeline(write(tmp_path, MINIMAL + '[train]\nepochs = "ten"\n'))
    with pytest.raises(ConfigError, match=r"'labels\.store_features' = 1 must be true or false"):
        load_pipeline(write(tmp_path, MINIMAL + "[labels]\nstore_features = 1\n"))
    # ints widen to floats
    assert load_pipeline(write(tmp_path, MINIMAL + "[train]\nlr = 1\n")).train.lr == 1.0


def test_unknown_dataset_and_choices(tmp_path):
    with pytest.raises(ConfigError, match="'dataset.name' = 'kitti' is not one of scannet, synthetic, nuscenes, ply-folder"):
        load_pipeline(write(tmp_path, MINIMAL.replace('"synthetic"', '"kitti"')))
    with pytest.raises(ConfigError, match="'train.method' = 'x' is not one of gt, pseudo-ce, clip2scene, hicl"):
        load_pipeline(write(tmp_path, MINIMAL + '[train]\nmethod = "x"\n'))
    with pytest.raises(ConfigError, match="'train.partition' = 'vccs' names no"):
        load_pipeline(write(tmp_path, MINIMAL + '[train]\npartition = "vccs"\n'))
    with pytest.raises(ConfigError, match=r"'train.hicl.similar_normal' = 1.5 must be a cosine in \[-1, 1\]"):
        load_pipeline(write(tmp_path, MINIMAL + "[train.hicl]\nsimilar_normal = 1.5\n"))
    with pytest.raises(ConfigError, match=r"'partitions\[0\].graph' = 'grid' must be one of knn, rings, rings\+knn"):
        load_pipeline(write(tmp_path, MINIMAL + 'graph = "grid"\n'))
    with pytest.raises(ConfigError, match=r"'partitions\[1\].appearance' = 'colour' must be one of none, rgb, intensity"):
        load_pipeline(write(tmp_path, MINIMAL + '[[partitions]]\nmethod = "superpoints"\nappearance = "colour"\n'))
    with pytest.raises(ConfigError, match="'dataset.box_instances' is a key of nuscenes; synthetic scenes take no such"):
        load_pipeline(write(tmp_path, MINIMAL.replace('root = "data/x"', 'root = "data/x"\nbox_instances = true')))


def test_malformed_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="malformed TOML"):
        load_pipeline(write(tmp_path, "[dataset\nname="))
    with pytest.raises(ConfigError, match="pipeline file not found"):
        load_pipeline(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"missing section \[store\]"):
        load_pipeline(write(tmp_path, '[dataset]\nname = "scannet"\nroot = "x"\n'))


def test_duplicate_partition_names(tmp_path):
    text = MINIMAL + '[[partitions]]\nmethod = "felzenszwalb"\nk = 0.03\n'
    with pytest.raises(ConfigError, match="names must be unique"):
        load_pipeline(write(tmp_path, text))
    p = load_pipeline(write(tmp_path, text + 'name = "fz3"\n'))
    assert [x.name for x in p.partitions] == ["felzenszwalb", "fz3"]


def test_environment_overrides_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SCANNET_ROOT", "/elsewhere")
    p = load_pipeline(write(tmp_path, MINIMAL.replace('"synthetic"', '"scannet"')))
    assert p.dataset.root == "/elsewhere"


def test_overrides(tmp_path):
    p = load_pipeline(write(tmp_path, MINIMAL), {"train.epochs": 3, "train.hicl.tau": 0.2})
    assert p.train.epochs == 3 and p.train.hicl.tau == 0.2


def test_base_inheritance_and_runs(tmp_path):
    write(tmp_path, MINIMAL + "[train]\nepochs = 7\nout_dir = \"runs/x\"\n")
    child = tmp_path / "child.toml"
    child.write_text(
        'base = "p.toml"\n[train]\nbatch_size = 2\n'
        '[[runs]]\nname = "a"\nset = { "train.method" = "pseudo-ce" }\n'
        '[[runs]]\nname = "b"\n'
    )
    from shared.config import run_pipeline

    p = load_pipeline(child)
    assert (p.train.epochs, p.train.batch_size) == (7, 2)  # tables merge key by key
    assert [r.name for r in p.runs] == ["a", "b"]
    a = run_pipeline(p, p.runs[0])
    assert a.train.method == "pseudo-ce" and a.train.out_dir == "runs/x/a" and a.runs == ()
    # a run keeps the --set overrides its pipeline was loaded with (preprocess checks every run's labeler)
    b = run_pipeline(load_pipeline(child, {"labels.labeler": "simulated-clip", "train.epochs": 3}), p.runs[1])
    assert (b.labels.labeler, b.train.epochs) == ("simulated-clip", 3)


def test_clip2scene_needs_the_stored_pairs_and_features(tmp_path):
    with pytest.raises(ConfigError, match=r"p\.toml: 'train.method' = \"clip2scene\" .* labels.store_pairs = true"):
        load_pipeline(write(tmp_path, MINIMAL + '[train]\nmethod = "clip2scene"\n'))
    pairs = MINIMAL + '[labels]\nstore_pairs = true\n[train]\nmethod = "clip2scene"\n'
    with pytest.raises(ConfigError, match=r"'train.clip2scene.distill_weight' = 1.0 .* labels.store_features = true"):
        load_pipeline(write(tmp_path, pairs))
    p = load_pipeline(write(tmp_path, pairs), {"train.clip2scene.distill_weight": 0.0})
    assert p.labels.store_pairs and p.train.clip2scene.max_views == 8
    # in an experiment, the run that trains clip2scene is checked too, and named
    text = MINIMAL + '[[runs]]\nname = "c2s"\nset = { "train.method" = "clip2scene" }\n'
    with pytest.raises(ConfigError, match=r"labels.store_pairs = true.*\(in \[\[runs\]\] 'c2s'\)"):
        load_pipeline(write(tmp_path, text))


def test_bad_run_override_names_the_run(tmp_path):
    text = MINIMAL + '[[runs]]\nname = "a"\nset = { "train.epoch" = 3 }\n'
    with pytest.raises(ConfigError, match=r"unknown key 'train\.epoch'.*\[\[runs\]\] 'a'"):
        load_pipeline(write(tmp_path, text))


def test_base_loop_is_an_error(tmp_path):
    (tmp_path / "a.toml").write_text('base = "b.toml"\n')
    (tmp_path / "b.toml").write_text('base = "a.toml"\n')
    with pytest.raises(ConfigError, match="loops back"):
        load_pipeline(tmp_path / "a.toml")


@pytest.mark.parametrize("key", ["refine.visual_weighting"])
def test_visual_weighting_without_stored_features_names_the_fix(tmp_path, key):
    section, name = key.rsplit(".", 1)
    text = MINIMAL + f"[{section}]\n{name} = true\n"
    with pytest.raises(ConfigError, match=rf"'{key}' = true .* set labels\.store_features = true"):
        load_pipeline(write(tmp_path, text))
    assert load_pipeline(write(tmp_path, text + "[labels]\nstore_features = true\n"))


def test_simulated_clip_parameters_are_range_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"'labels\.simulated\.confusion' = 0\.7 must be in \[0, 0\.5\]"):
        load_pipeline(write(tmp_path, MINIMAL + "[labels.simulated]\nconfusion = 0.7\n"))
    with pytest.raises(ConfigError, match=r"'labels\.simulated\.patch_noise' = -1\.0 must be >= 0"):
        load_pipeline(write(tmp_path, MINIMAL + "[labels.simulated]\npatch_noise = -1.0\n"))


def test_refinement_has_one_set_of_settings(tmp_path):
    """[refine] is the only place refinement is configured (the trainer reads what it made)."""
    for key in ("train.hicl.rho", "train.hicl.visual_weighting", "refine.partition"):
        section, name = key.rsplit(".", 1)
        with pytest.raises(ConfigError, match=rf"unknown key '{key}'"):
            load_pipeline(write(tmp_path, MINIMAL + f"[{section}]\n{name} = 0.5\n"))
