"""The 2D teachers `labels.labeler` can choose: `LABELERS`, name -> class.

A class carries everything about its labeler that both programs agree on: its parameter
section (`Params`, the table [labels.<section>]), which of those keys enter the cache key of
its pseudo-labels and text embeddings, the side files it reads (per-frame label maps, an
embeddings file), whether it gives class text embeddings, its checks, and the calls that
preprocessing makes (`preflight`, `make`, `text_embeddings`), which import their
implementation from preprocess/ when called, so the trainer, which imports this module to
name the stored outputs, never loads preprocess/. Config validation, the schema, the stages,
the checks and the reports ask this dict; nothing else spells a labeler's name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Callable, ClassVar

from shared.ranges import Count, Index, Metres, NonNegative, Range, Seed, one_folder

if TYPE_CHECKING:
    import numpy as np

    from shared.config import LabelsConfig, Pipeline

Fail = Callable[..., None]  # (key below [labels], what is wrong, *other keys it is with) -> raises ConfigError


# --------------------------------------------------------------------------------------------
# Parameter sections: [labels.maskclip], [labels.simulated], [labels.precomputed]
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaskCLIPConfig:
    model: str = "ViT-B-16"
    pretrained: str = "openai"  # open_clip tag or a local checkpoint path
    batch_size: Count = 8  # images per forward pass
    input_width: Index = 448  # images are resized to this width before the ViT (0 = full size)
    device: str = "auto"
    class_names: list[str] = field(default_factory=list)  # empty = the dataset's class names
    templates: list[str] = field(
        default_factory=lambda: [
            "a photo of a {}.", "a photo of the {}.", "there is a {} in the scene.",
            "a photo of a {} in the scene.", "itap of a {}.",
        ]
    )


@dataclass(frozen=True)
class SimulatedCLIPConfig:
    """The simulated-CLIP labeler's model of MaskCLIP (preprocess/labels/simulated.py says what
    each parameter does and why the defaults are what they are)."""

    seed: Seed = 0
    patch: Count = 16  # logits decided per patch of this many label-map pixels, like a ViT-B/16
    margin: NonNegative = 4.0  # logit lead of the class an object looks like
    confusion: Annotated[float, Range(0, 0.5)] = 0.3  # probability that an object reads as a confusable class
    instance_noise: NonNegative = 0.5  # per object, Gaussian logit offsets toward unrelated classes
    surface_noise: NonNegative = 0.25  # how much parts of a surface vary in their confusion
    region_m: Metres = 1.0  # the distance over which that variation is correlated
    view_noise: NonNegative = 0.3  # per view and object, Gaussian shift of its pull (how a viewpoint changes it)
    patch_noise: NonNegative = 0.5  # per view and patch, Gaussian logit noise (what fusing views removes)
    feature_dim: Count = 512
    feature_noise: NonNegative = 1.0  # norm of the noise added to a patch feature's mixture of text embeddings
    batch_size: Count = 8  # views simulated at a time (each view's draws are its own: results do not depend on it)


@dataclass(frozen=True)
class PrecomputedConfig:
    """Per-frame label maps another 2D model made (README: any 2D model as the teacher)."""

    folder: str = "labels2d"  # ScanNet layout: <scene>/<folder>/<frame>.png; nuScenes: <root>/<folder>/<CAM>/<stem>.png
    ignore: list[Annotated[int, Range(0, 65535)]] = field(default_factory=lambda: [255, 65535])  # map values meaning "no label"
    scores: bool = False  # read a confidence map <frame>.score.png per frame (else every label weighs 1)
    text_embeddings: str = ""  # (C, D) .npy of class embeddings for train.head = "text" ("" = none)
    batch_size: Count = 8  # views read at a time (results do not depend on it)


# --------------------------------------------------------------------------------------------
# Labelers
# --------------------------------------------------------------------------------------------
class Labeler:
    """What a 2D teacher is; subclasses fill in the class attributes and the preprocess calls."""

    Params: ClassVar[type]
    section: ClassVar[str]  # its table under [labels] (a field of LabelsConfig)
    not_in_key: ClassVar[tuple[str, ...]] = ()  # its keys that do not change what it makes
    needs_mesh: ClassVar[bool] = False  # renders the scene's labelled mesh (so only mesh datasets)
    simulated: ClassVar[bool] = False  # labels made from ground truth, not by a real 2D model ...
    note: ClassVar[str] = ""  # ... which reports say in these words
    advice: ClassVar[str]  # how to choose it, for error messages that list the ways to label a dataset
    text_fix: ClassVar[str] = ""  # where `has_text` can be false: how to give it text embeddings

    @classmethod
    def params(cls, labels: LabelsConfig) -> Any:
        return getattr(labels, cls.section)

    @classmethod
    def key_params(cls, labels: LabelsConfig) -> dict[str, Any]:
        """Its parameters that enter the cache keys of its pseudo-labels and text embeddings."""
        return {k: v for k, v in dataclasses.asdict(cls.params(labels)).items() if k not in cls.not_in_key}

    @classmethod
    def batch_size(cls, labels: LabelsConfig) -> int:
        return cls.params(labels).batch_size

    @classmethod
    def frame_folder(cls, labels: LabelsConfig) -> str | None:
        """The per-frame folder of label maps it reads (fingerprinted into its key), or None."""
        return None

    @classmethod
    def has_text(cls, labels: LabelsConfig) -> bool:
        """Whether it gives class text embeddings (what train.head = "text" needs)."""
        return True

    @classmethod
    def embeddings_file(cls, labels: LabelsConfig) -> str | None:
        """The file its text embeddings are read from (fingerprinted into their key), or None."""
        return None

    @classmethod
    def check(cls, labels: LabelsConfig, fail: Fail) -> None:
        """Problems across its keys, found when the pipeline file loads."""

    @staticmethod
    def preflight(pipeline: Pipeline) -> None:
        """A UserError, before any scene is processed, when it cannot work on this machine
        (weights neither cached nor downloadable, no label maps at all)."""

    @staticmethod
    def make(labels: LabelsConfig, class_names: tuple[str, ...]) -> Any:
        """The labeler itself (preprocess/labels/labelers.py): `label_views(scene, views)`."""
        raise NotImplementedError

    @staticmethod
    def text_embeddings(labels: LabelsConfig, class_names: tuple[str, ...]) -> np.ndarray:
        """(C, D) float32 class embeddings for the trainer's text head."""
        raise NotImplementedError

    @staticmethod
    def text_space(labels: LabelsConfig, class_names: tuple[str, ...]) -> dict[str, Any]:
        """How its class embeddings were made, as plain values a checkpoint keeps, so that inference
        can embed other class names in the same space (shared/text_space.py `encode_names`)."""
        raise NotImplementedError

    @staticmethod
    def algorithms() -> tuple[Callable, ...]:
        """The functions whose keyword defaults `Params` repeats."""
        raise NotImplementedError


