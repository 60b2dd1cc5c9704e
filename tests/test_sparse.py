"""The pure-PyTorch sparse backend against dense torch convolutions on small random grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.sparse import SparseTensor, nn as spnn, select_backend, sparse_collate, sparse_quantize
from train.sparse.nn import conv_algorithm
from train.sparse.backend import TORCH, _import_torchsparse, torchsparse_batch_first
from train.sparse.kernel_map import kernel_offsets, pack_coords, unpack_keys
from train.sparse.tensor import MAX_BATCH

GRID = 8
SHIFT = -8  # sparse coords = dense grid index + SHIFT: exercises negative coordinates too
TOL = dict(rtol=0, atol=1e-10)


@pytest.fixture(autouse=True)
def one_thread():
    """Grids of a few hundred voxels: thread hand-offs on a shared 2-core machine cost more
    than they save, so run single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["pairs", "gather", "gather-chunked"])
def algorithm(request, monkeypatch):
    """Each convolution algorithm (nn.py), the gather one also with a buffer budget so small
    that every conv runs in several row chunks."""
    name = request.param.removesuffix("-chunked")
    if request.param.endswith("-chunked"):
        monkeypatch.setattr(spnn, "GATHER_BUDGET", 200)
    with conv_algorithm(name):
        yield name


def random_scene(seed: int, batch: int = 2, channels: int = 3, density: float = 0.3, ts: int = 1):
    """Unique random sites on a GRID^3 lattice of spacing ts; float64 features (a leaf)."""
    g = torch.Generator().manual_seed(seed)
    occupied = (torch.rand(batch, GRID, GRID, GRID, generator=g) < density).nonzero().int()
    coords = torch.cat([occupied[:, :1], occupied[:, 1:] * ts + SHIFT], dim=1)
    feats = torch.randn(len(coords), channels, generator=g, dtype=torch.float64, requires_grad=True)
    return feats, coords


def to_dense(feats: torch.Tensor, coords: torch.Tensor, ts: int, size: int) -> torch.Tensor:
    """Scatter onto a zero (B, C, size^3) grid, differentiably."""
    b, ijk = coords[:, 0].long(), torch.div(coords[:, 1:].long() - SHIFT, ts, rounding_mode="floor")
    dense = feats.new_zeros(int(b.max()) + 1, size, size, size, feats.shape[1])
    dense = dense.index_put((b, ijk[:, 0], ijk[:, 1], ijk[:, 2]), feats)
    return dense.permute(0, 4, 1, 2, 3)


def at_sites(dense: torch.Tensor, coords: torch.Tensor, ts: int) -> torch.Tensor:
    ijk = torch.div(coords[:, 1:].long() - SHIFT, ts, rounding_mode="floor")
    return dense[coords[:, 0].long(), :, ijk[:, 0], ijk[:, 1], ijk[:, 2]]


