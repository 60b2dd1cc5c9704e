"""Intra-scene and inter-scene correlation learning with set prototypes, and feedback
(method.md §3–§5).

For a query embedding f_q and labelled keys k_g (L2-normalised set prototypes):
    A_qg = softmax_g(f_q · k_g / τ),   p_q[c] = Σ_{g: ŷ_g = c} A_qg,   L = −mean_q log p_q[ŷ_q].
log p_q[c] is computed as (logsumexp over the keys of class c) − (logsumexp over all keys), with
the keys sorted by class so each class is one contiguous slice: exact and stable for any τ.
Work is O(Q × G) for Q queries and G keys, done in chunks of queries that are recomputed in
backward (activation checkpointing), so peak memory is O(chunk × G); nothing is O(points²)
or O(Q × points).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from shared.config import HICLConfig
from train.amp import outside_autocast, widened
from train.losses.memory_bank import MemoryBank


# --------------------------------------------------------------------------------------------
# Prototypes
# --------------------------------------------------------------------------------------------
def scene_segments(segment: Tensor, scene: Tensor) -> Tensor:
    """Set ids made unique across the scenes of a batch: scene · span + segment; -1 stays -1."""
    span = int(segment.max()) + 1 if segment.numel() else 1
    return torch.where(segment >= 0, scene.long() * span + segment.long(), -1)


def set_prototypes(
    embeddings: Tensor, segment: Tensor, labels: Tensor, num_classes: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Prototype per set present in `segment`: (protos (G, D) normalised, labels (G,), index (M,)).

    `segment` holds batch-global set ids (see `scene_segments`), -1 for points in no set; ids
    need not be contiguous. A prototype is normalize(mean of its points' embeddings) and keeps
    the gradient to them. Its label is the most frequent label >= 0 among its points (lowest
    class on ties; -1 if none): for refined labels of a refined set that is the set label ŷ_g.
    `index` maps every point to its prototype row, -1 for points in no set.
    """
    in_set = segment >= 0
    ids = segment.long()[in_set]
    span = int(ids.max()) + 1 if ids.numel() else 0
    present = torch.bincount(ids, minlength=span) > 0
    row = torch.cumsum(present, 0) - 1
    index = torch.full_like(segment, -1, dtype=torch.long)
    index[in_set] = row[ids]
    num_sets = int(present.sum())

    sums = embeddings.new_zeros(num_sets, embeddings.shape[1]).index_add(0, index[in_set], embeddings[in_set])
    protos = F.normalize(sums, dim=1)

    voted = in_set & (labels >= 0)
    counts = torch.bincount(
        index[voted] * num_classes + labels[voted].long(), minlength=num_sets * num_classes
    ).view(num_sets, num_classes)
    proto_labels = torch.where(counts.sum(1) > 0, counts.argmax(1), -1)
    return protos, proto_labels, index


# --------------------------------------------------------------------------------------------
# Correlation
# --------------------------------------------------------------------------------------------
class ClassMass(NamedTuple):
    """Per query and class: log Σ_{g: ŷ_g=c} exp(f_q·k_g/τ) and whether class c has a key for q."""

    log_mass: Tensor  # (Q, C); -inf for classes without keys
    has_key: Tensor  # (Q, C) bool


def _chunk_log_mass(
    query: Tensor, keys: Tensor, excluded: Tensor, sizes: list[int], present: Tensor, tau: float
) -> Tensor:
    """(Qc, C) log class masses for one chunk of queries; keys sorted by class."""
    sim = query @ keys.T / tau
    rows = torch.nonzero(excluded >= 0).squeeze(1)
    # The most negative finite value, not -inf: a slice whose only key is excluded stays
    # finite, so logsumexp's backward never computes inf − inf.
    sim = sim.index_put((rows, excluded[rows]), sim.new_tensor(torch.finfo(sim.dtype).min))
    out = sim.new_full((query.shape[0], present.shape[0]), float("-inf"))
    parts = [torch.logsumexp(s, dim=1) for s in sim.split(sizes, dim=1)]
    out[:, present] = torch.stack(parts, dim=1)
    return out


