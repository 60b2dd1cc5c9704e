"""What would stop a labeler from working on this machine or dataset, found before any scene is
processed: light on purpose (no torch, no open_clip import), so a bad configuration fails in
seconds with the fixes that fit the dataset, instead of once per scene after a minute of
download retries in every worker."""

from __future__ import annotations

from shared import schema
from shared.config import Pipeline
from shared.datasets import DATASETS
from shared.errors import ConfigError, DatasetError
from shared.labelers import LABELERS
from shared.text_space import weights_problem

def teacher_fixes(pipeline: Pipeline, but: str | None = None) -> str:
    """The ways to give the pipeline's dataset a 2D teacher, as advice, from every labeler that
    can label it (all need camera views; the simulated one also a labelled mesh), leaving out
    `but` (the one that just failed)."""
    dataset = DATASETS[pipeline.dataset.name]
    return "; or ".join(labeler.advice for name, labeler in LABELERS.items()
                        if name != but and dataset.views and (dataset.mesh or not labeler.needs_mesh))


def check_labeler(pipeline: Pipeline) -> None:
    """A UserError, before any scene is processed, when the pipeline's labeler cannot work on
    this dataset or machine; its message names the fixes that fit the dataset."""
    name, dataset = pipeline.labels.labeler, pipeline.dataset.name
    labeler = LABELERS[name]
    if labeler.needs_mesh and not DATASETS[dataset].mesh:
        raise ConfigError(
            f"{pipeline.source}: labels.labeler = \"{name}\" renders ground-truth label images from a labelled mesh, "
            f"and {dataset} has none; {teacher_fixes(pipeline, but=name)}"
        )
    labeler.preflight(pipeline)


def check_clip_weights(pipeline: Pipeline) -> None:
    """CLIP weights that `load_clip` cannot get on this machine, as one ConfigError with the fixes."""
    cfg = pipeline.labels.maskclip
    if problem := weights_problem(cfg.model, cfg.pretrained):
        raise ConfigError(f"{pipeline.source}: {problem}; set labels.maskclip.pretrained to a local CLIP checkpoint "
                          f"file (download it where there is network); or "
                          f"{teacher_fixes(pipeline, but=pipeline.labels.labeler)}")


def check_precomputed(pipeline: Pipeline) -> None:
    """What would fail for every scene of a precomputed teacher: no label-map folder at all, or
    a text-embeddings file that cannot be used."""
    from preprocess.datasets.registry import reader
    from preprocess.labels.precomputed import read_text_embeddings

    p = pipeline.labels.precomputed
    folders, pattern = reader(pipeline.dataset).frame_folders(pipeline.dataset, p.folder)
    if not folders:
        raise DatasetError(f"{pattern}: no label maps of labels.labeler = \"{pipeline.labels.labeler}\" under "
                           f"{pipeline.dataset.root}; "
                           "write them with your 2D model (README: any 2D model as the teacher) or set "
                           "labels.precomputed.folder")
    if p.text_embeddings:
        read_text_embeddings(p.text_embeddings, len(schema.class_names(pipeline)))
