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
from pathlib import Path
from urllib.parse import urlparse

from shared import schema
from shared.config import Pipeline
from shared.errors import ConfigError, DatasetError

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
