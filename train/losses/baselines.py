"""Baseline losses: plain cross-entropy to pseudo-labels, and CLIP2Scene's label-free loss
(method.md, "The comparison method"; peers.md §2.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from train.engine.amp import outside_autocast


@outside_autocast
def pseudo_ce_loss(logits: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
    """Cross-entropy over points with label >= 0 (-1 ignored), optionally class-weighted (the
    weighted mean, as F.cross_entropy takes it); a graph-keeping zero if no point has a label."""
    labels = labels.long()
    if not bool((labels >= 0).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=-1)


@outside_autocast
def clip2scene_loss(
    logits: Tensor,
    point_features: Tensor,
    clip_features: Tensor,
    pseudo_labels: Tensor,
    has_feature: Tensor,
    epoch: int,
    switch_epoch: int = 10,
    switch_prob: float = 0.5,
    distill_weight: float = 1.0,
    generator: torch.Generator | None = None,
    weight: Tensor | None = None,
) -> dict[str, Tensor]:
    """CLIP2Scene label-free: CE to MaskCLIP pseudo-labels + feature distillation.

    - "ce": cross-entropy on points with a pseudo-label. From epoch `switch_epoch` on (epochs
      count from 0), one coin per call (per iteration, as in CLIP2Scene's switchable training)
      with probability `switch_prob` replaces those points' targets with the network's own
      predictions (argmax of the detached logits); the supervised points stay the same.
    - "distill": mean 1 − cos(point feature, CLIP feature) over points with `has_feature`;
      `point_features` are already projected to the CLIP dimension.
    - "total": ce + distill_weight · distill.
    `weight` is the CE's optional per-class weight.
    """
    labels = pseudo_labels.long()
    device = generator.device if generator is not None else torch.device("cpu")
    switch = epoch >= switch_epoch and bool(torch.rand((), generator=generator, device=device) < switch_prob)
    if switch:
        labels = torch.where(labels >= 0, logits.detach().argmax(dim=1), -1)
    ce = pseudo_ce_loss(logits, labels, weight)

    mask = has_feature.bool()
    if bool(mask.any()):
        cos = F.cosine_similarity(point_features[mask].float(), clip_features[mask].float(), dim=1)
        distill = (1.0 - cos).mean()
    else:
        distill = point_features.sum() * 0.0
    return {"ce": ce, "distill": distill, "total": ce + distill_weight * distill}
