"""What would stop a labeler from working on this machine or dataset, found before any scene is
processed: light on purpose (no torch, no open_clip import), so a bad configuration fails in
seconds with the fixes that fit the dataset, instead of once per scene after a minute of
download retries in every worker."""

from __future__ import annotations

from pathlib import Path

from shared import schema
from shared.config import Pipeline
from shared.errors import ConfigError, DatasetError
from shared.text_space import weights_problem

MESH_DATASETS = ("scannet", "synthetic")  # the simulated labeler renders their labelled meshes


def teacher_fixes(dataset: str, weights: bool = True) -> str:
    """The ways to give a dataset a 2D teacher, as advice (`weights`: starting with CLIP weights):
    for LiDAR datasets only those that can work there (the simulated labeler renders labelled
    meshes, which sweeps are not)."""
    fixes = ["set labels.maskclip.pretrained to a local CLIP checkpoint file (download it where there is network)"
             ] if weights else []
    fixes.append("write per-frame label maps of another 2D model and set labels.labeler = \"precomputed\" "
                 "(README: any 2D model as the teacher)")
    if dataset in MESH_DATASETS:
        fixes.append("set labels.labeler = \"simulated-clip\" to run the pipeline on simulated labels")
    return "; or ".join(fixes)


def check_labeler(pipeline: Pipeline) -> None:
    """A UserError, before any scene is processed, when the pipeline's labeler cannot work on
    this machine or dataset; its message names the fixes that fit the dataset."""
    cfg, dataset = pipeline.labels, pipeline.dataset.name
    if cfg.labeler == "simulated-clip" and dataset not in MESH_DATASETS:
        raise ConfigError(
            f"{pipeline.source}: labels.labeler = \"simulated-clip\" renders ground-truth label images from a "
            f"labelled mesh, and {dataset} has none; use labels.labeler = \"maskclip\" with CLIP weights, or "
            f"\"precomputed\" with per-frame label maps of another 2D model (README: any 2D model as the teacher)"
        )
    if cfg.labeler == "maskclip" and (problem := weights_problem(cfg.maskclip.model, cfg.maskclip.pretrained)):
        raise ConfigError(f"{pipeline.source}: {problem}; {teacher_fixes(dataset)}")
    if cfg.labeler == "precomputed":
        check_precomputed(pipeline)


def check_precomputed(pipeline: Pipeline) -> None:
    """What would fail for every scene of a precomputed teacher: no label-map folder at all, or
    a text-embeddings file that cannot be used."""
    from preprocess.labels.precomputed import read_text_embeddings

    p, root = pipeline.labels.precomputed, Path(pipeline.dataset.root)
    if pipeline.dataset.name == "nuscenes":
        folders = [root / p.folder] if (root / p.folder).is_dir() else []
        expected = root / p.folder / "<CAM>" / "<image stem>.png"
    else:
        folders = [f for f in (root / "scans").glob(f"*/{p.folder}") if f.is_dir()]
        expected = root / "scans" / "<scene>" / p.folder / "<frame>.png"
    if not folders:
        raise DatasetError(f"{expected}: no label maps of labels.labeler = \"precomputed\" under {root}; write them "
                           f"with your 2D model (README: any 2D model as the teacher) or set labels.precomputed.folder")
    if p.text_embeddings:
        read_text_embeddings(p.text_embeddings, len(schema.class_names(pipeline)))
