"""A trained model from its checkpoint alone: `load_model(path).predict(xyz, rgb, normals)`.

The checkpoint carries the class names, palette, voxel size, input features and network
settings (train/engine/checkpoint.py), so neither the pipeline file nor the store is needed.
A scan is predicted per voxel and every point gets its voxel's prediction (one fixed point per
voxel, as evaluation does); with `tta` > 1 the scan is also turned about the vertical axis by
360/tta degree steps and the per-point class probabilities (or features) of the turns averaged.
Models whose head lives in a text space (CLIP's, or the simulated one) score any class names
(`classes=`) or phrases (`similarity`) the space can embed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from shared.errors import CheckpointError, UserError, first_line
from shared.scans import Scan, scan_from_arrays
from shared.text_space import encode_names
from train.engine.checkpoint import load_checkpoint
from train.engine.transforms import input_features, voxelize
from train.models import MinkUNet
from train.models.heads import ProjectionHead, build_classifier
from train.sparse import select_backend


@dataclass(frozen=True)
class Prediction:
    """Per-point results of one scan: labels index `classes`."""

    classes: tuple[str, ...]
    labels: np.ndarray  # (N,) int64
    probs: np.ndarray  # (N, K) f32, softmax over `classes`, averaged over the turns


class TrainedModel:
    """A checkpoint's network ready to label points (`load_model` makes one)."""

    def __init__(self, state: dict[str, Any], device: str | torch.device = "cpu", backend: str = "auto",
                 source: str = "checkpoint"):
        card = state.get("inference")
        if not isinstance(card, dict):
            raise CheckpointError(f"{source}: a training checkpoint without the inference record; train it again")
        self.source = source
        self.classes: tuple[str, ...] = tuple(card["classes"])
        self.palette = np.asarray(card["palette"], dtype=np.uint8)
        self.dataset: str = card["dataset"]
        self.voxel_size: float = card["voxel_size"]
        self.input_features: list[str] = list(card["input_features"])
        self.normal_knn: int = card["normal_knn"]
        self.text_space: dict[str, Any] | None = card["text_space"]
        self.method: str = card["method"]
        self.pipeline: dict[str, str] = card["pipeline"]
        self.settings: dict[str, Any] = state["train_config"]  # the [train] section it was trained with
        net = card["network"]
        self.device = torch.device(device)
        backend_ops = select_backend(backend, self.device)
        self.backbone = MinkUNet(net["in_channels"], width=net["width"], backend=backend_ops)
        channels = self.backbone.out_channels
        text = None if net["text_dim"] is None else torch.zeros(net["num_classes"], net["text_dim"])
        self.head = build_classifier(net["head"], channels, net["num_classes"], text)
        self._SparseTensor = backend_ops.SparseTensor
        # HICL's embedding head (the space its correlation terms shape), for attention maps.
        embed = state["model"].get("heads.embed.net.2.weight")
        self.embed_head = None if embed is None else ProjectionHead(channels, dim=embed.shape[0])
        modules = [("backbone.", self.backbone), ("heads.logits.", self.head)]
        for prefix, module in modules + ([("heads.embed.", self.embed_head)] if self.embed_head is not None else []):
            weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
            try:
                module.load_state_dict(weights)
            except RuntimeError as e:
                raise CheckpointError(f"{source}: its {prefix[:-1]} weights do not fit the network it describes "
                                      f"({first_line(e)}); the file is damaged") from None
            module.to(self.device).eval()

    def __repr__(self) -> str:
        return (f"TrainedModel({self.source}: {self.method}, {len(self.classes)} {self.dataset} classes, "
                f"{self.voxel_size * 100:g} cm voxels, inputs {'+'.join(self.input_features)})")

    # ------------------------------------------------------------------------------ text
    def embed(self, names: list[str], clip_weights: str = "") -> torch.Tensor:
        """(K, D) text embeddings of class names or phrases in the head's text space."""
        if self.text_space is None:
            raise UserError(f"{self.source}: the model has a linear head over its {len(self.classes)} training classes; "
                            "open-vocabulary queries need a model trained with a text head "
                            "(train.head = \"text\" or \"dot-text\", or clip2scene)")
        stored = self.head.text_embeddings.cpu().numpy()
        return torch.from_numpy(encode_names(self.text_space, list(names), stored, clip_weights)).to(self.device)

    # ------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def _turns(self, scan: Scan, tta: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Per turn: (decoder features (M, C) of the voxels, voxel of every point (N,))."""
        if "normal" in self.input_features:
            scan = scan.with_normals(self.normal_knn)
        for feats, coords, inverse in voxel_turns(scan.xyz, scan.rgb, scan.normal, self.input_features, self.voxel_size, tta):
            x = self._SparseTensor(torch.from_numpy(feats).to(self.device), torch.from_numpy(coords).to(self.device))
            yield self.backbone.forward_features(x), torch.from_numpy(inverse).to(self.device)

    @torch.no_grad()
    def _average(self, scan: Scan, tta: int, per_voxel: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        """(N, ...) f32: `per_voxel` of the decoder features, taken to every point through its
        voxel, averaged over the turns."""
        total = None
        for feats, inverse in self._turns(scan, tta):
            value = per_voxel(feats).float()[inverse]
            total = value if total is None else total + value
        return (total / tta).cpu().numpy()

    def predict_scan(self, scan: Scan, tta: int = 1, text: torch.Tensor | None = None,
                     classes: tuple[str, ...] | None = None) -> Prediction:
        """Labels and class probabilities of every point of `scan`; `text` (K, D) embeddings of
        `classes` replace the training classes (see `embed`)."""
        logits = self.head if text is None else (lambda feats: self.head(feats, text))
        probs = self._average(scan, tta, lambda feats: torch.softmax(logits(feats).float(), dim=1))
        return Prediction(classes or self.classes, probs.argmax(axis=1), probs)

    def features_scan(self, scan: Scan, tta: int = 1) -> np.ndarray:
        """(N, C) f32 decoder features of every point (its voxel's), averaged over the turns."""
        return self._average(scan, tta, lambda feats: feats)

    def similarity_scan(self, scan: Scan, text: torch.Tensor, tta: int = 1) -> np.ndarray:
        """(N, K) the head's logits of every point against each text embedding (a text head: the
        scaled cosine of the projected feature with the phrase), averaged over the turns."""
        return self._average(scan, tta, lambda feats: self.head(feats, text))

    def embeddings_scan(self, scan: Scan) -> np.ndarray:
        """(N, D) f32 unit embeddings of every point from HICL's embedding head."""
        if self.embed_head is None:
            raise UserError(f"{self.source}: a {self.method} model has no embedding head; attention maps need a hicl model")
        return self._average(scan, 1, self.embed_head)

    # ------------------------------------------------------------------------------ arrays API
    def predict(self, xyz: np.ndarray, rgb: np.ndarray | None = None, normals: np.ndarray | None = None,
                faces: np.ndarray | None = None, tta: int = 1, classes: list[str] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """(labels (N,), probabilities (N, K)) of points `xyz` (N, 3) metres; `rgb` (N, 3) 0-255,
        `normals` (N, 3) (computed where the model needs them and none are given: from `faces`,
        else k-NN PCA); `classes` names other classes to choose from (a text-space head only)."""
        scan = scan_from_arrays(xyz, rgb, normals, faces)
        text = None if classes is None else self.embed(list(classes))
        prediction = self.predict_scan(scan, tta, text, None if classes is None else tuple(classes))
        return prediction.labels, prediction.probs

    def features(self, xyz: np.ndarray, rgb: np.ndarray | None = None, normals: np.ndarray | None = None,
                 faces: np.ndarray | None = None, tta: int = 1) -> np.ndarray:
        """(N, C) decoder features of every point (for retrieval, probing, clustering)."""
        return self.features_scan(scan_from_arrays(xyz, rgb, normals, faces), tta)


def voxel_turns(xyz: np.ndarray, rgb: np.ndarray | None, normal: np.ndarray | None, input_names: list[str],
                voxel_size: float, tta: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The network inputs of a scan for test-time voting: per turn k of `tta` (the scan turned
    by 360 k / tta degrees about the vertical axis through its centre; turn 0 is the scan as it
    is) the voxels' input features (M, C) f32, their batch-first coordinates (M, 4) int32 and the
    voxel of every point (N,). One fixed point per voxel, as evaluation's samples; missing colours
    are zeros (as nuScenes sweeps are stored)."""
    if tta < 1:
        raise UserError(f"--tta {tta}: give the number of turns about the vertical axis (1 = none)")
    rgb = rgb if rgb is not None else np.zeros(xyz.shape, np.uint8)
    centre = xyz.mean(axis=0)
    for k in range(tta):
        angle = 2 * np.pi * k / tta
        c, s = np.cos(angle), np.sin(angle)
        turn = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float32)
        turned = (xyz - centre) @ turn.T + centre if k else xyz
        turned_normal = normal @ turn.T if k and normal is not None else normal
        coords, index, inverse = voxelize(turned, voxel_size)
        feats = input_features(input_names, index, rgb, turned, turned_normal)
        yield feats, np.concatenate([np.zeros((len(coords), 1), np.int32), coords], axis=1), inverse


def load_model(path: str | os.PathLike, device: str | torch.device | None = None, backend: str = "auto") -> TrainedModel:
    """The network of a checkpoint `python -m train fit` wrote, on `device` (default: CUDA where
    available); loads without running pickled code (refused with one clear error)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return TrainedModel(load_checkpoint(path), device, backend, source=str(path))
