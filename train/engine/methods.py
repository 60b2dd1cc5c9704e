"""Training methods: which heads the network has, which targets a sample carries, which loss.

A method builds only the heads its settings train, so every parameter gets a gradient at every
step and DDP runs with find_unused_parameters=False (its default: no extra graph traversal per
step); a loss term whose inputs can be empty returns a zero that keeps the graph.

`shared.methods.METHODS` maps the pipeline's `train.method` to the class here (its
`implementation`); that dict is the only indirection.
- gt:         CE on ground truth (supervised sanity check, an upper bound, not label-free)
- pseudo-ce:  CE on the raw pseudo-labels
- clip2scene: CLIP2Scene's label-free losses on the stored pixel-point pairs, as its code
              computes them (dot-product text logits, per-pair CE and distillation, switchable
              self-training, the spatial-temporal term on LiDAR scenes)
- hicl:       CE on refined labels + intra-/inter-scene correlation + feedback (method.md)
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.config import Pipeline, TrainConfig
from shared.errors import pick
from shared.methods import METHODS
from train.amp import Precision, resolve_precision
from train.engine.batch import Batch
from train.engine.dataset import SceneDataset, text_embedding
from train.losses import HICLLoss, clip2scene_loss, pseudo_ce_loss
from train.models import DotTextHead, MinkUNet, ProjectionHead, build_classifier
from train.sparse import Backend, select_backend


class SegNet(nn.Module):
    """MinkUNet backbone plus named heads; forward returns {head name: per-voxel tensor}."""

    def __init__(self, backbone: nn.Module, heads: dict[str, nn.Module]):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)

    def forward(self, x: Any) -> dict[str, Tensor]:
        feats = self.backbone.forward_features(x)
        return {name: head(feats) for name, head in self.heads.items()}


class Method:
    """Base: a network with a classifier head, trained with CE on one per-voxel target."""

    fields: ClassVar[tuple[str, ...]] = ()  # sample fields it trains on (train/engine/dataset.py FIELDS)
    # the per-voxel CE target (a sample array: train/engine/dataset.py FIELDS); its stored labels'
    # class frequencies set train.class_weights and the class-balanced crop (`target_for`)
    target: ClassVar[str] = "label"
    loss_names: ClassVar[tuple[str, ...]] = ()  # logged loss components
    needs_text: ClassVar[bool] = False  # text embeddings even with a linear classifier

    def __init__(self, pipeline: Pipeline, dataset: SceneDataset, device: torch.device):
        self.cfg = pipeline.train
        self.target = self.target_for(self.cfg)
        self.num_classes = dataset.num_classes
        self.backend: Backend = select_backend(self.cfg.backend, device)
        self.precision: Precision = resolve_precision(self.cfg.amp, device, self.backend)
        self.text = (
            torch.from_numpy(text_embedding(dataset.store, dataset.layout))
            if self.cfg.text_head or self.needs_text else None
        )
        self.backbone = MinkUNet(dataset.in_channels, width=self.cfg.width, backend=self.backend)
        self.model = SegNet(self.backbone, self.heads(self.backbone.out_channels))
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(self.cfg.seed)
        self.dataset, self.device = dataset, device

    @cached_property
    def class_weight(self) -> Tensor | None:
        """The CE's class weights (train.class_weights), counted on first use: only training
        needs them, and an evaluation dataset does not carry the training targets."""
        if self.cfg.class_weights == "none":
            return None
        return torch.from_numpy(self.dataset.split_class_weights(self.target)).float().to(self.device)

    @classmethod
    def target_for(cls, cfg: TrainConfig) -> str:
        """The per-voxel training target with `cfg` (some settings choose another)."""
        return cls.target

    @classmethod
    def fields_for(cls, cfg: TrainConfig) -> tuple[str, ...]:
        """The sample fields training with `cfg` needs (some settings need more than `fields`)."""
        return cls.fields

    def run_info(self) -> dict[str, str]:
        """How the network runs, for the run log and the eval report."""
        device = self.device
        where = (f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
                 else f"{device} ({torch.get_num_threads()} threads)")
        return {"device": where, "sparse backend": self.backend.describe(device), "precision": self.precision.name}

    def sparse_input(self, batch: Batch) -> Any:
        """The batch as the selected backend's own tensor: training, evaluation and attention maps
        all build the network input here."""
        return batch.sparse(self.backend.SparseTensor)

    def heads(self, channels: int) -> dict[str, nn.Module]:
        return {"logits": build_classifier(self.cfg.head, channels, self.num_classes, self.text)}

    def parameters(self) -> list[nn.Parameter]:
        """Everything the optimiser updates (the network; losses here have no parameters)."""
        return list(self.model.parameters())

    def state_dict(self) -> dict[str, Any]:
        """State outside the network that a resumed run needs (memory bank, sampling RNG)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def loss(self, out: dict[str, Tensor], batch: Batch, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        """(the loss to minimise, its logged components (`loss_names`) as detached tensors: read
        on the host once per step, by the loop)."""
        loss = pseudo_ce_loss(out["logits"], batch.targets[self.target], self.class_weight)
        return loss, {}


class GroundTruth(Method):
    fields = ("gt",)
    target = "gt"


class PseudoCE(Method):
    fields = ("pseudo",)


class CLIP2Scene(Method):
    """CLIP2Scene's label-free training (runnanchen/CLIP2Scene @ 875ce71: `scannet_loss`,
    `loss_nuscenes`, fusionNet), on the pixel-point pairs the labels stage stores.

    Per scene and step the pairs of up to `train.clip2scene.max_views` random views (its
    `maxImages = 8`), re-pointed at voxels (a pair whose voxel the crop removed is dropped).
    Two heads on the decoder features, as its MinkUNet's `final` and `local_feature`: "logits"
    = a linear map to the CLIP dimension dotted with the fixed text embeddings (`DotTextHead`,
    whatever train.head says), and "clip", a second linear map. Losses (train/losses/baselines.py):
    CE per pair to the pixel's label with the epoch-`switch_epoch` / `switch_prob` switch to the
    network's own argmax; 1 − cos per pair to the pixel's CLIP feature (`distill_weight`, its
    ScanNet loss); with `spatial_temporal` (its nuScenes loss), the consistency term over
    super-nodes. CLIP2Scene's nodes are the voxels of several LiDAR sweeps merged into one grid;
    our LiDAR stores hold keyframes only, so a node is a voxel of the keyframe, and its members
    (the voxel's pairs) share one voxel feature: the attention is uniform and the term reduces to
    mean 1 − sigmoid(|f|²) over the members, a push on the second head's norm. It is kept as the
    code computes it; sweeps in the store would give it the temporal half it is named for.
    CLIP2Scene's nuScenes loss also computes a CE of unpaired points to their own argmax after
    epoch 10, then overwrites it (`loss_semantic = ...` after `loss_semantic += ...`), so it never
    trains; it is left out here.
    Its per-voxel target (`target`: the class weights' counts, the class-balanced crop's
    classes) is the raw pseudo-labels, each point's vote of the very pairs it trains on.
    """

    fields = ("pairs", "pair_feat")
    needs_text = True
    loss_names = ("ce", "distill", "spatial_temporal")  # those the settings switch off stay empty

    @classmethod
    def fields_for(cls, cfg: TrainConfig) -> tuple[str, ...]:
        return ("pairs",) + (("pair_feat",) if cfg.clip2scene.distill_weight > 0 else ())

    def heads(self, channels: int) -> dict[str, nn.Module]:
        """The "clip" head only where a term trains it (distillation, spatial-temporal)."""
        c = self.cfg.clip2scene
        clip = {"clip": nn.Linear(channels, self.text.shape[1])} if c.distill_weight > 0 or c.spatial_temporal else {}
        return {"logits": DotTextHead(channels, self.text), **clip}

    def loss(self, out: dict[str, Tensor], batch: Batch, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        c, pairs = self.cfg.clip2scene, batch.pairs
        terms = clip2scene_loss(
            out["logits"], out.get("clip"), pairs["voxel"], pairs["label"], epoch,
            patch_feat=pairs.get("patch_feat"), pair_patch=pairs.get("patch"),
            text=self.model.heads["logits"].text_embeddings,
            pair_group=pairs["voxel"] if c.spatial_temporal else None,  # keyframe voxels (see above)
            switch_epoch=c.switch_epoch, switch_prob=c.switch_prob, distill_weight=c.distill_weight,
            generator=self.generator, weight=self.class_weight,
        )
        return terms["total"], {k: terms[k].detach() for k in self.loss_names if k in terms}


class HICL(Method):
    """CE on refined (or raw) labels plus the correlation terms of `HICLLoss`."""

    fields = ("pseudo", "segment")
    loss_names = ("seg", "set", "intra", "inter", "feedback")

    def __init__(self, pipeline: Pipeline, dataset: SceneDataset, device: torch.device):
        super().__init__(pipeline, dataset, device)
        self.criterion = HICLLoss(self.cfg.hicl, self.num_classes).to(device)

    @classmethod
    def target_for(cls, cfg: TrainConfig) -> str:
        return "refined" if cfg.hicl.refine else "label"

    @classmethod
    def fields_for(cls, cfg: TrainConfig) -> tuple[str, ...]:
        h = cfg.hicl
        return cls.fields + (("refined",) if h.refine else ()) + (("feat", "normal") if h.similar_positives else ())

    @property
    def correlation(self) -> bool:
        """Whether any term trains the embedding (without, "refinement only": CE alone)."""
        h = self.cfg.hicl
        return h.intra_set or h.intra_scene or h.inter_scene or h.feedback

    def heads(self, channels: int) -> dict[str, nn.Module]:
        embed = {"embed": ProjectionHead(channels, dim=self.cfg.hicl.embed_dim)} if self.correlation else {}
        return {**super().heads(channels), **embed}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "criterion": self.criterion.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.criterion.load_state_dict(state["criterion"])

    def loss(self, out: dict[str, Tensor], batch: Batch, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        labels = batch.targets[self.target]
        seg = pseudo_ce_loss(out["logits"], labels, self.class_weight)
        parts = {"seg": seg.detach()}
        if not self.correlation:
            return seg, parts
        self.criterion.train(self.model.training)
        terms = self.criterion(
            F.normalize(out["embed"].float(), dim=1), labels, batch.targets["segment"], batch.scene_index,
            batch.scene_ids, epoch, num_sets=batch.num_segments, logits=out["logits"], generator=self.generator,
            looks=(batch.targets["feat"], batch.targets["normal"]) if self.cfg.hicl.similar_positives else None,
        )
        parts.update({k: v.detach() for k, v in terms.items() if k != "total"})
        return seg + terms["total"], parts


def method_class(cfg: TrainConfig) -> type[Method]:
    """The class of `train.method`, as its entry in shared.methods.METHODS names it."""
    return pick(METHODS, cfg.method, "train.method").implementation()


def build_method(pipeline: Pipeline, dataset: SceneDataset, device: torch.device) -> Method:
    return method_class(pipeline.train)(pipeline, dataset, device)
