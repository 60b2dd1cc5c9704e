"""Speed of a sparse backend on a surface-like scene of ~50k voxels (a 2 cm room).

Times (median of --repeats runs): the 3x3x3 kernel-map build, a 32->32 channel submanifold
conv forward+backward next to a dense conv3d on the scene's bounding grid, a k2/s2 downsample
plus its transposed conv, and a MinkUNet forward+backward (kernel maps built inside, as in
training). --amp runs the forward passes under autocast (bf16 or fp16; the kernel map and the
dense reference rows too), --algo picks the pure-PyTorch conv algorithm (train/sparse/nn.py),
--backend another library (only the rows its API has).

    python benchmarks/bench_sparse.py [--device cuda] [--amp bf16] [--backend spconv] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages, not an installed copy

from train.models import MinkUNet  # noqa: E402
from train.sparse import select_backend  # noqa: E402
from train.sparse.kernel_map import get_kernel_map  # noqa: E402
from train.sparse.nn import conv_algorithm  # noqa: E402

AMP = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def run(device: str = "cpu", backend: str = "torch", amp: str = "off", algo: str = "auto", width: float = 1.0,
        repeats: int = 5, dense_repeats: int = 2, model_repeats: int = 3, crop_x: int = 0) -> list[tuple[str, str, float | str]]:
    """The benchmark's rows (what, detail, median seconds or a note); `crop_x` > 0 keeps the
    room's voxels with x < crop_x (a smaller scene for quick runs)."""
    dev = torch.device(device)
    ops = select_backend(backend, dev)
    dtype = AMP[amp]
    autocast = (lambda: torch.autocast(dev.type, dtype=dtype)) if dtype is not None else nullcontext
    torch.manual_seed(0)
    coords = room_scene()
    coords = (coords[coords[:, 1] < crop_x] if crop_x > 0 else coords).to(dev)
    n = len(coords)
    feats = torch.randn(n, 32, device=dev)
    extent = (coords[:, 1:].max(dim=0).values + 1).tolist()
    rows: list[tuple[str, str, float | str]] = [("scene", f"{n} voxels, bounding grid {extent[0]}x{extent[1]}x{extent[2]}", "")]
    conv = ops.Conv3d(32, 32, 3).to(dev)
    down, up = ops.Conv3d(32, 32, 2, stride=2).to(dev), ops.Conv3d(32, 32, 2, stride=2, transposed=True).to(dev)
    model = MinkUNet(4, num_classes=20, width=width, backend=ops).to(dev)
    model_feats, labels = torch.randn(n, 4, device=dev), torch.randint(0, 20, (n,), device=dev)

    def sparse_step(x) -> None:
        with autocast():
            y = conv(x).F.float().square().sum()
        y.backward()

    def down_up() -> None:
        with autocast():
            y = up(down(ops.SparseTensor(feats.clone().requires_grad_(), coords))).F.float().square().sum()
        y.backward()

    def model_step() -> None:
        model.zero_grad()
        with autocast():
            loss = F.cross_entropy(model(ops.SparseTensor(model_feats, coords)).float(), labels)
        loss.backward()

    with conv_algorithm(algo):
        if backend == "torch":
            x = ops.SparseTensor(feats.clone().requires_grad_(), coords)
            pairs = int((get_kernel_map(x.caches, 1, 3, 1, 1).neighbours < n).sum())
            rows.append(("kernel map 3x3x3 (build)", f"{pairs} pairs",
                         median_seconds(lambda: get_kernel_map(ops.SparseTensor(feats, coords).caches, 1, 3, 1, 1),
                                        repeats, dev)))
            rows.append(("sparse conv 32->32 k3 fwd+bwd", "map cached", median_seconds(lambda: sparse_step(x), repeats, dev)))
        else:
            rows.append(("sparse conv 32->32 k3 fwd+bwd", "incl. map",
                         median_seconds(lambda: sparse_step(ops.SparseTensor(feats.clone().requires_grad_(), coords)),
                                        repeats, dev)))
        if dense_repeats > 0:
            dense_in = torch.zeros(1, 32, *extent, device=dev)
            dense_in[0, :, coords[:, 1].long(), coords[:, 2].long(), coords[:, 3].long()] = feats.t()
            dense_in.requires_grad_()
            dense_w = torch.randn(32, 32, 3, 3, 3, device=dev, requires_grad=True)

            def dense_step() -> None:
                with autocast():
                    y = F.conv3d(dense_in, dense_w, padding=1).float().square().sum()
                y.backward()

            rows.append(("dense conv3d 32->32 k3 fwd+bwd", "bounding grid", median_seconds(dense_step, dense_repeats, dev)))
        rows.append(("k2s2 down + transposed up fwd+bwd", "incl. map build", median_seconds(down_up, repeats, dev)))
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append((f"MinkUNet cr={width} fwd+bwd", f"{params:.1f}M params, incl. maps", median_seconds(model_step, model_repeats, dev)))
    return rows


def print_table(rows: list[tuple[str, str, float | str]]) -> None:
    print(f"| {'what':<36} | {'detail':<42} | {'median s':>9} |")
    print(f"|{'-' * 38}|{'-' * 44}|{'-' * 11}|")
    for what, detail, seconds in rows:
        value = f"{seconds:9.3f}" if isinstance(seconds, float) else f"{seconds:>9}"
        print(f"| {what:<36} | {detail:<42} | {value} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="torch", choices=("torch", "torchsparse", "spconv"))
    parser.add_argument("--amp", default="off", choices=tuple(AMP), help="autocast dtype of the forward passes")
    parser.add_argument("--algo", default="auto", choices=("auto", "gather", "pairs"),
                        help="pure-PyTorch conv algorithm (auto: pairs on CPU, gather on a GPU)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dense-repeats", type=int, default=2, help="the dense reference is slow on CPU (0: skip it)")
    parser.add_argument("--model-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--width", type=float, default=1.0, help="MinkUNet channel multiplier (SPVNAS cr)")
    parser.add_argument("--crop-x", type=int, default=0, help="keep the voxels with x < this (0: the whole room)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = run(args.device, args.backend, args.amp, args.algo, args.width, args.repeats, args.dense_repeats,
               args.model_repeats, args.crop_x)
    algo = f", algo={args.algo}" if args.backend == "torch" else ""
    print(f"device={args.device} backend={args.backend}{algo} amp={args.amp} threads={torch.get_num_threads()} "
          f"torch={torch.__version__}")
    print_table(rows)


if __name__ == "__main__":
    main()
