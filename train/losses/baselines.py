"""Baseline losses: plain cross-entropy to pseudo-labels, and CLIP2Scene's label-free losses on
pixel-point pairs as its code computes them (runnanchen/CLIP2Scene @ 875ce71,
pretrain/lightning_trainer.py `scannet_loss` / `loss_nuscenes`, model/fusionNet.py; method.md,
"The comparison method").

A pair is one (point, pixel) the labels stage counted: a voxel seen by several views, or by
several of its points, has one pair each, each with its own pixel's label and feature. Every
loss here is a mean over pairs (or super-node members); the CE and the distillation take their
sums over pairs through (voxel, class) counts and per-voxel sums of pixel features, so their
memory grows with voxels, not with pairs × channels (ScanNet: up to ~400k pairs a scene at 8
views, × 512 channels). They compute in float32 whatever the autocast around them, and (except
the spatial-temporal term) with no result size that depends on the data, so none waits for a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from train.amp import outside_autocast

MAX_MEMBERS = 8  # CLIP2Scene's `max_size`: pairs of a super-node beyond its first 8 are left out
PAIR_CHUNK_ELEMENTS = 1 << 24  # pixel features gathered at once by the distillation (64 MB in float32)


@outside_autocast
def pseudo_ce_loss(logits: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
    """Cross-entropy over points with label >= 0 (-1 ignored), optionally class-weighted (the
    weighted mean, as F.cross_entropy takes it); a graph-keeping zero if no point has a label.
    Taken as a sum over a (weighted) count, so no host sync asks whether any point has one."""
    labels = labels.long()
    total = F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=-1, reduction="sum")
    labelled = (labels >= 0).float()
    count = labelled.sum() if weight is None else (weight.float()[labels.clamp(min=0)] * labelled).sum()
    return total / count.clamp(min=torch.finfo(torch.float32).tiny)


@outside_autocast
def pair_ce_loss(logits: Tensor, pair_voxel: Tensor, pair_label: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean over pairs p of CE(logits[voxel_p], label_p) (the weighted mean with class weights,
    as F.cross_entropy takes it); a graph-keeping zero without pairs.

    Equal to F.cross_entropy(logits[pair_voxel], pair_label) without the (pairs × classes)
    gather: each (voxel, class) is weighed by how many pairs ask for it.
    """
    if pair_voxel.numel() == 0:
        return logits.sum() * 0.0
    voxels, classes = logits.shape
    cells = pair_voxel * classes + pair_label
    counts = logits.new_zeros(voxels * classes, dtype=torch.float32).index_add_(
        0, cells, torch.ones_like(cells, dtype=torch.float32)).view(voxels, classes)
    if weight is not None:
        counts = counts * weight.float()[None]
    return -(counts * torch.log_softmax(logits.float(), dim=1)).sum() / counts.sum()