class SimulatedCLIP(Labeler):
    """MaskCLIP-like labels simulated from the scene's labelled mesh (preprocess/labels/simulated.py)."""

    Params = SimulatedCLIPConfig
    section = "simulated"
    not_in_key = ("batch_size",)
    needs_mesh = True
    simulated = True
    note = "a model of MaskCLIP run on corrupted ground truth, not real CLIP"
    advice = 'set labels.labeler = "simulated-clip" to run the pipeline on simulated labels'

    @staticmethod
    def make(labels: LabelsConfig, class_names: tuple[str, ...]) -> Any:
        from preprocess.labels.labelers import SimulatedCLIPLabeler

        return SimulatedCLIPLabeler(labels, class_names)

    @staticmethod
    def text_embeddings(labels: LabelsConfig, class_names: tuple[str, ...]) -> np.ndarray:
        from shared.text_space import simulated_text_embeddings

        return simulated_text_embeddings(len(class_names), labels.simulated.feature_dim, labels.simulated.seed)

    @staticmethod
    def text_space(labels: LabelsConfig, class_names: tuple[str, ...]) -> dict[str, Any]:
        sim = labels.simulated
        return {"kind": "seeded", "names": list(class_names), "dim": sim.feature_dim, "seed": sim.seed}

    @staticmethod
    def algorithms() -> tuple[Callable, ...]:
        from preprocess.labels.simulated import simulate_view, view_logits

        return simulate_view, view_logits


