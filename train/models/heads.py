"""Per-voxel heads on decoder features (M, C) -- plain tensors, independent of the sparse backend."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from train.amp import outside_autocast, widened


class LinearHead(nn.Linear):
    """Logits (M, num_classes) from features (M, C): SPVNAS's classifier."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, num_classes)


class TextHead(nn.Module):
    """Cosine logits against fixed class text embeddings (CLIP2Scene / OpenScene style).

    logits = exp(logit_scale) * cos(proj(f), t_c). The embeddings are a buffer (saved with
    the model, never trained); the scale is learned from CLIP's initial 1/0.07 and clamped
    at 100 as CLIP does, so the softmax can sharpen without running away.
    """

    score = "scaled cosine"  # what its logit against a phrase is (query figures say so)

    def __init__(self, in_channels: int, text_embeddings: torch.Tensor) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, text_embeddings.shape[1])
        self.register_buffer("text_embeddings", F.normalize(text_embeddings.float(), dim=1))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @outside_autocast
    def forward(self, feats: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """Equal to scale * normalize(proj(f)) @ t.T, without the (M, D) projection: with the
        bias folded in as x = [f, 1], |proj(f)|² = x G xᵀ for the (C+1)² Gram matrix G of the
        weights and proj(f)·t = x (Wᵀ t), so the cost is M·C² rather than M·C·D (D = 512).
        In float32 under autocast too: the norm from a Gram matrix loses digits fast, and at a
        logit scale up to 100 a 0.5% error in bfloat16 moves logits by 0.5.
        `text` (K, D) scores other classes than the training ones (open-vocabulary queries)."""
        text = self.text_embeddings if text is None else F.normalize(text.float(), dim=1)
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        feats = widened(feats)
        x = torch.cat([feats, feats.new_ones(feats.shape[0], 1)], dim=1)
        w = torch.cat([self.proj.weight, self.proj.bias[:, None]], dim=1).to(feats.dtype)
        dots = x @ (w.t() @ text.to(feats.dtype).t())
        norm = ((x @ (w.t() @ w)) * x).sum(dim=1).clamp_min(0).sqrt().clamp_min(1e-12)
        return scale * dots / norm[:, None]


class DotTextHead(nn.Module):
    """CLIP2Scene's classifier: logits = proj(f) · t_c, a plain dot product with the fixed class
    text embeddings as stored (no normalisation, no temperature: scaling the projected feature
    scales the logits), as its `F.conv1d(point_feats, text_embeddings)` computes them.

    Computed as x (Wᵀ tᵀ) with the bias folded in as x = [f, 1], without the (M, D) projection.
    """

    score = "dot product"

    def __init__(self, in_channels: int, text_embeddings: torch.Tensor) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, text_embeddings.shape[1])
        self.register_buffer("text_embeddings", text_embeddings.float().clone())

    def forward(self, feats: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (M, C); `text` (K, D) scores other classes (open-vocabulary queries)."""
        text = self.text_embeddings if text is None else text.float()
        w = torch.cat([self.proj.weight, self.proj.bias[:, None]], dim=1).to(feats.dtype)
        x = torch.cat([feats, feats.new_ones(feats.shape[0], 1)], dim=1)
        return x @ (w.t() @ text.to(feats.dtype).t())


class ProjectionHead(nn.Module):
    """L2-normalised embeddings (M, dim) for the correlation losses: Linear-ReLU-Linear, as in
    SimCLR-style projection heads, so the losses shape this space rather than the decoder's."""

    def __init__(self, in_channels: int, dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_channels, in_channels), nn.ReLU(inplace=True), nn.Linear(in_channels, dim))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(feats), dim=1)


# The classifier heads `train.head` and a checkpoint name (train/engine/checkpoint.py), so
# training builds one from the pipeline and inference from the checkpoint alone.
CLASSIFIERS: dict[str, type[nn.Module]] = {"linear": LinearHead, "text": TextHead, "dot-text": DotTextHead}


def build_classifier(kind: str, channels: int, num_classes: int, text: torch.Tensor | None) -> nn.Module:
    """The `CLASSIFIERS[kind]` head on `channels` features: a linear one over `num_classes`,
    the others over the (num_classes, D) class `text` embeddings."""
    if kind == "linear":
        return LinearHead(channels, num_classes)
    if text is None or len(text) != num_classes:
        raise ValueError(f"a {kind!r} classifier needs ({num_classes}, D) class text embeddings")
    return CLASSIFIERS[kind](channels, text)