def class_log_mass(
    query: Tensor,
    keys: Tensor,
    key_label: Tensor,
    *,
    num_classes: int,
    tau: float = 0.1,
    exclude: Tensor | None = None,
    chunk_size: int = 2048,
) -> ClassMass:
    """Class masses of the correlation of `query` (Q, D) with the keys (G, D) whose label >= 0.

    `exclude` (Q,) names one key row (into `keys`) per query to leave out, -1 for none.
    """
    num_q = query.shape[0]
    usable = torch.nonzero(key_label >= 0).squeeze(1)
    order = usable[torch.argsort(key_label[usable], stable=True)]
    sorted_keys = keys[order]
    counts = torch.bincount(key_label[order].long(), minlength=num_classes)
    present = counts > 0
    sizes = counts[present].tolist()

    # Position of each query's excluded key in the sorted order (-1: none or not a usable key).
    position = torch.full((keys.shape[0],), -1, dtype=torch.long, device=keys.device)
    position[order] = torch.arange(order.shape[0], device=keys.device)
    excluded = torch.full((num_q,), -1, dtype=torch.long, device=query.device)
    if exclude is not None:
        excluded = torch.where(exclude >= 0, position[exclude.clamp(min=0)], -1)

    key_count = counts.expand(num_q, num_classes).clone()
    hit = torch.nonzero(excluded >= 0).squeeze(1)
    key_count[hit, key_label[order[excluded[hit]]].long()] -= 1
    has_key = key_count > 0

    if order.numel() == 0:
        return ClassMass(query.new_full((num_q, num_classes), float("-inf")), has_key)
    track = torch.is_grad_enabled() and (query.requires_grad or keys.requires_grad)
    chunks = []
    for start in range(0, num_q, chunk_size):
        args = (query[start:start + chunk_size], sorted_keys, excluded[start:start + chunk_size], sizes, present, tau)
        chunks.append(checkpoint(_chunk_log_mass, *args, use_reentrant=False) if track else _chunk_log_mass(*args))
    log_mass = torch.cat(chunks) if chunks else query.new_zeros(0, num_classes)
    return ClassMass(log_mass, has_key)


def combine(a: ClassMass, b: ClassMass) -> ClassMass:
    """Class masses over the union of two disjoint key sets."""
    return ClassMass(torch.logaddexp(a.log_mass, b.log_mass), a.has_key | b.has_key)


def similar_sets(clip: Tensor, normal: Tensor, index: Tensor, num_sets: int, visual: float, geometric: float) -> Tensor:
    """(G, G) bool: set pairs whose mean CLIP features and mean normals both have a cosine above
    `visual` and `geometric` (method.md §3's visually and geometrically similar sets). Points
    without a CLIP feature (all zeros: seen by no camera) do not count toward their set's mean."""
    inside = index >= 0
    seen = inside & (clip.abs().sum(dim=1) > 0)
    mean_clip = clip.new_zeros(num_sets, clip.shape[1]).index_add(0, index[seen], clip[seen])
    mean_normal = normal.new_zeros(num_sets, normal.shape[1]).index_add(0, index[inside], normal[inside])
    c, n = F.normalize(mean_clip.float(), dim=1), F.normalize(mean_normal.float(), dim=1)
    return ((c @ c.T) > visual) & ((n @ n.T) > geometric)


