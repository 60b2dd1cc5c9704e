"""Networks: the sparse U-Net backbone and its per-voxel heads."""

from train.models.heads import LinearHead, ProjectionHead, TextHead
from train.models.minkunet import MinkUNet

__all__ = ["LinearHead", "MinkUNet", "ProjectionHead", "TextHead"]

