"""MaskCLIP on a tiny random-weight open_clip ViT with open_clip's real tokenizer."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch

from preprocess.labels.labelers import make_labeler, text_embeddings
from preprocess.labels.maskclip import MaskCLIP
from shared.text_space import CLIPWeightsError, load_clip
from shared.config import LabelsConfig, MaskCLIPConfig

NAMES = ["wall", "floor", "chair", "table"]
TEMPLATES = ["a photo of a {}.", "there is a {} in the scene."]


@pytest.fixture(scope="module")
def maskclip() -> MaskCLIP:
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=32,
        vision_cfg={"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    ).eval()
    return MaskCLIP(model, open_clip.get_tokenizer("ViT-B-16"), NAMES, TEMPLATES)


def _images(n: int, h: int = 96, w: int = 128, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_shapes_and_types(maskclip):
    (label, score, feat), = maskclip.label_images(_images(1), out_sizes=[(64, 48)], return_features=True)
    assert label.shape == score.shape == (48, 64) and label.dtype == np.int16 and score.dtype == np.float16
    assert feat.shape == (6, 8, 32) and feat.dtype == np.float16  # 96x128 image -> 6x8 patches of 16
    assert label.min() >= 0 and label.max() < len(NAMES)
    assert (score >= 1 / len(NAMES) - 1e-3).all() and (score <= 1).all()
    np.testing.assert_allclose(np.linalg.norm(feat.astype(np.float32), axis=-1), 1.0, atol=2e-3)
    (label_full, _, none), = maskclip.label_images(_images(1))
    assert label_full.shape == (96, 128) and none is None


def test_text_classifier_is_unit_mean_over_templates(maskclip):
    assert maskclip.text.shape == (len(NAMES), 32)
    torch.testing.assert_close(maskclip.text.norm(dim=-1), torch.ones(len(NAMES)))
    tok = open_clip.get_tokenizer("ViT-B-16")
    with torch.no_grad():
        e = torch.nn.functional.normalize(maskclip.model.encode_text(tok([t.format("chair") for t in TEMPLATES])), dim=-1)
    torch.testing.assert_close(maskclip.text[2], torch.nn.functional.normalize(e.mean(0), dim=0))


def test_labels_follow_the_text_classifier(maskclip):
    """Set the classifier to the features of chosen patches: those patches take that label."""
    images = _images(1, 64, 64, seed=3)
    (_, _, feat), = maskclip.label_images(images, return_features=True)
    feat = torch.from_numpy(feat.astype(np.float32))  # (4,4,D)
    chosen = [(0, 0), (1, 3), (2, 1), (3, 2)]
    saved = maskclip.text
    try:
        maskclip.text = torch.nn.functional.normalize(torch.stack([feat[r, c] for r, c in chosen]), dim=-1)
        (label, score, _), = maskclip.label_images(images, out_sizes=[(4, 4)])  # one pixel per patch
    finally:
        maskclip.text = saved
    for k, (r, c) in enumerate(chosen):
        assert label[r, c] == k
    # the label of every patch is the class whose embedding it is most similar to
    expected = (feat @ torch.stack([feat[r, c] for r, c in chosen]).T).argmax(-1).numpy()
    np.testing.assert_array_equal(label, expected)


def test_batching_does_not_change_results(maskclip):
    images = _images(5, seed=1) + _images(2, 64, 80, seed=2)  # two image sizes
    one = maskclip.label_images(images, batch_size=1, return_features=True)
    four = maskclip.label_images(images, batch_size=4, return_features=True)
    for (l1, s1, f1), (l4, s4, f4) in zip(one, four):
        np.testing.assert_array_equal(l1, l4)
        np.testing.assert_allclose(s1.astype(np.float32), s4.astype(np.float32), atol=2e-3)
        np.testing.assert_allclose(f1.astype(np.float32), f4.astype(np.float32), atol=2e-3)


def test_positional_embedding_is_kept_at_the_training_grid_and_resized_otherwise(maskclip):
    pos = maskclip.model.visual.positional_embedding
    assert maskclip._positional(4, 4) is pos
    resized = maskclip._positional(6, 8)
    assert resized.shape == (1 + 48, pos.shape[1])
    torch.testing.assert_close(resized[0], pos[0])


def test_last_block_is_value_path_only(maskclip):
    """Patch features do not depend on other patches through the last block's attention:
    with a single block, changing one patch changes only that patch's feature."""
    torch.manual_seed(1)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg={"image_size": 64, "layers": 1, "width": 32, "patch_size": 16, "head_width": 32},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    ).eval()
    m = MaskCLIP(model, open_clip.get_tokenizer("ViT-B-16"), NAMES, TEMPLATES)
    x = torch.randn(1, 3, 64, 64)
    y = x.clone()
    y[:, :, :16, :16] += 1.0
    diff = (m.patch_features(x) - m.patch_features(y)).abs().amax(-1)[0]
    assert diff[0, 0] > 1e-3
    assert diff.flatten()[1:].max() < 1e-5


def test_missing_weights_name_the_fix(tmp_path):
    with pytest.raises(CLIPWeightsError, match="missing.pt' not found: set labels.maskclip.pretrained"):
        load_clip("ViT-B-16", str(tmp_path / "missing.pt"), "cpu")
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CLIPWeightsError, match="could not load CLIP weights.*set labels.maskclip.pretrained"):
        load_clip("ViT-B-16", str(bad), "cpu")
    cfg = LabelsConfig(labeler="maskclip", maskclip=MaskCLIPConfig(pretrained=str(tmp_path / "missing.pt")))
    with pytest.raises(CLIPWeightsError):
        make_labeler(cfg, NAMES)
    with pytest.raises(CLIPWeightsError):
        text_embeddings(cfg, NAMES)


def test_bad_input_is_rejected(maskclip):
    with pytest.raises(ValueError, match="uint8"):
        maskclip.label_images([np.zeros((32, 32, 3), np.float32)])
    with pytest.raises(ValueError, match="batch_size"):
        maskclip.label_images(_images(1), batch_size=0)