def dense_kernel(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """(K, Cin, Cout) in torchsparse's offset order → (Cin, Cout, kx, ky, kz)."""
    w = kernel.reshape(k, k, k, kernel.shape[-2], kernel.shape[-1])
    return w.permute(3, 4, 2, 1, 0) if k % 2 == 1 else w.permute(3, 4, 0, 1, 2)  # odd: (z, y, x) major


def leaf_conv(cin: int, cout: int, seed: int, **kwargs) -> spnn.Conv3d:
    torch.manual_seed(seed)
    return spnn.Conv3d(cin, cout, **kwargs).double()


def grads(loss: torch.Tensor, *leaves: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize(("k", "dilation", "ts"), [(3, 1, 1), (1, 1, 1), (3, 2, 1), (3, 1, 2), (2, 1, 1)])
def test_submanifold_conv_equals_dense(algorithm: str, k: int, dilation: int, ts: int) -> None:
    feats, coords = random_scene(seed=k + 10 * dilation + 100 * ts, ts=ts)
    conv = leaf_conv(3, 4, seed=0, kernel_size=k, dilation=dilation)
    out = conv(SparseTensor(feats, coords, stride=ts))
    assert torch.equal(out.C, coords) and out.s == ts

    w = dense_kernel(conv.kernel, k).permute(1, 0, 2, 3, 4)  # conv3d wants (Cout, Cin, ...)
    lo, hi = -((-k) // 2 + 1) * dilation, (k // 2) * dilation  # offset range, kernel_offsets' convention
    dense_in = F.pad(to_dense(feats, coords, ts, GRID), (lo, hi) * 3)
    ref = at_sites(F.conv3d(dense_in, w, dilation=dilation), coords, ts)
    torch.testing.assert_close(out.F, ref, **TOL)

    r = torch.randn_like(ref)
    for a, b in zip(grads((out.F * r).sum(), feats, conv.kernel), grads((ref * r).sum(), feats, conv.kernel)):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize(("k", "ts"), [(2, 1), (3, 1), (2, 2)])
def test_strided_conv_equals_dense_on_occupied_outputs(algorithm: str, k: int, ts: int) -> None:
    feats, coords = random_scene(seed=20 + k + ts, ts=ts)
    conv = leaf_conv(3, 4, seed=1, kernel_size=k, stride=2)
    out = conv(SparseTensor(feats, coords, stride=ts))
    s = 2 * ts
    expected = torch.unique(torch.cat([coords[:, :1], torch.div(coords[:, 1:], s, rounding_mode="floor") * s], 1), dim=0)
    assert out.s == s and torch.equal(out.C, expected)  # unique floor(c / (2 ts)) * 2 ts, lexicographic

    w = dense_kernel(conv.kernel, k).permute(1, 0, 2, 3, 4)
    ref = F.conv3d(to_dense(feats, coords, ts, GRID), w, stride=2, padding=-((-k) // 2 + 1))
    ref = at_sites(ref, out.C, s)
    torch.testing.assert_close(out.F, ref, **TOL)
    r = torch.randn_like(ref)
    for a, b in zip(grads((out.F * r).sum(), feats, conv.kernel), grads((ref * r).sum(), feats, conv.kernel)):
        torch.testing.assert_close(a, b, **TOL)


def test_transposed_conv_equals_dense_on_fine_coords(algorithm: str) -> None:
    feats, coords = random_scene(seed=30)
    fine = SparseTensor(feats, coords)
    coarse = leaf_conv(3, 5, seed=2, kernel_size=2, stride=2)(fine)
    coarse = coarse.with_feats(torch.randn(coarse.F.shape, dtype=torch.float64, requires_grad=True))
    up = leaf_conv(5, 4, seed=3, kernel_size=2, stride=2, transposed=True)
    out = up(coarse)
    assert out.s == 1 and torch.equal(out.C, coords)

    w = dense_kernel(up.kernel, 2)  # conv_transpose3d wants (Cin, Cout, ...)
    ref = at_sites(F.conv_transpose3d(to_dense(coarse.F, coarse.C, 2, GRID // 2), w, stride=2), coords, 1)
    torch.testing.assert_close(out.F, ref, **TOL)
    r = torch.randn_like(ref)
    for a, b in zip(grads((out.F * r).sum(), coarse.F, up.kernel), grads((ref * r).sum(), coarse.F, up.kernel)):
        torch.testing.assert_close(a, b, **TOL)


def test_strided_then_transposed_round_trip_restores_coords_and_reuses_maps() -> None:
    feats, coords = random_scene(seed=40, channels=2)
    x = SparseTensor(feats.detach().float(), coords)
    y = spnn.Conv3d(2, 2, 2, stride=2)(spnn.Conv3d(2, 2, 2, stride=2)(x))
    xyz4 = torch.div(coords[:, 1:], 4, rounding_mode="floor") * 4
    assert y.s == 4 and torch.equal(y.C, torch.unique(torch.cat([coords[:, :1], xyz4], dim=1), dim=0))
    built = dict(y.caches.kernel_maps)
    z = spnn.Conv3d(2, 2, 2, stride=2, transposed=True)(spnn.Conv3d(2, 2, 2, stride=2, transposed=True)(y))
    assert z.s == 1 and torch.equal(z.C, coords)
    assert z.caches.kernel_maps == built  # the decoder built no map of its own


def test_transposed_conv_without_matching_encoder_is_explained() -> None:
    feats, coords = random_scene(seed=41, ts=2)
    with pytest.raises(ValueError, match="matching downsampling conv"):
        spnn.Conv3d(3, 3, 2, stride=2, transposed=True).double()(SparseTensor(feats, coords, stride=2))


def test_samples_at_the_same_coordinates_do_not_mix(algorithm: str) -> None:
    feats, coords = random_scene(seed=50, batch=1)
    other = torch.randn_like(feats)
    conv = leaf_conv(3, 4, seed=4, kernel_size=3)
    down = leaf_conv(3, 4, seed=5, kernel_size=2, stride=2)
    batch = sparse_collate([(coords[:, 1:], feats), (coords[:, 1:], other)])
    assert torch.equal(batch.C[: len(coords)], coords) and (batch.C[len(coords) :, 0] == 1).all()
    for layer in (conv, down):
        alone_a, alone_b, both = layer(SparseTensor(feats, coords)), layer(SparseTensor(other, coords)), layer(batch)
        torch.testing.assert_close(both.F, torch.cat([alone_a.F, alone_b.F]), **TOL)


def test_quantize_index_and_inverse_round_trip() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(-1.0, 2.0, size=(2000, 3))
    voxels, index, inverse = sparse_quantize(points, 0.25, return_index=True, return_inverse=True)
    cells = np.floor(points / 0.25).astype(np.int32)
    assert voxels.dtype == np.int32 and len(np.unique(voxels, axis=0)) == len(voxels)
    np.testing.assert_array_equal(voxels[inverse], cells)
    np.testing.assert_array_equal(cells[index], voxels)
    np.testing.assert_array_equal(sparse_quantize(points, 0.25), voxels)


def test_pack_keys_round_trip_and_order() -> None:
    coords = torch.tensor([[0, -32768, 5, 32767], [3, 0, -1, 0], [0, -32768, 5, 32766], [4095, 7, 7, -7]], dtype=torch.int32)
    keys = pack_coords(coords)
    assert torch.equal(unpack_keys(keys), coords)
    assert torch.equal(torch.argsort(keys), torch.tensor([2, 0, 1, 3]))  # lexicographic (b, x, y, z)


def test_kernel_offsets_follow_torchsparse_order() -> None:
    odd, even = kernel_offsets(3), kernel_offsets(2)
    assert odd[:3].tolist() == [[-1, -1, -1], [0, -1, -1], [1, -1, -1]] and odd[13].tolist() == [0, 0, 0]
    assert even.tolist()[:3] == [[0, 0, 0], [0, 0, 1], [0, 1, 0]]


@pytest.mark.parametrize(
    ("coords", "stride", "message"),
    [
        (torch.zeros(2, 4, dtype=torch.int64), 1, "int32"),
        (torch.tensor([[-1, 2, 3, 0]], dtype=torch.int32), 1, "batch last"),
        (torch.tensor([[0, 2, 3, 4]], dtype=torch.int32), 2, "multiples of 2"),
        (torch.tensor([[0, 40000, 0, 0]], dtype=torch.int32), 1, "coarser voxel"),
    ],
)
def test_coordinate_layout_is_checked_at_construction(coords: torch.Tensor, stride: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SparseTensor(torch.zeros(len(coords), 1), coords, stride)


def test_duplicate_sites_are_rejected() -> None:
    coords = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.int32)
    with pytest.raises(ValueError, match="sparse_quantize"):
        spnn.Conv3d(1, 1, 3)(SparseTensor(torch.zeros(2, 1), coords))


def test_torchsparse_column_order_by_version() -> None:
    assert not torchsparse_batch_first("1.4.0") and not torchsparse_batch_first("2.0.0")
    assert torchsparse_batch_first("2.1.0+torch20cu118")


def test_backend_selection() -> None:
    assert select_backend("torch") is TORCH
    assert select_backend("auto", device="cpu") is TORCH
    with pytest.raises(ValueError, match="unknown sparse backend"):
        select_backend("minkowski")
    if _import_torchsparse() is None:
        with pytest.raises(ImportError, match="not on PyPI"):
            select_backend("torchsparse")


@pytest.mark.skipif(_import_torchsparse() is None, reason="torchsparse not importable")
@pytest.mark.parametrize(("k", "stride"), [(3, 1), (2, 2)])
def test_equals_torchsparse(k: int, stride: int) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ts = select_backend("torchsparse")
    feats, coords = random_scene(seed=60 + k)
    coords = coords - torch.tensor([0, SHIFT, SHIFT, SHIFT], dtype=torch.int32)  # torchsparse wants >= 0
    ours = spnn.Conv3d(3, 4, k, stride=stride).to(device)
    theirs = ts.Conv3d(3, 4, k, stride=stride).to(device)
    theirs.kernel.data.copy_(ours.kernel.data)
    f = feats.detach().float().to(device)
    a = ours(SparseTensor(f, coords.to(device)))
    b = theirs(ts.SparseTensor(f, coords.to(device)))
    b_coords = b.C if torchsparse_batch_first(_import_torchsparse().__version__) else b.C[:, [3, 0, 1, 2]]
    order_a, order_b = torch.argsort(pack_coords(a.C.cpu())), torch.argsort(pack_coords(b_coords.int().cpu()))
    torch.testing.assert_close(a.F.cpu()[order_a], b.F.cpu()[order_b], rtol=1e-4, atol=1e-4)


def test_to_moves_data_and_starts_a_new_chain() -> None:
    feats, coords = random_scene(seed=70)
    x = SparseTensor(feats, coords)
    spnn.Conv3d(3, 3, 3).double()(x)
    y = x.to("cpu")
    assert torch.equal(y.F, x.F) and torch.equal(y.C, x.C) and y.s == x.s
    assert y.caches is not x.caches and not y.caches.kernel_maps


def test_coords_follow_the_features_device() -> None:
    """Features on a GPU with coordinates on the CPU (the meta device stands in for the GPU): the
    tensor refuses the pair with one error naming both devices; sparse_collate checks the
    coordinates on the CPU and moves them to the features' device."""
    coords = torch.tensor([[0, 0, 0], [1, 0, 0]], dtype=torch.int32)
    feats = torch.zeros(2, 3, device="meta")
    with pytest.raises(ValueError, match="feats are on meta but coords on cpu"):
        SparseTensor(feats, torch.cat([torch.zeros(2, 1, dtype=torch.int32), coords], dim=1))
    x = sparse_collate([(coords, feats), (coords, feats)])
    assert x.C.device == x.F.device == torch.device("meta") and x.C.shape == (4, 4)
    with pytest.raises(ValueError, match="batch last"):  # checked before the move
        sparse_collate([(coords, feats)] * (MAX_BATCH + 1))
