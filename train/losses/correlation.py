"""Intra-scene and inter-scene correlation learning with set prototypes, and feedback
(method.md §3–§5).

For a query embedding f_q and labelled keys k_g (L2-normalised set prototypes):
    A_qg = softmax_g(f_q · k_g / τ),   p_q[c] = Σ_{g: ŷ_g = c} A_qg,   L = −mean_q log p_q[ŷ_q].
log p_q[c] is computed as (log-sum-exp over the keys of class c) − (log-sum-exp over all keys),
each class's sum shifted by its own largest term: exact and stable for any τ.

Every tensor has a size known before the data is seen: which keys a query sees is a group index
per key (its class among the query scene's own keys, among the other keys, or none), the sums
per group are scatters, unused query slots and empty groups are masked, averages are masked
means. So nothing waits for a GPU to report a count (per-scene and per-class loops over
`nonzero` and `tolist` made this loss ~100 host synchronisations a step). Work is O(Q × G) for
Q queries and G keys, done in chunks of queries that are recomputed in backward (activation
checkpointing), so peak memory is O(chunk × G); nothing is O(points²) or O(Q × points).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from shared.config import HICLConfig
from train.amp import outside_autocast, widened
from train.losses.memory_bank import MemoryBank


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` where `mask`; a zero that keeps the graph (so DDP sees every parameter
    that made `values`) where the mask is empty. No host sync."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)


# --------------------------------------------------------------------------------------------
# Prototypes
# --------------------------------------------------------------------------------------------
def _spare_row(segment: Tensor, num_sets: int) -> Tensor:
    """Each point's set id, points in no set (-1) sent to a spare row `num_sets` that is dropped."""
    return torch.where(segment >= 0, segment, num_sets).long()


def set_prototypes(
    embeddings: Tensor, segment: Tensor, labels: Tensor, num_classes: int, num_sets: int
) -> tuple[Tensor, Tensor]:
    """Prototype and label of every set id 0 .. num_sets - 1: (protos (G, D), labels (G,)).

    `segment` holds batch-global set ids (collate makes them), -1 for points in no set. A
    prototype is normalize(mean of its points' embeddings) and keeps the gradient to them. Its
    label is the most frequent label >= 0 among its points (lowest class on ties; -1 if none):
    for refined labels of a refined set that is the set label ŷ_g. An id no point has gets a
    zero prototype and label -1, so it is never a key.
    """
    row = _spare_row(segment, num_sets)
    sums = embeddings.new_zeros(num_sets + 1, embeddings.shape[1]).index_add(0, row, embeddings)
    protos = F.normalize(sums[:num_sets], dim=1)
    voted = (segment >= 0) & (labels >= 0)
    cell = torch.where(voted, row * num_classes + labels.long(), num_sets * num_classes)
    counts = torch.zeros((num_sets + 1) * num_classes, device=segment.device).index_add_(
        0, cell, torch.ones_like(cell, dtype=torch.float32))[: num_sets * num_classes].view(num_sets, num_classes)
    return protos, torch.where(counts.sum(1) > 0, counts.argmax(1), -1)


def set_scenes(segment: Tensor, scene: Tensor, num_sets: int) -> Tensor:
    """(G,) the batch scene of each set id, -1 for an id no point has."""
    out = torch.full((num_sets + 1,), -1, dtype=torch.long, device=segment.device)
    return out.scatter(0, _spare_row(segment, num_sets), scene.long())[:num_sets]


# --------------------------------------------------------------------------------------------
# Correlation
# --------------------------------------------------------------------------------------------
def group_log_mass(
    query: Tensor, keys: Tensor, group: Tensor, groups: int, *, tau: float, exclude: Tensor | None = None,
    chunk_size: int = 2048,
) -> Tensor:
    """(Q, groups) log Σ_{g in group j} exp(f_q·k_g/τ) for queries (Q, D) and keys (K, D), where
    `group` (K,) puts each key in one of `groups` groups (`groups` itself: in none) and `exclude`
    (Q,) leaves one key out per query (its row in `keys`; -1: none). Each group's sum is shifted
    by its own largest term, so it is exact for any τ; an empty group gets the most negative
    finite value (not -inf, whose log-sum-exp has a NaN gradient).

    One product, one exp and two scatters over the (queries × keys) similarities; chunks of
    queries are recomputed in backward (activation checkpointing), so peak memory is
    O(chunk × keys)."""
    lowest = torch.finfo(query.dtype).min
    index = group.long()[None, :]

    def chunk(rows: slice) -> Tensor:
        sim = (query[rows] / tau) @ keys.T
        if exclude is not None:  # -inf at each query's excluded key; -1 rewrites column 0 with itself
            column = exclude[rows].clamp(min=0)[:, None]
            sim.scatter_(1, column, torch.where(exclude[rows, None] >= 0, float("-inf"), sim.gather(1, column)))
        where = index.expand_as(sim)
        peak = sim.new_full((sim.shape[0], groups + 1), float("-inf")).scatter_reduce(1, where, sim.detach(), "amax")
        shift = torch.where(torch.isfinite(peak), peak, 0.0)
        mass = sim.new_zeros(sim.shape[0], groups + 1).scatter_add(1, where, torch.exp(sim - shift.gather(1, where)))
        return torch.where(mass > 0, mass.clamp(min=torch.finfo(mass.dtype).tiny).log() + shift, lowest)[:, :groups]

    track = torch.is_grad_enabled() and (query.requires_grad or keys.requires_grad)
    parts = [checkpoint(chunk, rows, use_reentrant=False) if track else chunk(rows)
             for rows in (slice(start, start + chunk_size) for start in range(0, query.shape[0], chunk_size))]
    return torch.cat(parts) if parts else query.new_zeros(0, groups)


