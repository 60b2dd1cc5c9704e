"""Training methods: which heads the network has, which targets a sample carries, which loss.

`METHODS` maps the pipeline's `train.method` to a class; that dict is the only indirection.
- gt:         CE on ground truth (supervised sanity check, an upper bound, not label-free)
- pseudo-ce:  CE on the raw pseudo-labels
- clip2scene: text head, CE on pseudo-labels + cosine distillation to per-point CLIP features,
              switchable self-training after `switch_epoch` (peers.md §2.3)
- hicl:       CE on refined labels + intra-/inter-scene correlation + feedback (method.md)
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.config import Pipeline, TrainConfig
from shared.errors import UserError
from train.engine.amp import Precision, resolve_precision
from train.engine.data import Batch, SceneDataset, text_embedding
from train.losses import HICLLoss, clip2scene_loss, pseudo_ce_loss
from train.models import LinearHead, MinkUNet, ProjectionHead, TextHead
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


def class_weights(counts: np.ndarray) -> torch.Tensor:
    """1/sqrt(frequency) per class, mean 1 over the classes with any count, 0 for the others
    (a class never seen as a target gets no weight; it has no loss term to weigh anyway)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise UserError("class weights: the training targets hold no labelled point; check the pseudo-labels with `python -m preprocess label-quality`")
    weight = np.zeros_like(counts)
    weight[present] = 1.0 / np.sqrt(counts[present] / counts.sum())
    weight[present] /= weight[present].mean()
    return torch.from_numpy(weight).float()


class Method:
    """Base: a network with a classifier head, trained with CE on one per-voxel target."""

    fields: ClassVar[tuple[str, ...]] = ()  # sample fields it trains on (train/engine/data.py FIELDS)
    target: ClassVar[str] = "label"  # the per-voxel CE target
    loss_names: ClassVar[tuple[str, ...]] = ()  # logged loss components
    needs_text: ClassVar[bool] = False  # text embeddings even with a linear classifier
    count_field: ClassVar[str] = "label"  # stored labels whose frequencies set the class weights

    def __init__(self, pipeline: Pipeline, dataset: SceneDataset, device: torch.device):
        self.cfg = pipeline.train
        self.num_classes = dataset.num_classes
        self.backend: Backend = select_backend(self.cfg.backend, device)
        self.precision: Precision = resolve_precision(self.cfg.amp, device, self.backend)
        self.text = (
            torch.from_numpy(text_embedding(dataset.store, dataset.layout))
            if self.cfg.head == "text" or self.needs_text else None
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
        return class_weights(self.dataset.label_counts(self.count_field)).to(self.device)

    @classmethod
    def fields_for(cls, cfg: TrainConfig) -> tuple[str, ...]:
        """The sample fields training with `cfg` needs (some settings need more than `fields`)."""
        return cls.fields

    def run_info(self) -> dict[str, str]:
        """How the network runs, for the run log and the eval report."""
        device = self.device
        where = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
        return {"device": where, "sparse backend": self.backend.describe(device), "precision": self.precision.name}

    def sparse_input(self, batch: Batch) -> Any:
        """The batch as the selected backend's own tensor: training, evaluation and attention maps
        all build the network input here."""
        return batch.sparse(self.backend.SparseTensor)

    def heads(self, channels: int) -> dict[str, nn.Module]:
        classifier = (
            TextHead(channels, self.text) if self.cfg.head == "text" else LinearHead(channels, self.num_classes)
        )
        return {"logits": classifier}

    def parameters(self) -> list[nn.Parameter]:
        """Everything the optimiser updates (the network; losses here have no parameters)."""
        return list(self.model.parameters())

    def state_dict(self) -> dict[str, Any]:
        """State outside the network that a resumed run needs (memory bank, sampling RNG)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def loss(self, out: dict[str, Tensor], batch: Batch, epoch: int) -> tuple[Tensor, dict[str, float]]:
        loss = pseudo_ce_loss(out["logits"], batch.targets[self.target], self.class_weight)
        return loss, {}


class GroundTruth(Method):
    fields = ("gt",)
    target = "gt"
    count_field = "gt"


class PseudoCE(Method):
    fields = ("pseudo",)


class CLIP2Scene(Method):
    """Text-head logits on projected point features; CE + (1 − cos) to the CLIP feature."""

    fields = ("pseudo", "feat")
    needs_text = True
    loss_names = ("ce", "distill")

    def heads(self, channels: int) -> dict[str, nn.Module]:
        return {"logits": TextHead(channels, self.text), "clip": ProjectionHead(channels, dim=self.text.shape[1])}

    def loss(self, out: dict[str, Tensor], batch: Batch, epoch: int) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg.clip2scene
        clip = batch.targets["feat"]
        terms = clip2scene_loss(
            out["logits"], out["clip"], clip, batch.targets["label"], has_feature=clip.abs().sum(dim=1) > 0,
            epoch=epoch, switch_epoch=c.switch_epoch, switch_prob=c.switch_prob, distill_weight=c.distill_weight,
            generator=self.generator, weight=self.class_weight,
        )
        return terms["total"], {k: float(terms[k].detach()) for k in self.loss_names}


class HICL(Method):
    """CE on refined (or raw) labels plus the correlation terms of `HICLLoss`."""

    fields = ("pseudo", "segment")
    loss_names = ("seg", "set", "intra", "inter", "feedback")

    def __init__(self, pipeline: Pipeline, dataset: SceneDataset, device: torch.device):
        super().__init__(pipeline, dataset, device)
        self.criterion = HICLLoss(self.cfg.hicl, self.num_classes).to(device)
        h = self.cfg.hicl
        self.target = self.count_field = "refined" if h.refine else "label"
        self.correlation = h.intra_set or h.intra_scene or h.inter_scene or h.feedback
        self.scene_id = {name: i for i, name in enumerate(dataset.scenes)}  # what the memory bank keeps

    @classmethod
    def fields_for(cls, cfg: TrainConfig) -> tuple[str, ...]:
        h = cfg.hicl
        return cls.fields + (("refined",) if h.refine else ()) + (("feat", "normal") if h.similar_positives else ())

    def heads(self, channels: int) -> dict[str, nn.Module]:
        return {**super().heads(channels), "embed": ProjectionHead(channels, dim=self.cfg.hicl.embed_dim)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "criterion": self.criterion.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.criterion.load_state_dict(state["criterion"])

    def loss(self, out: dict[str, Tensor], batch: Batch, epoch: int) -> tuple[Tensor, dict[str, float]]:
        labels = batch.targets[self.target]
        seg = pseudo_ce_loss(out["logits"], labels, self.class_weight)
        parts = {"seg": float(seg.detach())}
        if not self.correlation:
            return seg, parts
        self.criterion.train(self.model.training)
        terms = self.criterion(
            F.normalize(out["embed"].float(), dim=1), labels, batch.targets["segment"], batch.scene_index, epoch,
            logits=out["logits"], generator=self.generator,
            looks=(batch.targets["feat"], batch.targets["normal"]) if self.cfg.hicl.similar_positives else None,
            scene_ids=torch.tensor([self.scene_id[name] for name in batch.scenes]),
        )
        parts.update({k: float(v.detach()) for k, v in terms.items() if k != "total"})
        return seg + terms["total"], parts


METHODS: dict[str, type[Method]] = {"gt": GroundTruth, "pseudo-ce": PseudoCE, "clip2scene": CLIP2Scene, "hicl": HICL}


def build_method(pipeline: Pipeline, dataset: SceneDataset, device: torch.device) -> Method:
    return METHODS[pipeline.train.method](pipeline, dataset, device)
