"""MaskCLIP: dense per-patch labels from a CLIP ViT without any training (Zhou et al., ECCV 2022).

CLIP's image embedding comes from attention pooling of the class token, which mixes the whole
image; MaskCLIP drops the query/key path of the LAST transformer block so that each patch token
keeps its own content, and maps every patch through the same final norm and projection the class
token goes through, landing it in the joint image-text space. Following MaskCLIP's code
(`mmseg/models/backbones/vit.py`, `return_qkv` + `skip_last_attn`), the last block becomes
    x = x + out_proj(v_proj(ln_1(x)));  x = x + mlp(ln_2(x))
(layer scales applied where the model has them), then ln_post and the visual projection per
patch. Positional embeddings are bicubically resized for grids other than the training one.
Labels: cosine similarity of the patch features with per-class text embeddings (mean over prompt
templates), x100, softmax; logits are bilinearly upsampled to the label map before argmax.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from shared.text_space import prompt_embeddings

LOGIT_SCALE = 100.0  # CLIP's learned temperature, as MaskCLIP applies it


class MaskCLIP:
    """Dense MaskCLIP labeller around an open_clip CLIP model with a ViT image tower.

    model: an open_clip CLIP (e.g. from `load_clip`, or built from a config in tests).
    tokenizer: open_clip tokenizer of that model.
    class_names: one name per class, formatted into every template of `templates`.
    templates: prompt templates with one "{}" each.
    """

    def __init__(self, model: Any, tokenizer: Callable, class_names: list[str], templates: list[str]):
        visual = model.visual
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        if blocks is None or getattr(visual, "attn_pool", None) is not None or visual.proj is None:
            raise ValueError("MaskCLIP needs an open_clip ViT image tower with class-token pooling and a projection")
        if not isinstance(blocks[-1].attn, torch.nn.MultiheadAttention):
            raise ValueError("MaskCLIP supports open_clip's default ViT blocks (nn.MultiheadAttention) only")
        if not class_names or not templates or any("{}" not in t for t in templates):
            raise ValueError("MaskCLIP needs class names and prompt templates that each contain '{}'")
        self.model = model
        self.device = next(model.parameters()).device
        self.patch = int(visual.conv1.kernel_size[0])
        mean = getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        std = getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.text = prompt_embeddings(model, tokenizer, class_names, templates)

    def _positional(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Positional embedding (1 + gh*gw, width) for a gh x gw patch grid (bicubic resize)."""
        pos = self.model.visual.positional_embedding
        n = pos.shape[0] - 1
        g = int(round(n**0.5))
        if g * g != n:
            raise ValueError(f"MaskCLIP: positional embedding of {n} patches is not a square grid")
        if (grid_h, grid_w) == (g, g):
            return pos
        grid = pos[1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        return torch.cat([pos[:1], grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1)])

    @torch.no_grad()
    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, gh, gw, D) unit patch features of (B,3,H,W) normalised images, H and W multiples
        of the patch size."""
        v = self.model.visual
        B, _, H, W = images.shape
        gh, gw = H // self.patch, W // self.patch
        x = v.conv1(images.to(v.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(B, -1, -1)
        x = torch.cat([cls, x], dim=1) + self._positional(gh, gw).to(x.dtype)
        x = v.ln_pre(x)
        blocks = v.transformer.resblocks
        batch_first = getattr(v.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        for block in blocks[:-1]:
            x = block(x)
        if not batch_first:
            x = x.transpose(0, 1)
        last = blocks[-1]
        width = x.shape[-1]
        attn = last.attn
        value = F.linear(last.ln_1(x), attn.in_proj_weight[2 * width :], attn.in_proj_bias[2 * width :])
        x = x + last.ls_1(attn.out_proj(value))
        x = x + last.ls_2(last.mlp(last.ln_2(x)))
        x = v.ln_post(x[:, 1:]) @ v.proj
        return F.normalize(x.float(), dim=-1).view(B, gh, gw, -1)

    @torch.no_grad()
    def label_images(
        self,
        images: list[np.ndarray],
        batch_size: int = 8,
        out_sizes: list[tuple[int, int]] | None = None,
        return_features: bool = False,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Per image (label i16 (h,w), score f16 (h,w), patch features f16 (gh,gw,D) or None).

        images: (H,W,3) uint8 RGB. batch_size: images per forward pass (results do not depend
        on it). out_sizes: (width, height) of each label map; default: the image's size.
        Each image is resized to the nearest multiple of the patch size before the network.
        """
        if batch_size < 1:
            raise ValueError(f"MaskCLIP.label_images: batch_size must be >= 1, got {batch_size}")
        for img in images:
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"MaskCLIP.label_images: images must be (H,W,3) uint8, got {img.shape} {img.dtype}")
        sizes = out_sizes or [(img.shape[1], img.shape[0]) for img in images]
        if len(sizes) != len(images):
            raise ValueError("MaskCLIP.label_images: one output size per image")
        out: list[Any] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault((img.shape, sizes[i]), []).append(i)
        for (shape, (w, h)), members in groups.items():
            net_h = max(self.patch, int(round(shape[0] / self.patch)) * self.patch)
            net_w = max(self.patch, int(round(shape[1] / self.patch)) * self.patch)
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                batch = torch.from_numpy(np.stack([images[i] for i in chunk])).to(self.device)
                batch = batch.permute(0, 3, 1, 2).float() / 255.0
                batch = F.interpolate(batch, size=(net_h, net_w), mode="bilinear", align_corners=False, antialias=True)
                feats = self.patch_features((batch - self._mean) / self._std)
                logits = LOGIT_SCALE * feats @ self.text.T  # (B, gh, gw, C)
                logits = F.interpolate(logits.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False)
                prob, label = logits.softmax(dim=1).max(dim=1)
                for k, i in enumerate(chunk):
                    feat = feats[k].half().cpu().numpy() if return_features else None
                    out[i] = (label[k].short().cpu().numpy(), prob[k].half().cpu().numpy(), feat)
        return out