def masked_log_mass(query: Tensor, keys: Tensor, allowed: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """(log Σ_{g allowed for q} exp(f_q·k_g/τ) (Q,), any key allowed (Q,)). Rows without an
    allowed key get the most negative finite value instead of -inf, so no backward meets inf − inf."""
    sim = query @ keys.T / tau
    lowest = torch.finfo(sim.dtype).min  # of the dtype being filled: float32's overflows float16
    sim = sim.masked_fill(~allowed, lowest)
    return torch.logsumexp(sim, dim=1).clamp(min=lowest), allowed.any(dim=1)


def correlation_nll(
    mass: ClassMass, query_label: Tensor, extra: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """(−log p_q[ŷ_q] (Q,), valid (Q,)): valid where ŷ_q >= 0 and class ŷ_q has a key for q.

    `extra` (from `masked_log_mass`) adds positives of other labels to the numerator: keys
    that are already in the class masses, so the denominator stays the sum over all keys.
    """
    label = query_label.long()
    valid = (label >= 0) & mass.has_key.gather(1, label.clamp(min=0)[:, None]).squeeze(1)
    own = mass.log_mass.gather(1, label.clamp(min=0)[:, None]).squeeze(1)
    if extra is not None:
        extra_mass, has_extra = extra
        own = torch.logaddexp(own.clamp(min=torch.finfo(own.dtype).min), extra_mass)
        valid = (label >= 0) & (valid | has_extra)
    nll = torch.logsumexp(mass.log_mass, dim=1) - own
    return nll, valid


@torch.no_grad()
def propagated_distribution(mass: ClassMass) -> Tensor:
    """p (Q, C), detached (it is a target); rows of queries without any key are zero."""
    log_mass = mass.log_mass.masked_fill(~mass.has_key, float("-inf"))
    any_key = mass.has_key.any(dim=1, keepdim=True)
    return torch.where(any_key, torch.softmax(log_mass.masked_fill(~any_key, 0.0), dim=1), 0.0)


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
    """(−mean_q log p_q[ŷ_q], p (Q, C) detached). Queries whose class has no key are skipped;
    with none left the loss is a zero that keeps the graph (so DDP sees every parameter)."""
    mass = class_log_mass(query, keys, key_label, num_classes=num_classes, tau=tau, exclude=exclude,
                          chunk_size=chunk_size)
    nll, valid = correlation_nll(mass, query_label)
    loss = nll[valid].mean() if bool(valid.any()) else query.sum() * 0.0
    return loss, propagated_distribution(mass)


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
    and "total" = Σ λ · term (0 when no term is active).
    """

    def __init__(self, cfg: HICLConfig, num_classes: int, chunk_size: int = 2048) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.chunk_size = chunk_size
        self.memory = MemoryBank(cfg.memory_size, cfg.embed_dim) if cfg.inter_scene else None

    def _sample_queries(
        self, labels: Tensor, scene: Tensor, generator: torch.Generator | None
    ) -> list[tuple[int, Tensor]]:
        """(scene, point indices of its queries) for every scene present in the batch."""
        out = []
        for b in torch.unique(scene).tolist():
            candidates = torch.nonzero((scene == b) & (labels >= 0)).squeeze(1)
            device = generator.device if generator is not None else candidates.device
            perm = torch.randperm(candidates.shape[0], generator=generator, device=device)
            out.append((b, candidates[perm[: self.cfg.queries_per_scene].to(candidates.device)]))
        return out

    @outside_autocast
    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        segment: Tensor,
        scene: Tensor,
        epoch: int,
        logits: Tensor | None = None,
        generator: torch.Generator | None = None,
        looks: tuple[Tensor, Tensor] | None = None,
        scene_ids: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """embeddings (N, D) L2-normalised; labels (N,) refined, -1 none; segment (N,) per-scene
        set ids, -1 none; scene (N,) batch index; logits (N, C) for the feedback term; looks
        = (CLIP features (N, D'), normals (N, 3)) for `similar_positives`; scene_ids (B,) the
        dataset's id of each batch scene, which the memory bank keeps (needed with inter_scene).
        Runs in float32 under autocast too: half-precision embeddings are widened."""
        embeddings = widened(embeddings)
        cfg, num_classes = self.cfg, self.num_classes
        feedback = cfg.feedback and logits is not None and epoch >= cfg.feedback_warmup_epochs
        need_intra, need_inter = cfg.intra_scene or feedback, cfg.inter_scene or feedback
        if self.memory is not None and scene_ids is None:
            raise ValueError("HICLLoss: the memory bank needs scene_ids (the dataset id of each batch scene)")

        protos, proto_labels, index = set_prototypes(embeddings, scene_segments(segment, scene), labels, num_classes)
        proto_scene = torch.full_like(proto_labels, -1).scatter(0, index[index >= 0], scene.long()[index >= 0])
        similar = None
        if cfg.similar_positives and cfg.intra_scene:
            if looks is None:
                raise ValueError("hicl.similar_positives needs per-point CLIP features and normals (looks)")
            similar = similar_sets(*looks, index, protos.shape[0], cfg.similar_visual, cfg.similar_normal)

        def mass(query: Tensor, own_scene: bool, b: int, exclude: Tensor | None, grad: bool) -> ClassMass:
            if own_scene:
                keys, key_label = protos, torch.where(proto_scene == b, proto_labels, -1)
            else:
                bank_keys, bank_labels = protos[:0], proto_labels[:0]
                if self.memory is not None:
                    bank_keys, bank_labels, _ = self.memory.get(exclude_scene=int(scene_ids[b]))
                keys = torch.cat([protos, bank_keys.to(protos)])
                key_label = torch.cat([torch.where(proto_scene != b, proto_labels, -1), bank_labels.to(proto_labels)])
            with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                return class_log_mass(query, keys, key_label, num_classes=num_classes, tau=cfg.tau,
                                      exclude=exclude, chunk_size=self.chunk_size)

        nll = {"intra": [], "inter": []}
        targets, query_idx = [], []
        for b, idx in self._sample_queries(labels, scene, generator):
            query, query_label = embeddings[idx], labels[idx]
            exclude = index[idx] if cfg.exclude_own_set else None
            masses = {}
            if need_intra:
                masses["intra"] = mass(query, True, b, exclude, cfg.intra_scene)
            if need_inter:
                masses["inter"] = mass(query, False, b, None, cfg.inter_scene)
            extra = None
            if similar is not None:  # keys of other labels whose sets look like the query's own
                own = index[idx]
                allowed = (similar[own.clamp(min=0)] & (own >= 0)[:, None] & (proto_scene == b)[None, :]
                           & (proto_labels >= 0)[None, :] & (proto_labels[None, :] != query_label.long()[:, None]))
                if exclude is not None:
                    rows = torch.nonzero(exclude >= 0).squeeze(1)
                    allowed[rows, exclude[rows]] = False
                extra = masked_log_mass(query, protos, allowed, cfg.tau)
            for name, enabled in (("intra", cfg.intra_scene), ("inter", cfg.inter_scene)):
                if enabled:
                    nll[name].append(correlation_nll(masses[name], query_label, extra if name == "intra" else None))
            if feedback:
                union = combine(masses["intra"], masses["inter"])
                targets.append(propagated_distribution(union))
                query_idx.append(idx)

        terms = {}
        if cfg.intra_set:  # intra-set consistency: each point's embedding toward its own set's prototype
            inside = index >= 0
            cos = (embeddings[inside] * protos[index[inside]]).sum(dim=1)
            terms["set"] = (1.0 - cos).mean() if cos.numel() else embeddings.sum() * 0.0
        for name, enabled in (("intra", cfg.intra_scene), ("inter", cfg.inter_scene)):
            if enabled:
                values = torch.cat([v[m] for v, m in nll[name]]) if nll[name] else embeddings.new_zeros(0)
                terms[name] = values.mean() if values.numel() else embeddings.sum() * 0.0
        if feedback:
            p, idx = torch.cat(targets), torch.cat(query_idx)
            rows = p.sum(dim=1) > 0
            log_q = torch.log_softmax(logits[idx[rows]].float(), dim=1)
            kl = F.kl_div(log_q, p[rows].to(log_q.dtype), reduction="none").sum(dim=1)
            terms["feedback"] = kl.mean() if kl.numel() else logits.sum() * 0.0

        weights = {"set": cfg.lambda_set, "intra": cfg.lambda_intra, "inter": cfg.lambda_inter,
                   "feedback": cfg.lambda_feedback}
        terms["total"] = sum((weights[k] * v for k, v in terms.items()), embeddings.new_zeros(()))

        if self.memory is not None and self.training:
            labelled = proto_labels >= 0
            ids = scene_ids.to(proto_scene.device)[proto_scene[labelled]]
            self.memory.push(protos[labelled], proto_labels[labelled], ids)
        return terms