@outside_autocast
def pair_distill_loss(features: Tensor, pair_voxel: Tensor, patch_feat: Tensor, pair_patch: Tensor) -> Tensor:
    """Mean over pairs p of 1 − cos(features[voxel_p], patch_feat[patch_p]): CLIP2Scene's
    `loss_spatial`, the point feature (a head of its own) pulled toward its pixel's CLIP feature.

    Taken as 1 − Σ_v f̂_v · (Σ_{p of v} ĝ_patch_p) / P, the inner sum (a constant: pixel
    features are targets) added up per voxel a chunk of pairs at a time, so no (pairs × D)
    tensor is made.
    """
    pairs = pair_voxel.numel()
    if pairs == 0:
        return features.sum() * 0.0
    unit = F.normalize(features.float(), dim=1)
    pixels = F.normalize(patch_feat.float(), dim=1)
    target = pixels.new_zeros(len(features), pixels.shape[1])  # sum of each voxel's pixel features
    step = max(1, PAIR_CHUNK_ELEMENTS // pixels.shape[1])
    for start in range(0, pairs, step):
        target.index_add_(0, pair_voxel[start:start + step], pixels[pair_patch[start:start + step]])
    return 1.0 - (unit * target).sum() / pairs


@outside_autocast
def spatial_temporal_loss(
    features: Tensor, pair_voxel: Tensor, pair_label: Tensor, pair_group: Tensor, text: Tensor,
    max_members: int = MAX_MEMBERS,
) -> Tensor:
    """CLIP2Scene's semantic-guided spatial-temporal consistency (`loss_nuscenes`, fusionNet).

    Pairs are grouped into super-nodes by `pair_group`; a node's members are its first
    `max_members` pairs (in pair order). With f_k = features[voxel of member k] and t the text
    embedding of the node's first member's pixel label: attention a = softmax_k(f_k · t),
    fusion z = Σ_k a_k f_k, and the loss is the mean over members of 1 − sigmoid(z · f_k).
    (CLIP2Scene's mean also counts the empty slots of a node's 8, each a constant
    1 − sigmoid(0) = 0.5; that only rescales the term, so the mean here is over members.)
    A graph-keeping zero without pairs.
    """
    if pair_voxel.numel() == 0:
        return features.sum() * 0.0
    order = torch.argsort(pair_group, stable=True)
    _, node, sizes = torch.unique_consecutive(pair_group[order], return_inverse=True, return_counts=True)
    start = torch.cumsum(sizes, 0) - sizes
    keep = torch.arange(len(order), device=order.device) - start[node] < max_members
    member, node = order[keep], node[keep]
    voxel, nodes = pair_voxel[member], len(sizes)
    f = features.float()
    # attention logits f_k · t_y through the (voxels × classes) table, not a (members × D) one
    score = (f @ text.float().t())[voxel, pair_label[order[start]][node]]
    shift = torch.full((nodes,), float("-inf"), device=f.device).scatter_reduce(0, node, score.detach(), "amax")
    weight = torch.exp(score - shift[node])
    attention = weight / torch.zeros(nodes, device=f.device).index_add(0, node, weight)[node]
    fv = f[voxel]
    fusion = torch.zeros(nodes, f.shape[1], device=f.device).index_add(0, node, attention[:, None] * fv)
    return (1.0 - torch.sigmoid((fusion[node] * fv).sum(1))).mean()


def clip2scene_loss(
    logits: Tensor,
    features: Tensor | None,
    pair_voxel: Tensor,
    pair_label: Tensor,
    epoch: int,
    patch_feat: Tensor | None = None,
    pair_patch: Tensor | None = None,
    text: Tensor | None = None,
    pair_group: Tensor | None = None,
    switch_epoch: int = 10,
    switch_prob: float = 0.5,
    distill_weight: float = 1.0,
    generator: torch.Generator | None = None,
    weight: Tensor | None = None,
) -> dict[str, Tensor]:
    """CLIP2Scene label-free on pairs: {"ce", ["distill",] ["spatial_temporal",] "total"}.

    logits (voxels, C) from the dot-product text head; features (voxels, D) from the second head
    (None where neither term below that uses it is on).
    - "ce": `pair_ce_loss` to the pixels' labels. From epoch `switch_epoch` on (epochs count
      from 0), one coin per call (per step, as CLIP2Scene's `random.randint(1, 10) > 5`) with
      probability `switch_prob` replaces every pair's target by its voxel's own argmax.
    - "distill" (with `patch_feat`, `pair_patch`): `pair_distill_loss`, weighed by `distill_weight`.
    - "spatial_temporal" (with `text`, `pair_group`): `spatial_temporal_loss` on the pixels'
      labels (CLIP2Scene packs them before the switch).
    `weight` is the CE's optional per-class weight.
    """
    targets = pair_label
    if epoch >= switch_epoch:  # the coin stays on the device: both targets made, one kept
        device = generator.device if generator is not None else torch.device("cpu")
        switch = torch.rand((), generator=generator, device=device).to(pair_label.device) < switch_prob
        targets = torch.where(switch, logits.detach().argmax(dim=1)[pair_voxel], pair_label)
    terms = {"ce": pair_ce_loss(logits, pair_voxel, targets, weight)}
    total = terms["ce"]
    if patch_feat is not None:
        terms["distill"] = pair_distill_loss(features, pair_voxel, patch_feat, pair_patch)
        total = total + distill_weight * terms["distill"]
    if pair_group is not None:
        terms["spatial_temporal"] = spatial_temporal_loss(features, pair_voxel, pair_label, pair_group, text)
        total = total + terms["spatial_temporal"]
    terms["total"] = total
    return terms