def correlation_nll(log_mass: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
    """(−log p_q[ŷ_q] (Q,), valid (Q,)) from class masses (Q, C): valid where ŷ_q >= 0 and its
    class has a key for q."""
    own = log_mass.gather(1, label.clamp(min=0).long()[:, None]).squeeze(1)
    valid = (label >= 0) & (own > torch.finfo(log_mass.dtype).min)
    return torch.logsumexp(log_mass, dim=1) - own, valid


@torch.no_grad()
def class_distribution(log_mass: Tensor, num_classes: int) -> Tensor:
    """p (Q, C), detached (it is a target), from masses (Q, k·C) of k disjoint key sets (each
    C classes): the softmax over every key in reach summed per class; zero rows for queries
    without any key."""
    any_key = (log_mass > torch.finfo(log_mass.dtype).min).any(dim=1, keepdim=True)
    p = torch.softmax(log_mass, dim=1).view(log_mass.shape[0], -1, num_classes).sum(dim=1)
    return torch.where(any_key, p, 0.0)


def similar_sets(clip: Tensor, normal: Tensor, segment: Tensor, num_sets: int, visual: float, geometric: float) -> Tensor:
    """(G, G) bool: set pairs whose mean CLIP features and mean normals both have a cosine above
    `visual` and `geometric` (method.md §3's visually and geometrically similar sets). Points
    without a CLIP feature (all zeros: seen by no camera) do not count toward their set's mean."""
    row = _spare_row(segment, num_sets)
    seen = torch.where(clip.abs().sum(dim=1) > 0, row, num_sets)
    mean_clip = clip.new_zeros(num_sets + 1, clip.shape[1]).index_add(0, seen, clip)[:num_sets]
    mean_normal = normal.new_zeros(num_sets + 1, normal.shape[1]).index_add(0, row, normal)[:num_sets]
    c, n = F.normalize(mean_clip.float(), dim=1), F.normalize(mean_normal.float(), dim=1)
    return ((c @ c.T) > visual) & ((n @ n.T) > geometric)


def masked_log_mass(query: Tensor, keys: Tensor, allowed: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """(log Σ_{g allowed for q} exp(f_q·k_g/τ) (Q,), any key allowed (Q,)). Rows without an
    allowed key get the most negative finite value instead of -inf, so no backward meets inf − inf."""
    sim = query @ keys.T / tau
    lowest = torch.finfo(sim.dtype).min  # of the dtype being filled: float32's overflows float16
    sim = sim.masked_fill(~allowed, lowest)
    return torch.logsumexp(sim, dim=1).clamp(min=lowest), allowed.any(dim=1)


@outside_autocast
def correlation_loss(
    query: Tensor,
    query_label: Tensor,
    keys: Tensor,
    key_label: Tensor,
    *,
    num_classes: int,
    tau: float = 0.1,
    exclude: Tensor | None = None,
    chunk_size: int = 2048,
) -> tuple[Tensor, Tensor]:
    """(−mean_q log p_q[ŷ_q], p (Q, C) detached) over the labelled keys, each query leaving out
    its `exclude` key (-1: none). Queries whose class has no key are skipped; with none left the
    loss is a zero that keeps the graph (so DDP sees every parameter)."""
    group = torch.where(key_label >= 0, key_label, num_classes)
    log_mass = group_log_mass(query, keys, group, num_classes, tau=tau, exclude=exclude, chunk_size=chunk_size)
    nll, valid = correlation_nll(log_mass, query_label)
    return masked_mean(nll, valid), class_distribution(log_mass, num_classes)


# --------------------------------------------------------------------------------------------
# The HICL loss terms
# --------------------------------------------------------------------------------------------
class HICLLoss(nn.Module):
    """Intra-scene, inter-scene and feedback terms of method.md §3–§5 for one batch.

    Choices ([design]):
    - Queries: up to `queries_per_scene` random points per scene with label >= 0.
    - Intra-scene keys: the scene's labelled prototypes. The query's own set is a key by default
      (it is a positive: pulling a point to its set's mean is the intra-set compactness the
      method wants, and no query is lost in scenes with one set per class); `exclude_own_set`
      leaves it out so only other sets of the scene teach the query.
    - Inter-scene keys: the labelled prototypes of the other scenes of the batch plus the memory
      bank. The batch's prototypes enter the bank (detached, with their scenes' ids) after the loss
      is computed, and the bank's entries of the query's own scene (from earlier epochs) are left
      out, so a scene never meets its own prototypes as inter-scene keys.
    - Feedback: p_q over every key in reach (intra ∪ inter keys), detached, is the target of
      KL(p_q || softmax(logits_q)), from epoch `feedback_warmup_epochs` on (epochs count from 0).
    - Gradients flow into in-batch prototypes as well as queries; bank entries are constants.
    - Intra-set consistency [design]: 1 − cos(f_i, k_g(i)) averaged over points in a set, pulling
      each point toward its own set's prototype (the feature-level side of the intra-set level;
      the label-level side is the refinement of the CE targets).
    - Similar positives (`similar_positives`, off by default): with `looks` = (per-point CLIP
      features, normals), an intra-scene key of another label whose set is similar to the
      query's own set (`similar_sets`) joins the positives of the intra-scene term.
    The returned dict has one entry per active term ("set", "intra", "inter", "feedback"), unweighted,
    and "total" = Σ λ · term (a zero that keeps the embeddings' graph when no term is active yet,
    e.g. feedback alone before its warm-up: DDP needs every parameter in the graph).
    """

    def __init__(self, cfg: HICLConfig, num_classes: int, chunk_size: int = 2048) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.chunk_size = chunk_size
        self.memory = MemoryBank(cfg.memory_size, cfg.embed_dim) if cfg.inter_scene else None

    def _sample_queries(
        self, labels: Tensor, scene: Tensor, num_scenes: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Up to `queries_per_scene` (q) random labelled points of every scene, without
        replacement: (point of each slot (B·q,), slot used (B·q,)). Scene b owns slots
        [b·q, (b+1)·q); the first min(q, its labelled points) are used."""
        n = labels.shape[0]
        q = min(self.cfg.queries_per_scene, n)
        device = generator.device if generator is not None else labels.device
        draw = torch.rand(n, generator=generator, device=device).to(labels.device, torch.float64)
        # per scene, its labelled points in random order, then the others
        order = torch.argsort(scene.double() * 2 + (labels < 0).double() + draw)
        sizes = torch.zeros(num_scenes, dtype=torch.long, device=labels.device).index_add_(0, scene, torch.ones_like(scene))
        labelled = torch.zeros_like(sizes).index_add_(0, scene, (labels >= 0).long())
        slot = torch.arange(q, device=labels.device)
        points = order[((torch.cumsum(sizes, 0) - sizes)[:, None] + slot[None, :]).clamp(max=n - 1)]
        return points.reshape(-1), (slot[None, :] < labelled[:, None]).reshape(-1)

    @outside_autocast
    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        segment: Tensor,
        scene: Tensor,
        scene_ids: Tensor,
        epoch: int,
        *,
        num_sets: int,
        logits: Tensor | None = None,
        generator: torch.Generator | None = None,
        looks: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """embeddings (N, D) L2-normalised; labels (N,) refined, -1 none; segment (N,) batch-global
        set ids 0 .. num_sets - 1, -1 none; scene (N,) batch index; scene_ids (B,) the dataset's
        id of each batch scene (what the memory bank keeps); logits (N, C) for the feedback
        term; looks = (CLIP features (N, D'), normals (N, 3)) for `similar_positives`.
        Runs in float32 under autocast too: half-precision embeddings are widened."""
        embeddings, scene = widened(embeddings), scene.long()
        cfg, num_classes = self.cfg, self.num_classes
        feedback = cfg.feedback and logits is not None and epoch >= cfg.feedback_warmup_epochs
        protos, proto_labels = set_prototypes(embeddings, segment, labels, num_classes, num_sets)
        proto_scene = set_scenes(segment, scene, num_sets)
        proto_ids = torch.where(proto_scene >= 0, scene_ids[proto_scene.clamp(min=0)], -1)  # the dataset's scene ids

        points, used = self._sample_queries(labels, scene, len(scene_ids), generator)
        query, query_label, query_set = embeddings[points], labels[points].long(), segment[points].long()
        exclude = query_set if cfg.exclude_own_set else None  # -1 (in no set) excludes nothing
        labelled = used & (query_label >= 0)

        # Keys: the batch's prototypes (intra: the query's scene's; inter: the others'), then the
        # memory bank's entries of other scenes (an empty slot has label -1). Per query scene,
        # each key falls in one group: its class among the intra keys (0..C-1), among the inter
        # keys (C..2C-1), or none (2C).
        keys, key_label, key_id = protos, proto_labels, proto_ids
        if self.memory is not None and (cfg.inter_scene or feedback):
            bank_keys, bank_labels, bank_ids = self.memory.slots()
            keys = torch.cat([protos, bank_keys.to(protos)])
            key_label = torch.cat([proto_labels, bank_labels])
            key_id = torch.cat([proto_ids, bank_ids])
        in_batch = torch.arange(len(keys), device=keys.device) < len(protos)
        log_mass, slots = [], len(points) // len(scene_ids)  # scene b's queries: slots [b·slots, (b+1)·slots)
        with torch.set_grad_enabled((cfg.intra_scene or cfg.inter_scene) and torch.is_grad_enabled()):
            for b in range(len(scene_ids) if cfg.intra_scene or cfg.inter_scene or feedback else 0):
                rows = slice(b * slots, (b + 1) * slots)
                same = key_id == scene_ids[b]
                intra = (key_label >= 0) & same & in_batch & (cfg.intra_scene or feedback)
                inter = (key_label >= 0) & ~same & (cfg.inter_scene or feedback)
                group = torch.where(intra, key_label, torch.where(inter, num_classes + key_label, 2 * num_classes))
                log_mass.append(group_log_mass(query[rows], keys, group, 2 * num_classes, tau=cfg.tau,
                                               exclude=exclude[rows] if exclude is not None else None,
                                               chunk_size=self.chunk_size))
        log_mass = torch.cat(log_mass) if log_mass else None

        terms = {}
        if cfg.intra_set:  # intra-set consistency: each point's embedding toward its own set's prototype
            cos = (embeddings * protos[segment.clamp(min=0)]).sum(dim=1)
            terms["set"] = masked_mean(1.0 - cos, segment >= 0)
        if cfg.intra_scene:
            intra = log_mass[:, :num_classes]
            nll, valid = correlation_nll(intra, query_label)
            if cfg.similar_positives:  # keys of other labels whose sets look like the query's own
                if looks is None:
                    raise ValueError("hicl.similar_positives needs per-point CLIP features and normals (looks)")
                similar = similar_sets(*looks, segment, num_sets, cfg.similar_visual, cfg.similar_normal)
                allowed = (similar[query_set.clamp(min=0)] & (query_set >= 0)[:, None]
                           & (proto_ids[None, :] == scene_ids[scene[points]][:, None])
                           & (proto_labels >= 0)[None, :] & (proto_labels[None, :] != query_label[:, None]))
                if exclude is not None:
                    allowed &= torch.arange(len(protos), device=allowed.device)[None, :] != exclude[:, None]
                extra, has_extra = masked_log_mass(query, protos, allowed, cfg.tau)
                own = intra.gather(1, query_label.clamp(min=0)[:, None]).squeeze(1)
                nll = torch.logsumexp(intra, dim=1) - torch.logaddexp(own, extra)
                valid = (query_label >= 0) & (valid | has_extra)
            terms["intra"] = masked_mean(nll, valid & labelled)
        if cfg.inter_scene:
            nll, valid = correlation_nll(log_mass[:, num_classes:], query_label)
            terms["inter"] = masked_mean(nll, valid & labelled)
        if feedback:
            p = class_distribution(log_mass, num_classes)
            log_q = torch.log_softmax(logits[points].float(), dim=1)
            kl = F.kl_div(log_q, p.to(log_q.dtype), reduction="none").sum(dim=1)
            terms["feedback"] = masked_mean(kl, used & (p.sum(dim=1) > 0))

        weights = {"set": cfg.lambda_set, "intra": cfg.lambda_intra, "inter": cfg.lambda_inter,
                   "feedback": cfg.lambda_feedback}
        terms["total"] = sum((weights[k] * v for k, v in terms.items()), embeddings.sum() * 0.0)

        if self.memory is not None and self.training:
            self.memory.push(protos, proto_labels, proto_ids, keep=proto_labels >= 0)
        return terms
