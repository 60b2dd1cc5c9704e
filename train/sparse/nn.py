"""torchsparse.nn's vocabulary on the pure-PyTorch kernel maps: Conv3d, BatchNorm, ReLU, cat.

A convolution runs one of two algorithms on a kernel map (kernel_map.py), same result:
- "gather": every output row's K neighbours gathered into one (N, K*Cin) buffer, one matrix
  product with the (K*Cin, Cout) kernel; backward one gather of the output gradient through the
  transposed map and two products. A handful of large kernels per conv, no atomics, no loop
  over offsets: what a GPU wants. It multiplies the zero rows of empty neighbours too (on a
  surface about 27 / 10 times the necessary products of a 3x3x3 conv), which GPUs afford.
- "pairs": per kernel offset, gather that offset's input rows, one product, scatter-add into
  the output: only the real pairs' products, what a CPU (bound by arithmetic) wants.
`conv_algorithm` picks one; "auto" (the default) is "pairs" on CPU and "gather" elsewhere.

Under autocast both multiply in autocast's dtype (float64 stays float64, as autocast leaves
it) and sum over offsets in float32: the gather algorithm inside the matrix product, the pairs
algorithm in a float32 accumulator. Outputs have the product dtype, as autocast's linear does.
Weight gradients, sums over every row of the batch, are summed and kept in float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from train.sparse.kernel_map import KernelMap, get_kernel_map
from train.sparse.tensor import SparseTensor

ALGORITHMS = ("auto", "gather", "pairs")
# Elements of the largest gather buffer built at once; bigger inputs go in row chunks
# (2**28: 0.5 GB in bfloat16, 1 GB in float32).
GATHER_BUDGET = 1 << 28
_algorithm = "auto"


@contextmanager
def conv_algorithm(name: str) -> Iterator[None]:
    """Run the convolutions inside with algorithm `name` (ALGORITHMS)."""
    global _algorithm
    if name not in ALGORITHMS:
        raise ValueError(f"unknown convolution algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")
    previous, _algorithm = _algorithm, name
    try:
        yield
    finally:
        _algorithm = previous


def algorithm_for(device: torch.device) -> str:
    """The algorithm convolutions on `device` run now ("gather" or "pairs")."""
    if _algorithm != "auto":
        return _algorithm
    return "pairs" if device.type == "cpu" else "gather"


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype products with `x` run in: autocast's where autocast is on for x's device and x is
    a float32 (autocast leaves float64 alone), else x's own."""
    device = x.device.type
    if x.dtype == torch.float32 and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def _accumulator(dtype: torch.dtype) -> torch.dtype:
    """float32 sums for half-precision products, float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def _mm_supports_out_dtype() -> bool:
    """Whether torch.mm takes out_dtype (torch >= 2.8: cuBLAS's half-in, float32-out GEMM),
    asked of the meta device so no GPU is needed to find out."""
    half = torch.empty(2, 2, dtype=torch.float16, device="meta")
    try:
        torch.mm(half, half, out_dtype=torch.float32)
    except (TypeError, RuntimeError, NotImplementedError):
        return False
    return True


_MM_OUT_DTYPE = _mm_supports_out_dtype()


def _wide_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b summed and returned in float32 (or wider) whatever the inputs' precision: a weight
    gradient sums over every row of a batch, which float16 can overflow under a large GradScaler
    scale and cuBLAS may add up in half precision. On CUDA with half inputs cuBLAS's
    mixed-precision GEMM does it where torch has it; elsewhere the inputs are widened first."""
    if a.dtype not in (torch.float16, torch.bfloat16):
        return a @ b
    if a.is_cuda and _MM_OUT_DTYPE:
        return torch.mm(a, b, out_dtype=torch.float32)
    return a.float() @ b.float()


def _row_chunks(rows: int, width: int) -> list[slice]:
    step = max(1, GATHER_BUDGET // max(1, width))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)] or [slice(0, 0)]


def _padded(x: torch.Tensor) -> torch.Tensor:
    """x with a zero row appended: the row that 'no neighbour' entries of a map gather."""
    return torch.cat([x, x.new_zeros(1, x.shape[1])])


def _gather(padded: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(M, K*C): row index[m, k] of `padded` in column block k."""
    return padded.index_select(0, index.reshape(-1)).view(index.shape[0], -1)


def _gather_forward(x: torch.Tensor, w: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """out = [x[neighbours[:, 0]], ..., x[neighbours[:, K-1]]] @ [W_0; ...; W_{K-1}]."""
    k, cin, cout = w.shape
    padded, w2 = _padded(x), w.reshape(k * cin, cout)
    chunks = _row_chunks(neighbours.shape[0], k * cin)
    if len(chunks) == 1:
        return _gather(padded, neighbours) @ w2
    out = x.new_empty(neighbours.shape[0], cout)
    for rows in chunks:
        torch.mm(_gather(padded, neighbours[rows]), w2, out=out[rows])
    return out


def _gather_backward(
    x: torch.Tensor, w: torch.Tensor, grad_out: torch.Tensor, feeds: torch.Tensor, need_x: bool, need_w: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One gather G = [g[feeds[:, 0]], ..., g[feeds[:, K-1]]] (N_in, K*Cout); grad_x = G @ W^T
    and grad_W = x^T G, summed over rows in float32 (`_wide_product`, then across row chunks)."""
    k, cin, cout = w.shape
    padded, wt = _padded(grad_out), w.transpose(1, 2).reshape(k * cout, cin)
    grad_x = x.new_empty(x.shape) if need_x else None
    grad_w = None
    for rows in _row_chunks(feeds.shape[0], k * cout):
        g = _gather(padded, feeds[rows])
        if grad_x is not None:
            torch.mm(g, wt, out=grad_x[rows])
        if need_w:
            part = _wide_product(x[rows].t(), g)
            grad_w = part if grad_w is None else grad_w + part
    if grad_w is not None:
        grad_w = grad_w.view(cin, k, cout).permute(1, 0, 2)
    return grad_x, grad_w


def _pairs_forward(x: torch.Tensor, w: torch.Tensor, pairs: tuple, identity: int | None, num_out: int) -> torch.Tensor:
    """out[o] += x[i] @ W[k] over the pairs (i, o) of each offset k, summed in float32 or wider."""
    src, dst = pairs
    out = x.new_zeros(num_out, w.shape[-1], dtype=_accumulator(x.dtype))
    for k in range(w.shape[0]):
        if k == identity:
            out.add_(x @ w[k])
        else:
            out.index_add_(0, dst[k], (x.index_select(0, src[k]) @ w[k]).to(out.dtype))
    return out.to(x.dtype)


def _pairs_backward(
    x: torch.Tensor, w: torch.Tensor, grad_out: torch.Tensor, pairs: tuple, identity: int | None,
    need_x: bool, need_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """grad_x[i] += g[o] @ W[k]^T, grad_W[k] = x[i]^T g[o]; the gathers are recomputed rather than
    saved (plain autograd would keep every gathered block alive until backward)."""
    src, dst = pairs
    acc = _accumulator(x.dtype)
    grad_x = torch.zeros_like(x, dtype=acc) if need_x else None
    grad_w = w.new_empty(w.shape, dtype=acc) if need_w else None
    wt = w.transpose(1, 2).contiguous()  # a transposed view made mm up to 2x slower on CPU
    for k in range(w.shape[0]):
        g, f = (grad_out, x) if k == identity else (grad_out.index_select(0, dst[k]), None)
        if grad_x is not None:
            if k == identity:
                grad_x.add_(g @ wt[k])
            else:
                grad_x.index_add_(0, src[k], (g @ wt[k]).to(acc))
        if grad_w is not None:
            f = x.index_select(0, src[k]) if f is None else f
            grad_w[k] = _wide_product(f.t(), g)
    return grad_x, grad_w


class _Convolution(torch.autograd.Function):
    """out[o] = sum over offsets k and pairs (i, o) of k of feats[i] @ W[k], on a kernel map
    (its transpose for a transposed conv), by the gather or the pairs algorithm.

    Backward is written out rather than left to autograd: autograd would keep every gathered
    block alive until backward (5x the peak memory on CPU for the pairs algorithm: 510 vs
    100 MB for a 64-channel 3x3x3 conv on 39k voxels) and sum K separate input gradients.
    """

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, transposed: bool) -> torch.Tensor:
        dtype, algorithm = compute_dtype(feats), algorithm_for(feats.device)
        with torch.autocast(feats.device.type, enabled=False):
            x, w = feats.to(dtype), weight.to(dtype)
            if algorithm == "gather":
                out = _gather_forward(x, w, kmap.feeds if transposed else kmap.neighbours)
            else:
                src, dst = kmap.pairs
                pairs = (dst, src) if transposed else (src, dst)
                out = _pairs_forward(x, w, pairs, kmap.identity, kmap.num_in if transposed else kmap.num_out)
        ctx.save_for_backward(x, w)
        ctx.kmap, ctx.transposed, ctx.algorithm = kmap, transposed, algorithm
        ctx.dtypes = (feats.dtype, weight.dtype)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        x, w = ctx.saved_tensors
        kmap, transposed = ctx.kmap, ctx.transposed
        need_x, need_w = ctx.needs_input_grad[:2]
        with torch.autocast(grad_out.device.type, enabled=False):
            g = grad_out.to(x.dtype)
            if ctx.algorithm == "gather":
                grad_x, grad_w = _gather_backward(x, w, g, kmap.neighbours if transposed else kmap.feeds, need_x, need_w)
            else:
                src, dst = kmap.pairs
                pairs = (dst, src) if transposed else (src, dst)
                grad_x, grad_w = _pairs_backward(x, w, g, pairs, kmap.identity, need_x, need_w)
        feats_dtype, weight_dtype = ctx.dtypes
        return (
            grad_x.to(feats_dtype) if grad_x is not None else None,
            grad_w.to(weight_dtype) if grad_w is not None else None,
            None,
            None,
        )


def conv3d(
    x: SparseTensor,
    weight: torch.Tensor,
    kernel_size: int,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    dilation: int = 1,
    transposed: bool = False,
) -> SparseTensor:
    """Sparse conv with torchsparse 1.4/2.0 semantics.

    Plain: outputs at the input sites (stride 1) or at unique floor(c / (s*ts)) * (s*ts).
    Transposed: reuses the map of the downsampling conv that produced this level, in and out
    swapped, and writes to the finer level's cached coords.
    """
    if kernel_size == 1 and stride == 1 and dilation == 1:
        feats, out_stride = x.feats @ weight.reshape(weight.shape[-2], weight.shape[-1]), x.stride
    else:
        w = weight.reshape(-1, weight.shape[-2], weight.shape[-1])
        if transposed:
            if x.stride % stride != 0 or x.stride // stride not in x.caches.coords:
                raise ValueError(
                    f"transposed conv from stride {x.stride} by {stride} needs the coords of stride "
                    f"{x.stride // stride} cached on the tensor: run it on the output chain of the matching "
                    "downsampling conv (U-Net decoders mirror their encoder)"
                )
            out_stride = x.stride // stride
        else:
            out_stride = x.stride * stride
        kmap = get_kernel_map(x.caches, out_stride if transposed else x.stride, kernel_size, stride, dilation)
        feats = _Convolution.apply(x.feats, w, kmap, transposed)
    if bias is not None:
        feats = feats + bias.to(feats.dtype)
    return SparseTensor(feats, x.caches.coords[out_stride], out_stride, caches=x.caches)


class Conv3d(nn.Module):
    """torchsparse.nn.Conv3d: weight `kernel` of shape (K, Cin, Cout), (Cin, Cout) for 1x1x1."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = False,
        transposed: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation, self.transposed = kernel_size, stride, dilation, transposed
        volume = kernel_size**3
        shape = (volume, in_channels, out_channels) if volume > 1 else (in_channels, out_channels)
        self.kernel = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchsparse's init: uniform(+-1/sqrt(fan)) with fan = (Cout if transposed else Cin) * K."""
        fan = (self.out_channels if self.transposed else self.in_channels) * self.kernel_size**3
        bound = 1.0 / math.sqrt(fan)
        nn.init.uniform_(self.kernel, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return conv3d(x, self.kernel, self.kernel_size, self.bias, self.stride, self.dilation, self.transposed)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"dilation={self.dilation}, bias={self.bias is not None}, transposed={self.transposed}"
        )


class BatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the features of all voxels of the batch."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.with_feats(super().forward(x.feats))


class ReLU(nn.ReLU):
    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.with_feats(super().forward(x.feats))


def cat(tensors: list[SparseTensor]) -> SparseTensor:
    """Concatenate features along channels; sites, stride and caches are the first tensor's."""
    if any(t.feats.shape[0] != tensors[0].feats.shape[0] or t.stride != tensors[0].stride for t in tensors):
        raise ValueError("cat needs tensors on the same sites and stride")
    return tensors[0].with_feats(torch.cat([t.feats for t in tensors], dim=1))