class MaskCLIP(Labeler):
    """MaskCLIP (open_clip weights) on the views' colour images (preprocess/labels/maskclip.py)."""

    Params = MaskCLIPConfig
    section = "maskclip"
    advice = 'set labels.labeler = "maskclip" and labels.maskclip.pretrained to CLIP weights (an open_clip tag or a checkpoint file)'

    @classmethod
    def check(cls, labels: LabelsConfig, fail: Fail) -> None:
        if not labels.maskclip.templates or any("{}" not in t for t in labels.maskclip.templates):
            fail("maskclip.templates", f"= {labels.maskclip.templates!r} must be a non-empty list of prompts, "
                                       "each with {} where the class name goes", "labeler")

    @staticmethod
    def preflight(pipeline: Pipeline) -> None:
        from preprocess.labels.checks import check_clip_weights

        check_clip_weights(pipeline)

    @staticmethod
    def make(labels: LabelsConfig, class_names: tuple[str, ...]) -> Any:
        from preprocess.labels.labelers import MaskCLIPLabeler

        return MaskCLIPLabeler(labels, class_names)

    @staticmethod
    def text_embeddings(labels: LabelsConfig, class_names: tuple[str, ...]) -> np.ndarray:
        from preprocess.labels.labelers import MaskCLIPLabeler

        return MaskCLIPLabeler(labels, class_names).maskclip.text.cpu().numpy()

    @staticmethod
    def text_space(labels: LabelsConfig, class_names: tuple[str, ...]) -> dict[str, Any]:
        m = labels.maskclip
        return {"kind": "open_clip", "model": m.model, "pretrained": m.pretrained, "templates": list(m.templates)}

    @staticmethod
    def algorithms() -> tuple[Callable, ...]:
        from shared.text_space import load_clip

        return (load_clip,)


class Precomputed(Labeler):
    """Label maps another 2D model wrote per frame (preprocess/labels/precomputed.py)."""

    Params = PrecomputedConfig
    section = "precomputed"
    not_in_key = ("batch_size",)
    text_fix = "set labels.precomputed.text_embeddings to a (classes, D) .npy file of your 2D model's class embeddings"
    advice = ('write per-frame label maps of another 2D model and set labels.labeler = "precomputed" '
              "(README: any 2D model as the teacher)")

    @classmethod
    def frame_folder(cls, labels: LabelsConfig) -> str | None:
        return labels.precomputed.folder

    @classmethod
    def has_text(cls, labels: LabelsConfig) -> bool:
        return bool(labels.precomputed.text_embeddings)

    @classmethod
    def embeddings_file(cls, labels: LabelsConfig) -> str | None:
        return labels.precomputed.text_embeddings or None

    @classmethod
    def check(cls, labels: LabelsConfig, fail: Fail) -> None:
        if not one_folder(labels.precomputed.folder):
            fail("precomputed.folder", f"= {labels.precomputed.folder!r} must be one folder name "
                                       "(README: any 2D model as the teacher)", "labeler")

    @staticmethod
    def preflight(pipeline: Pipeline) -> None:
        from preprocess.labels.checks import check_precomputed

        check_precomputed(pipeline)

    @staticmethod
    def make(labels: LabelsConfig, class_names: tuple[str, ...]) -> Any:
        from preprocess.labels.labelers import PrecomputedLabeler

        return PrecomputedLabeler(labels, class_names)

    @staticmethod
    def text_embeddings(labels: LabelsConfig, class_names: tuple[str, ...]) -> np.ndarray:
        from preprocess.labels.precomputed import read_text_embeddings

        return read_text_embeddings(labels.precomputed.text_embeddings, len(class_names))

    @staticmethod
    def text_space(labels: LabelsConfig, class_names: tuple[str, ...]) -> dict[str, Any]:
        return {"kind": "stored", "file": labels.precomputed.text_embeddings, "names": list(class_names)}

    @staticmethod
    def algorithms() -> tuple[Callable, ...]:
        return ()


DEFAULT_LABELER = "simulated-clip"  # labels.labeler when a pipeline file names none
LABELERS: dict[str, type[Labeler]] = {
    "maskclip": MaskCLIP,
    "precomputed": Precomputed,
    "simulated-clip": SimulatedCLIP,
}
