"""Without CLIP weights a pipeline fails before any scene with the fixes that fit its dataset,
and a weights failure met inside a scene is one FAILED row per scene naming them."""

from __future__ import annotations

import pytest

from preprocess.pipeline import run
from shared.config import load_pipeline
from shared.errors import ConfigError
from test_readers_nuscenes import VERSION, _dataset

PIPELINE = """
[dataset]
name = "{name}"
root = "{root}"{version}
train = {train}
val = []
[store]
path = "{store}"
[[partitions]]
method = "felzenszwalb"
[labels]
labeler = "{labeler}"
[labels.maskclip]
model = "ViT-S-32"  # the smallest open_clip model builds fastest before the checkpoint fails to load
pretrained = "{weights}"
"""


def _pipeline(tmp_path, name="nuscenes", labeler="maskclip", weights="missing.pt"):
    root = tmp_path / name
    if name == "nuscenes" and not root.exists():
        _dataset(root)
    train = '["scene-0001_000"]' if name == "nuscenes" else '"all"'
    path = tmp_path / "p.toml"
    version = f'\nversion = "{VERSION}"' if name == "nuscenes" else ""  # a key of nuScenes only
    path.write_text(PIPELINE.format(name=name, root=root, version=version, train=train, store=tmp_path / "s.zarr",
                                    labeler=labeler, weights=tmp_path / weights))
    return load_pipeline(path)


def test_nuscenes_without_weights_names_only_fixes_that_work_for_lidar(tmp_path):
    with pytest.raises(ConfigError) as error:
        run(_pipeline(tmp_path), scheduler="inline", progress=False)
    message = str(error.value)
    assert "\n" not in message and "missing.pt' not found; set labels.maskclip.pretrained to a local CLIP checkpoint" in message
    assert "or write per-frame label maps of another 2D model and set labels.labeler = \"precomputed\"" in message
    assert "simulated" not in message
    with pytest.raises(ConfigError, match=r"\"simulated-clip\" renders ground-truth label images from a labelled mesh, "
                                          r"and nuscenes has none; .* or write per-frame label maps .* \"precomputed\""):
        run(_pipeline(tmp_path, labeler="simulated-clip"), scheduler="inline", progress=False)


def test_mesh_datasets_get_three_fixes(tmp_path):
    from preprocess.synth import generate

    generate(tmp_path / "synthetic", scenes=1, seed=0, resolution=0.3, frames=2, width=32, height=24)
    with pytest.raises(ConfigError, match=r"not found; set labels.maskclip.pretrained to a local CLIP checkpoint .*; or "
                                          r"write per-frame label maps .* \"precomputed\" .*; or set labels.labeler = "
                                          r"\"simulated-clip\""):
        run(_pipeline(tmp_path, name="synthetic"), scheduler="inline", progress=False)


def test_a_weights_failure_inside_a_scene_is_one_row_naming_the_fixes(tmp_path):
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")  # exists, so the preflight lets it through
    summary = run(_pipeline(tmp_path, weights="broken.pt"), scheduler="inline", progress=False)
    rows = [line for line in summary.describe().splitlines() if line.startswith("FAILED")]
    assert [row.split(":")[0] for row in rows] == ["FAILED text ", "FAILED labels scene-0001_000"]
    for row in rows:
        assert "could not load CLIP weights" in row and "set labels.maskclip.pretrained to the local file" in row
        assert row.endswith("or write per-frame label maps of another 2D model and set labels.labeler = \"precomputed\" "
                            "(README: any 2D model as the teacher)")
    assert summary.describe().splitlines()[-1] == "(1 tasks that needed a failed one were skipped)"
