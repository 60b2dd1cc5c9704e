"""The training methods `train.method` can choose: `METHODS`, name -> class.

A class carries what both programs must know about its method: its parameter section (the
table [train.<section>], each key with its range), what it trains on (ground truth, or the
pseudo-labels of a 2D teacher; class text embeddings), the checks that tie it to what
preprocessing stores (CLIP2Scene's pixel-point pairs), and `implementation`, its class in
train/engine/methods.py, imported when called: only the trainer calls it, so preprocessing
loads the registry without torch. Config validation and the trainer ask this dict; nothing
else spells a method's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar

from shared.ranges import Cosine, Count, Index, NonNegative, Positive, Probability

if TYPE_CHECKING:
    from shared.config import Pipeline

Fail = Callable[..., None]  # (dotted key, what is wrong, *other keys it is with) -> raises ConfigError


# --------------------------------------------------------------------------------------------
# Parameter sections: [train.hicl], [train.clip2scene]
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HICLConfig:
    refine: bool = True  # CE targets are the refine stage's labels over train.partition (False: the raw ones)
    intra_set: bool = True  # intra-set consistency loss: points pulled toward their set prototype
    intra_scene: bool = True
    inter_scene: bool = True
    feedback: bool = True
    tau: Positive = 0.1
    exclude_own_set: bool = False  # intra-scene keys leave out the query's own set prototype
    # method.md §3 ablation switch: an intra-scene key whose set looks like the query's set
    # (cosine of the sets' mean CLIP features > similar_visual AND of their mean normals >
    # similar_normal) counts as a positive even when its label differs (needs stored features)
    similar_positives: bool = False
    similar_visual: Cosine = 0.9
    similar_normal: Cosine = 0.9
    embed_dim: Count = 128
    queries_per_scene: Count = 4096
    memory_size: Count = 8192
    lambda_set: NonNegative = 1.0
    lambda_intra: NonNegative = 1.0
    lambda_inter: NonNegative = 1.0
    lambda_feedback: NonNegative = 1.0
    feedback_warmup_epochs: Index = 10


@dataclass(frozen=True)
class CLIP2SceneConfig:
    """CLIP2Scene's label-free training on the stored pixel-point pairs (train/engine/methods.py)."""

    distill_weight: NonNegative = 1.0  # weight of 1 - cos(point feature, pixel's CLIP feature); needs labels.store_features
    switch_epoch: Index = 10  # from this epoch (counted from 0) the targets may switch to the network's own argmax
    switch_prob: Probability = 0.5  # ... with this probability per step
    max_views: Index = 8  # views whose pairs a scene contributes per step, drawn at random (0 = all)
    # the spatial-temporal consistency term of CLIP2Scene's nuScenes loss (LiDAR scenes)
    spatial_temporal: bool = False


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------
class Method:
    """What a training method is; subclasses fill in the class attributes and `implementation`."""

    Params: ClassVar[type | None] = None  # its parameter section, if any ...
    section: ClassVar[str | None] = None  # ... the table [train.<section>] (a field of TrainConfig)
    pseudo_labels: ClassVar[bool] = True  # trains on a 2D teacher's pseudo-labels (False: on ground truth)
    needs_text: ClassVar[bool] = False  # needs class text embeddings whatever train.head says

    @classmethod
    def check(cls, pipeline: Pipeline, fail: Fail) -> None:
        """Problems with the rest of the pipeline, found when the file loads."""

    @staticmethod
    def implementation() -> type:
        """Its class in train/engine/methods.py."""
        raise NotImplementedError

    @staticmethod
    def algorithms() -> tuple[Callable, ...]:
        """The functions whose keyword defaults its section repeats."""
        return ()


class GroundTruth(Method):
    """CE on ground truth: the supervised check, an upper bound, not label-free."""

    pseudo_labels = False

    @staticmethod
    def implementation() -> type:
        from train.engine.methods import GroundTruth

        return GroundTruth


class PseudoCE(Method):
    """CE on the raw pseudo-labels."""

    @staticmethod
    def implementation() -> type:
        from train.engine.methods import PseudoCE

        return PseudoCE


class CLIP2Scene(Method):
    """CLIP2Scene's label-free losses on the stored pixel-point pairs."""

    Params = CLIP2SceneConfig
    section = "clip2scene"
    needs_text = True

    @classmethod
    def check(cls, pipeline: Pipeline, fail: Fail) -> None:
        method, c2s = pipeline.train.method, pipeline.train.clip2scene
        if not pipeline.labels.store_pairs:
            fail("train.method", f"= \"{method}\" trains on the pixel-point pairs, which the store keeps only with "
                                 "labels.store_pairs = true; set it (and rerun preprocess)", "labels.store_pairs")
        if c2s.distill_weight > 0 and not pipeline.labels.store_features:
            fail("train.clip2scene.distill_weight",
                 f"= {c2s.distill_weight} distils the pixels' CLIP features, which the store keeps only with "
                 "labels.store_features = true; set it (and rerun preprocess) or set the weight to 0",
                 "labels.store_features", "train.method")

    @staticmethod
    def implementation() -> type:
        from train.engine.methods import CLIP2Scene

        return CLIP2Scene

    @staticmethod
    def algorithms() -> tuple[Callable, ...]:
        from train.losses.baselines import clip2scene_loss

        return (clip2scene_loss,)


class HICL(Method):
    """CE on refined labels plus intra-/inter-scene correlation and feedback (method.md)."""

    Params = HICLConfig
    section = "hicl"

    @staticmethod
    def implementation() -> type:
        from train.engine.methods import HICL

        return HICL

    @staticmethod
    def algorithms() -> tuple[Callable, ...]:
        from train.losses.correlation import correlation_loss

        return (correlation_loss,)


DEFAULT_METHOD = "hicl"  # train.method when a pipeline file names none
METHODS: dict[str, type[Method]] = {
    "gt": GroundTruth,
    "pseudo-ce": PseudoCE,
    "clip2scene": CLIP2Scene,
    "hicl": HICL,
}
