"""Networks: the sparse U-Net backbone and its per-voxel heads."""

from train.models.heads import DotTextHead, LinearHead, ProjectionHead, TextHead, build_classifier
from train.models.minkunet import MinkUNet

__all__ = ["DotTextHead", "LinearHead", "MinkUNet", "ProjectionHead", "TextHead", "build_classifier"]
