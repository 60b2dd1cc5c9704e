"""Speed of the pure-PyTorch sparse backend on a surface-like scene of ~50k voxels.

Times (median of --repeats runs): the 3x3x3 kernel-map build, a 32->32 channel submanifold
conv forward+backward next to a dense conv3d on the scene's bounding grid, a k2/s2 downsample
plus its transposed conv, and a MinkUNet forward+backward (kernel maps built inside, as in
training). Run: .venv/bin/python benchmarks/bench_sparse.py [--device cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from train.models import MinkUNet
from train.sparse import SparseTensor, nn as spnn
from train.sparse.kernel_map import get_kernel_map


def box_shell(lo: tuple[int, int, int], hi: tuple[int, int, int]) -> torch.Tensor:
    axes = [torch.arange(a, b + 1) for a, b in zip(lo, hi)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    return grid[((grid == torch.tensor(lo)) | (grid == torch.tensor(hi))).any(dim=1)]


def sphere_shell(centre: tuple[int, int, int], radius: int) -> torch.Tensor:
    axis = torch.arange(-radius - 1, radius + 2)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    return grid[(grid.float().norm(dim=1) - radius).abs() < 0.5] + torch.tensor(centre)


def room_scene() -> torch.Tensor:
    """A 2 cm ScanNet-like room: walls, floor and ceiling, furniture boxes and a ball; (N, 4) coords."""
    parts = [
        box_shell((0, 0, 0), (139, 99, 29)),
        box_shell((10, 10, 1), (49, 34, 12)),
        box_shell((70, 20, 1), (99, 69, 20)),
        box_shell((110, 60, 1), (129, 89, 8)),
        sphere_shell((30, 70, 12), 10),
    ]
    xyz = torch.unique(torch.cat(parts), dim=0)
    return torch.cat([torch.zeros(len(xyz), 1, dtype=xyz.dtype), xyz], dim=1).int()


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats + 1):  # the first run warms up allocators and kernels
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dense-repeats", type=int, default=2, help="the dense reference is slow on CPU")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--width", type=float, default=1.0, help="MinkUNet channel multiplier (SPVNAS cr)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    coords = room_scene().to(device)
    n = len(coords)
    feats = torch.randn(n, 32, device=device)
    conv = spnn.Conv3d(32, 32, 3).to(device)
    extent = (coords[:, 1:].max(dim=0).values + 1).tolist()
    rows = [("scene", f"{n} voxels, bounding grid {extent[0]}x{extent[1]}x{extent[2]}", "")]

    def kmap() -> None:
        get_kernel_map(SparseTensor(feats, coords).caches, 1, 3, 1, 1)

    x = SparseTensor(feats.clone().requires_grad_(), coords)
    pairs = sum(len(i) for i in get_kernel_map(x.caches, 1, 3, 1, 1).in_idx)
    rows.append(("kernel map 3x3x3 (build)", f"{pairs} pairs", median_seconds(kmap, args.repeats, device)))

    def sparse_step() -> None:
        conv(x).F.square().sum().backward()

    rows.append(("sparse conv 32->32 k3 fwd+bwd", "map cached", median_seconds(sparse_step, args.repeats, device)))

    dense_in = torch.zeros(1, 32, *extent, device=device)
    dense_in[0, :, coords[:, 1].long(), coords[:, 2].long(), coords[:, 3].long()] = feats.t()
    dense_in.requires_grad_()
    dense_w = conv.kernel.detach().reshape(3, 3, 3, 32, 32).permute(4, 3, 2, 1, 0).contiguous().requires_grad_()

    def dense_step() -> None:
        F.conv3d(dense_in, dense_w, padding=1).square().sum().backward()

    rows.append(("dense conv3d 32->32 k3 fwd+bwd", "bounding grid", median_seconds(dense_step, args.dense_repeats, device)))

    down, up = spnn.Conv3d(32, 32, 2, stride=2).to(device), spnn.Conv3d(32, 32, 2, stride=2, transposed=True).to(device)

    def down_up() -> None:
        up(down(SparseTensor(feats.clone().requires_grad_(), coords))).F.square().sum().backward()

    rows.append(("k2s2 down + transposed up fwd+bwd", "incl. map build", median_seconds(down_up, args.repeats, device)))

    model = MinkUNet(4, num_classes=20, width=args.width, backend="torch").to(device)
    model_feats = torch.randn(n, 4, device=device)
    labels = torch.randint(0, 20, (n,), device=device)

    def model_step() -> None:
        model.zero_grad()
        F.cross_entropy(model(SparseTensor(model_feats, coords)), labels).backward()

    params = sum(p.numel() for p in model.parameters()) / 1e6
    rows.append((f"MinkUNet cr={args.width} fwd+bwd", f"{params:.1f}M params, incl. maps", median_seconds(model_step, 3, device)))

    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"| {'what':<36} | {'detail':<42} | {'median s':>9} |")
    print(f"|{'-' * 38}|{'-' * 44}|{'-' * 11}|")
    for what, detail, seconds in rows:
        value = f"{seconds:9.3f}" if isinstance(seconds, float) else f"{seconds:>9}"
        print(f"| {what:<36} | {detail:<42} | {value} |")


if __name__ == "__main__":
    main()
