"""spconv 2.x behind the torchsparse-style Backend (backend.py): the same MinkUNet code,
checkpoints and coordinate layout on spconv's CUDA kernels (`pip install spconv-cu126` etc.).

- Tensors: `SpconvTensor` wraps a spconv SparseConvTensor with its stride and origin and has
  what our networks use (`.F`, `.C`, `.s`, `with_feats`, `+`), so BatchNorm, ReLU and cat are
  the pure-PyTorch ones, acting on features. spconv wants indices in [0, spatial_shape): coords
  are shifted by an origin that is a multiple of ALIGN and divided by the stride, which keeps
  every coarser grid (strides dividing ALIGN) exactly where the pure-PyTorch backend has it.
- Convs: `Conv3d` keeps torchsparse's `kernel` (K, Cin, Cout), so state dicts load across
  backends, and hands spconv its (Cout, kx, ky, kz, Cin) view on each call. Stride 1 is a
  SubMConv3d, sharing its pairs with every conv of that stride, kernel size and dilation (one
  indice_key); kernel_size == stride is a SparseConv3d keyed "down<input stride>"; a transposed
  conv is the SparseInverseConv3d of that key, which restores exactly the downsampling conv's
  input sites in their order (what the U-Net's concat needs); 1x1x1 is a matrix product.
  Strided convs with kernel_size != stride have other output sites in spconv and are refused,
  as are stride-1 kernels other than 1 and 3 (not checked against the pure-PyTorch backend).
- Index columns are (b, x, y, z), our order; spconv's kernel axes follow the index columns.
- Under CUDA autocast spconv casts to float16 whatever autocast's dtype (train/amp.py).
"""

from __future__ import annotations

import math

import spconv.pytorch as spconv
import torch

from train.sparse import nn as spnn
from train.sparse.tensor import check_coords, check_devices

ALIGN = 64  # the origin is a multiple of this; strides must divide it


class SpconvTensor:
    """Features on voxels at a stride, as a spconv SparseConvTensor plus the coordinate origin."""

    def __init__(
        self, feats: torch.Tensor, coords: torch.Tensor | None, stride: int = 1, *,
        sp: spconv.SparseConvTensor | None = None, origin: torch.Tensor | None = None,
    ) -> None:
        if sp is None:
            if ALIGN % stride:
                raise ValueError(f"the spconv backend needs strides dividing {ALIGN}, got {stride}")
            check_devices(feats, coords)
            check_coords(coords, stride)
            sp, origin = _to_spconv(feats, coords, stride)
        self.sp, self.stride, self.origin = sp, stride, origin

    @property
    def feats(self) -> torch.Tensor:
        return self.sp.features

    @property
    def F(self) -> torch.Tensor:
        return self.sp.features

    @property
    def C(self) -> torch.Tensor:
        """(M, 4) int32 (b, x, y, z) in original voxel units, as the pure-PyTorch tensor has them."""
        idx = self.sp.indices
        return torch.cat([idx[:, :1], idx[:, 1:] * self.stride + self.origin], dim=1).int()

    @property
    def s(self) -> int:
        return self.stride

    def with_feats(self, feats: torch.Tensor) -> SpconvTensor:
        return SpconvTensor(feats, None, self.stride, sp=self.sp.replace_feature(feats), origin=self.origin)

    def __add__(self, other: SpconvTensor) -> SpconvTensor:
        return self.with_feats(self.feats + other.feats)

    def __repr__(self) -> str:
        return f"SpconvTensor(M={self.feats.shape[0]}, C={self.feats.shape[1]}, stride={self.stride})"


def _to_spconv(feats: torch.Tensor, coords: torch.Tensor, stride: int) -> tuple[spconv.SparseConvTensor, torch.Tensor]:
    xyz = coords[:, 1:]
    origin = torch.div(xyz.min(dim=0).values, ALIGN, rounding_mode="floor") * ALIGN
    idx = torch.div(xyz - origin, stride, rounding_mode="floor")
    cell = ALIGN // stride  # every later downsampling must divide the shape evenly
    shape = [math.ceil(int(v) / cell) * cell for v in (idx.max(dim=0).values + 1).tolist()]
    indices = torch.cat([coords[:, :1], idx], dim=1).int().contiguous()
    return spconv.SparseConvTensor(feats, indices, shape, int(coords[:, 0].max()) + 1), origin.int()


def spconv_kernel(kernel: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """torchsparse's (K, Cin, Cout) → spconv's (Cout, kx, ky, kz, Cin). Odd kernels enumerate
    offsets z-outer / x-inner, even ones x-outer (kernel_map.kernel_offsets)."""
    k = kernel_size
    w = kernel.reshape(k, k, k, kernel.shape[-2], kernel.shape[-1])
    return (w.permute(4, 2, 1, 0, 3) if k % 2 == 1 else w.permute(4, 0, 1, 2, 3)).contiguous()


class Conv3d(spnn.Conv3d):
    """torchsparse.nn.Conv3d's signature, `kernel` parameter and init on spconv's convolutions."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
        bias: bool = False, transposed: bool = False,
    ) -> None:
        if stride != 1 and (kernel_size != stride or dilation != 1):
            raise ValueError(f"the spconv backend runs strided convs with kernel_size == stride and no dilation, "
                             f"got kernel_size={kernel_size}, stride={stride}, dilation={dilation}")
        if stride == 1 and kernel_size not in (1, 3):
            # Checked against the pure-PyTorch backend for 1 and 3; with 5 spconv 2.3.8's CPU
            # build disagreed with dense conv3d on random scenes, even kernels centre differently.
            raise ValueError(f"the spconv backend runs stride-1 convs of kernel size 1 or 3, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, bias, transposed)
        if kernel_size == 1:
            self.conv = None
        elif stride == 1:
            self.conv = spconv.SubMConv3d(in_channels, out_channels, kernel_size, dilation=dilation, bias=False)
        elif transposed:
            self.conv = spconv.SparseInverseConv3d(in_channels, out_channels, kernel_size, bias=False, indice_key="")
        else:
            self.conv = spconv.SparseConv3d(in_channels, out_channels, kernel_size, stride, bias=False, indice_key="")
        if self.conv is not None:
            del self.conv.weight  # `kernel` is the parameter; forward hands spconv its layout

    def forward(self, x: SpconvTensor) -> SpconvTensor:
        if self.conv is None:
            out, stride = x.with_feats(x.feats @ self.kernel.to(x.feats.dtype)), x.stride
        else:
            if self.stride == 1:
                stride, key = x.stride, f"subm{x.stride}k{self.kernel_size}d{self.dilation}"
            elif self.transposed:
                stride, key = x.stride // self.stride, f"down{x.stride // self.stride}"
                if x.stride % self.stride or x.sp.find_indice_pair(key) is None:
                    raise ValueError(f"transposed conv from stride {x.stride} by {self.stride} needs the matching "
                                     "downsampling conv earlier on this tensor's chain (U-Net decoders mirror their encoder)")
            else:
                stride, key = x.stride * self.stride, f"down{x.stride}"
                if ALIGN % stride:
                    raise ValueError(f"the spconv backend needs strides dividing {ALIGN}, got {stride}")
            self.conv.indice_key = key
            self.conv.weight = spconv_kernel(self.kernel, self.kernel_size).to(x.feats.dtype)
            out = SpconvTensor(None, None, stride, sp=self.conv(x.sp), origin=x.origin)
        if self.bias is not None:
            out = out.with_feats(out.feats + self.bias.to(out.feats.dtype))
        return out
