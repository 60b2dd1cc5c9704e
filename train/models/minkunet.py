"""MinkUNet, the SPVNAS layout (mit-han-lab/spvnas core/models/semantic_kitti/minkunet.py),
written against a sparse Backend so the same code runs on torchsparse or the pure-PyTorch ops."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from train.models.heads import LinearHead
from train.sparse import Backend, select_backend

CHANNELS = (32, 32, 64, 128, 256, 256, 128, 96, 96)


def _conv_bn_relu(ops: Backend, cin: int, cout: int, ks: int, stride: int = 1, transposed: bool = False) -> list[nn.Module]:
    conv = ops.Conv3d(cin, cout, kernel_size=ks, stride=stride, transposed=transposed)
    return [conv, ops.BatchNorm(cout), ops.ReLU(True)]


class BasicConvolutionBlock(nn.Module):
    """Conv-BN-ReLU; a transposed conv when `transposed` (SPVNAS's BasicDeconvolutionBlock)."""

    def __init__(self, ops: Backend, cin: int, cout: int, ks: int = 3, stride: int = 1, transposed: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(*_conv_bn_relu(ops, cin, cout, ks, stride, transposed))

    def forward(self, x: Any) -> Any:
        return self.net(x)


class ResidualBlock(nn.Module):
    """Conv-BN-ReLU-Conv-BN plus identity (or a 1x1 Conv-BN when channels change), then ReLU."""

    def __init__(self, ops: Backend, cin: int, cout: int, ks: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            *_conv_bn_relu(ops, cin, cout, ks), ops.Conv3d(cout, cout, kernel_size=ks), ops.BatchNorm(cout)
        )
        self.downsample = (
            nn.Identity() if cin == cout else nn.Sequential(ops.Conv3d(cin, cout, kernel_size=1), ops.BatchNorm(cout))
        )
        self.relu = ops.ReLU(True)

    def forward(self, x: Any) -> Any:
        return self.relu(self.net(x) + self.downsample(x))


class MinkUNet(nn.Module):
    """Sparse U-Net: stem, 4 encoder stages (k2/s2 conv + 2 residual blocks), 4 decoder stages
    (k2/s2 transposed conv, concat with the encoder skip, 2 residual blocks).

    `width` scales the channels (SPVNAS's `cr`). `forward_features` gives the decoder's
    per-voxel features (out_channels = 96 * width), in the input tensor's row order;
    `forward` applies the linear head when `num_classes` is given, else returns the features.
    """

    def __init__(
        self, in_channels: int, num_classes: int | None = None, width: float = 1.0, backend: Backend | str = "auto"
    ) -> None:
        super().__init__()
        ops = select_backend(backend) if isinstance(backend, str) else backend
        self.ops = ops
        cs = [int(width * c) for c in CHANNELS]
        self.out_channels = cs[8]
        self.stem = nn.Sequential(*_conv_bn_relu(ops, in_channels, cs[0], 3), *_conv_bn_relu(ops, cs[0], cs[0], 3))
        # Module names follow SPVNAS (stage1..4, up1..4 = [deconv block, residual blocks]) so
        # its torchsparse checkpoints load with load_state_dict.
        for i in range(4):
            stage = nn.Sequential(
                BasicConvolutionBlock(ops, cs[i], cs[i], ks=2, stride=2),
                ResidualBlock(ops, cs[i], cs[i + 1]),
                ResidualBlock(ops, cs[i + 1], cs[i + 1]),
            )
            cin, cout, skip = cs[4 + i], cs[5 + i], cs[3 - i]
            up = nn.ModuleList([
                BasicConvolutionBlock(ops, cin, cout, ks=2, stride=2, transposed=True),
                nn.Sequential(ResidualBlock(ops, cout + skip, cout), ResidualBlock(ops, cout, cout)),
            ])
            self.add_module(f"stage{i + 1}", stage)
            self.add_module(f"up{i + 1}", up)
        self.head = LinearHead(cs[8], num_classes) if num_classes is not None else None
        for m in self.modules():
            if isinstance(m, nn.BatchNorm1d):  # SPVNAS's weight_initialization
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Any) -> torch.Tensor:
        """Per-voxel decoder features (M, out_channels) for the input SparseTensor's voxels."""
        skips = [self.stem(x)]
        for stage in (self.stage1, self.stage2, self.stage3, self.stage4):
            skips.append(stage(skips[-1]))
        y = skips.pop()
        for deconv, blocks in (self.up1, self.up2, self.up3, self.up4):
            y = blocks(self.ops.cat([deconv(y), skips.pop()]))
        return y.F

    def forward(self, x: Any) -> torch.Tensor:
        feats = self.forward_features(x)
        return self.head(feats) if self.head is not None else feats
