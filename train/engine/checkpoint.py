"""Checkpoints: self-contained, safe to open, written atomically; plus the RNG state a resumed
run needs to continue exactly.

A checkpoint is a dict of plain tensors, numbers, strings, lists and dicts only, so it loads
with `torch.load(weights_only=True)`: opening a file someone sent you never runs pickled code,
and a file that holds any (a pickled callable, a NumPy object) is refused, naming it. Besides
the training state (optimiser, schedule, scaler, RNGs, the method's own state) it carries what
inference needs without the pipeline file or the store (`inference_record`): class names and
palette, voxel size and input features, the network's settings and its backend-neutral weights
(the text embeddings of a text head are a buffer among them), the text space the head lives in,
and the pipeline text for provenance.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over the previous one with os.replace (atomic on POSIX): a run killed mid-write leaves the old
checkpoint intact and at worst a stray `*.tmp-<pid>` file that nothing reads.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from shared.config import Pipeline
from shared.errors import CheckpointError, MissingData, first_line
from shared.labelers import LABELERS
from shared.schema import class_names, dataset_table
from train.models.heads import CLASSIFIERS

if TYPE_CHECKING:
    from train.engine.methods import Method

FORMAT = "hicl3d-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """torch.save `state` (plus the format tag) to `path` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's state dict, its tensors on the CPU (RNG states must be CPU byte tensors;
    callers move the weights). One clear error where the file is missing, unreadable, holds
    pickled objects (refused, never run), is not a checkpoint of this project, or is newer."""
    path = Path(path)
    if not path.is_file():
        raise MissingData(f"{path}: checkpoint not found; train it with `python -m train fit` or give another checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found is None:  # not a pickle at all (e.g. a text file): torch says "invalid load key"
            raise CheckpointError(f"{path}: not a readable checkpoint ({first_line(e)}); give a checkpoint `python -m train fit` wrote") from None
        raise CheckpointError(
            f"{path}: refused: it holds the pickled Python object {found.group(1)}, which loading would run "
            "(a hicl3d checkpoint holds only tensors, numbers, strings, lists and dicts); use a checkpoint "
            "`python -m train fit` wrote"
        ) from None
    except Exception as e:  # noqa: BLE001 -- a corrupt file fails anywhere in the unpickler (KeyError, EOFError, ...)
        raise CheckpointError(f"{path}: not a readable checkpoint ({first_line(e)}); it is corrupt or truncated, "
                              "train again or give another checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        what = f"a dict with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise CheckpointError(f"{path}: not a hicl3d checkpoint (it holds {what}, no format tag {FORMAT!r}); "
                              "give a checkpoint `python -m train fit` wrote")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer hicl3d (checkpoint format {state['format_version']}, this "
                              f"version reads {FORMAT_VERSION}); update the project")
    return state


def inference_record(pipeline: Pipeline, method: Method) -> dict[str, Any]:
    """Everything `train.load_model` needs besides the weights, as plain values."""
    cfg, names = pipeline.train, list(class_names(pipeline))
    heads = method.model.heads
    kind = next(name for name, cls in CLASSIFIERS.items() if type(heads["logits"]) is cls)
    text = getattr(heads["logits"], "text_embeddings", None)
    source = Path(pipeline.source)
    return {
        "classes": names,
        "dataset": pipeline.dataset.name,
        "palette": dataset_table(pipeline.dataset).palette.tolist(),
        "voxel_size": cfg.voxel_size,
        "input_features": list(cfg.input_features),
        "normal_knn": pipeline.ingest.normal_knn,
        "network": {"in_channels": method.dataset.in_channels, "width": cfg.width, "head": kind,
                    "num_classes": len(names), "text_dim": None if text is None else int(text.shape[1])},
        "text_space": None if text is None else LABELERS[pipeline.labels.labeler].text_space(pipeline.labels, names),
        "method": cfg.method,
        "pipeline": {"source": str(source), "text": source.read_text() if source.is_file() else "",
                     "overrides": json.loads(json.dumps(pipeline.overrides, default=str)),
                     "resolved": json.dumps(asdict(pipeline), default=str)},
    }


# What a checkpoint keeps for inference only (`export_model`): no optimiser moments, RNGs or memory bank.
INFERENCE_KEYS = ("model", "inference", "train_config", "step", "epoch", "best_miou")


def export_model(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """A copy of checkpoint `src` with only what inference needs (a third of the bytes: AdamW's
    moments are twice the weights), to share a trained model; `train.load_model` reads either."""
    state = load_checkpoint(src)
    return save_checkpoint({key: state[key] for key in INFERENCE_KEYS}, dst)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) generator states, as plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `rng_state()`; the torch states must be CPU byte tensors (`load_checkpoint` gives those)."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
