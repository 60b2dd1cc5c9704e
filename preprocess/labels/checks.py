"""What would stop a labeler from working on this machine or dataset, found before any scene is
processed: light on purpose (no torch, no open_clip import), so a bad configuration fails in
seconds with the fixes that fit the dataset, instead of once per scene after a minute of
download retries in every worker."""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import sys
import types
from urllib.parse import urlparse

from shared import schema
from shared.config import Pipeline
from shared.datasets import DATASETS
from shared.errors import ConfigError, DatasetError
from shared.labelers import LABELERS


def is_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))


def _reachable(url: str, timeout: float = 3.0) -> bool:
    host = urlparse(url).hostname
    if not host or os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _open_clip_registry() -> types.ModuleType:
    """open_clip's table of pretrained weights (`open_clip.pretrained`), loaded without running
    open_clip's __init__, which imports torch and torchvision: seconds that a check made before
    any scene is processed should not cost. Loaded under a private package name, so a later
    `import open_clip` is the real, complete package."""
    if "open_clip" in sys.modules:
        return importlib.import_module("open_clip.pretrained")
    spec = importlib.util.find_spec("open_clip")
    package = types.ModuleType("_open_clip_registry")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules.setdefault(package.__name__, package)
    return importlib.import_module(f"{package.__name__}.pretrained")


def weights_problem(model: str, pretrained: str) -> str | None:
    """Why `load_clip(model, pretrained)` cannot work on this machine, or None when it can:
    a local checkpoint that is missing, an unknown tag, or a tag whose weights are neither in the
    local caches nor downloadable (no network). Takes seconds, where a failing download takes a
    minute of retries per worker."""
    if is_path(pretrained):
        return None if os.path.isfile(pretrained) else f"CLIP checkpoint {pretrained!r} not found"
    registry = _open_clip_registry()
    cfg = registry.get_pretrained_cfg(model, pretrained)
    if not cfg:
        return (f"open_clip knows no weights {pretrained!r} for {model!r} "
                f"(known: {', '.join(registry.list_pretrained_tags_by_model(model)) or 'none'})")
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if any(isinstance(try_to_load_from_cache(repo, name), str) for name in names):
            return None
    url = cfg.get("url", "")
    if url and os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))):
        return None
    source = f"https://huggingface.co/{hub}" if hub else url
    if _reachable(source):
        return None
    return f"CLIP weights {model!r} / {pretrained!r} are not cached on this machine and {urlparse(source).hostname} cannot be reached"


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
