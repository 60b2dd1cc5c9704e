"""Class text embeddings for both programs: CLIP's text tower (MaskCLIP's labels at preprocessing,
open-vocabulary queries at inference) and the simulated-CLIP labeler's stand-in for it.

Light to import (no torch, no open_clip until a function needs them): the labeler checks ask
`weights_problem` before any scene is processed, in seconds.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import socket
import sys
import types
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlparse

import numpy as np

from shared.errors import UserError

if TYPE_CHECKING:
    import torch


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


class CLIPWeightsError(UserError, RuntimeError):
    """CLIP weights could not be loaded; the message names the fix."""


def resolve_device(device: str = "auto") -> "torch.device":
    """"auto" → CUDA when available, else CPU; anything else is passed to torch.device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@functools.lru_cache(maxsize=2)
def load_clip(
    model: str = "ViT-B-16", pretrained: str = "openai", device: str = "auto", setting: str = "labels.maskclip.pretrained"
) -> tuple[Any, Callable]:
    """(open_clip model in eval mode on its device, its tokenizer), loaded once per process so
    that a Dask worker reads the weights once. `pretrained` is an open_clip tag (downloaded on
    first use) or a local checkpoint file; `setting` is what the user sets to point at other
    weights (named in the error)."""
    import open_clip

    if is_path(pretrained):
        if not os.path.isfile(pretrained):
            raise CLIPWeightsError(
                f"CLIP checkpoint {pretrained!r} not found: set {setting} to an "
                f"existing local checkpoint file of {model}"
            )
    try:
        net, _, _ = open_clip.create_model_and_transforms(model, pretrained=pretrained, device=resolve_device(device))
    except Exception as e:  # network errors, missing files, corrupt checkpoints: all one fix
        raise CLIPWeightsError(
            f"could not load CLIP weights {model!r} / pretrained={pretrained!r} "
            f"({type(e).__name__}: {(str(e).splitlines() or [''])[0]}). "
            f"Without network access, download the checkpoint elsewhere and set {setting} "
            f"to the local file"
        ) from e
    return net.eval(), open_clip.get_tokenizer(model)

def prompt_embeddings(model: Any, tokenizer: Callable, class_names: list[str], templates: list[str]) -> "torch.Tensor":
    """(C, D) unit text embeddings of an open_clip model: per class the renormalised mean over
    the prompt templates (each with one "{}" for the name), as MaskCLIP builds its classifier."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    with torch.no_grad():
        tokens = tokenizer([t.format(n) for n in class_names for t in templates]).to(device)
        emb = F.normalize(model.encode_text(tokens).float(), dim=-1)
        emb = emb.view(len(class_names), len(templates), -1).mean(dim=1)
    return F.normalize(emb, dim=-1)


def simulated_text_embeddings(num_classes: int, dim: int = 512, seed: int = 0) -> np.ndarray:
    """(C, dim) float32 fixed random unit vectors standing in for CLIP's class text embeddings."""
    rng = np.random.default_rng([seed, 0x7E47])
    emb = rng.standard_normal((num_classes, dim))
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)


def encode_names(space: dict[str, Any], names: list[str], stored: np.ndarray, clip_weights: str = "") -> np.ndarray:
    """(K, D) f32 embeddings of `names` in a text space a labeler described (its `text_space` in
    shared/labelers.py); `stored` holds the training classes' embeddings as the model keeps them.

    open_clip: the prompt-template means of CLIP's text tower (`clip_weights`, a local
    checkpoint, replaces the recorded weights). The simulated space has no text tower: its
    "text" embedding of a class is the fixed random vector of the class's index, so it embeds
    the training class names (exactly as the labeler did) and nothing else. A precomputed
    teacher's embeddings came from a file: its training class names only, as stored."""
    kind = space["kind"]
    if kind == "open_clip":
        pretrained = clip_weights or space["pretrained"]
        problem = weights_problem(space["model"], pretrained)
        if problem:
            raise CLIPWeightsError(f"{problem}: embedding class names needs CLIP's text tower; give --clip-weights "
                                   f"with a local open_clip checkpoint of {space['model']}")
        model, tokenizer = load_clip(space["model"], pretrained, "auto", setting="--clip-weights")
        return prompt_embeddings(model, tokenizer, names, space["templates"]).cpu().numpy()
    known = list(space["names"])
    unknown = [n for n in names if n not in known]
    if unknown:
        what = ("the simulated text space (generated rooms, no CLIP)" if kind == "seeded"
                else f"a precomputed teacher's embeddings ({space['file']})")
        raise UserError(f"{unknown} cannot be embedded: the model's head lives in {what}, which has no text tower and "
                        f"knows only its training classes {known}")
    table = simulated_text_embeddings(len(known), space["dim"], space["seed"]) if kind == "seeded" else stored
    return np.asarray(table, dtype=np.float32)[[known.index(n) for n in names]]

