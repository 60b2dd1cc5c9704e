"""`make gpu-check`: what a machine with a GPU should show, in one table and a few minutes.

1. equality: every importable sparse backend on the device against the pure-PyTorch backend on
   CPU, in value and gradient (float64 where the backend has it), on a small MinkUNet batch;
2. speed: benchmarks/bench_sparse.py on the device for every importable backend, in float32
   and under the AMP dtype train.amp = "auto" picks;
3. training: a short HICL fit with AMP on a toy store this script writes (no dataset needed),
   then the checkpoint scored on the store's held-out room, for every backend that can train.

Needs only torch, numpy, numba, zarr and tqdm (no open3d, dask, matplotlib, tensorboard or
pytest). `--device cpu --quick` runs the same steps small on a CPU to check the script itself.
Exit status 1 when an equality check fails or a loss is not finite.

    python benchmarks/gpu_check.py                       # on the GPU machine, < 8 minutes
    python benchmarks/gpu_check.py --device cpu --quick  # the same steps, small, on CPU
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from bench_sparse import run as bench_sparse  # noqa: E402
from device_equality import max_errors  # noqa: E402
from shared.config import load_pipeline  # noqa: E402
from toy_store import make_toy_store  # noqa: E402
from train.amp import resolve_precision  # noqa: E402
from train.sparse import select_backend  # noqa: E402
from train.sparse.backend import _import_spconv, _import_torchsparse  # noqa: E402

Row = tuple[str, str, str]


def importable_backends(device: torch.device) -> list[str]:
    """torch always; torchsparse and spconv where they import (on CPU: spconv values only)."""
    names = ["torch"]
    if _import_torchsparse() is not None and device.type == "cuda":
        names.append("torchsparse")
    if _import_spconv()[0] is not None:
        names.append("spconv")
    return names


def equality_rows(device: torch.device, backends: list[str]) -> tuple[list[Row], bool]:
    rows, ok = [], True
    for name in backends:
        double = name == "torch"  # spconv's and torchsparse's kernels are float32/float16 only
        grads = device.type == "cuda" or name == "torch"  # spconv's CPU build has no backward
        algorithm = "gather"  # the GPU's algorithm (also on CPU, where auto would pick the reference's)
        errors = max_errors(name, str(device), torch.float64 if double else torch.float32, grads=grads,
                            algorithm=algorithm)
        limit = 1e-10 if double else 1e-2  # float32 kernels may multiply in TF32 (10-bit mantissa)
        passed = max(errors.values()) < limit
        ok &= passed
        detail = ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
        how = f"{device.type}, gather" if name == "torch" else device.type
        what = f"equality {name} ({'float64' if double else 'float32'}, {how} vs CPU pairs)"
        rows.append((what, detail, f"{'pass' if passed else 'FAIL'} (< {limit:g})"))
    return rows, ok


def bench_rows(device: torch.device, backends: list[str], quick: bool) -> list[Row]:
    rows = []
    for name in backends:
        if device.type == "cpu" and name != "torch":
            continue  # no backward on CPU
        # float32, and the dtype train.amp = "auto" picks (on CPU, where auto is off: bf16 anyway)
        amp = "bf16" if device.type == "cpu" else resolve_precision("auto", device, select_backend(name, device)).name
        for precision in ("off", amp):
            table = bench_sparse(str(device), name, precision, width=0.25 if quick else 1.0, repeats=1 if quick else 5,
                                 dense_repeats=0 if quick else 2, model_repeats=1 if quick else 5,
                                 crop_x=30 if quick else 0)
            for what, detail, seconds in table[1:]:
                rows.append((f"bench {name} {precision}: {what}", detail, f"{1000 * seconds:.1f} ms"))
    return rows


def fit_rows(device: torch.device, backends: list[str], quick: bool, tmp: Path) -> tuple[list[Row], bool]:
    from train.engine.dataset import SceneDataset
    from train.reports.evaluate import load_model, validate
    from train.engine.loop import fit

    points, scenes, steps = (3000, 3, 4) if quick else (60000, 7, 40)
    path = make_toy_store(tmp / "store", scenes=scenes, points=points, method="hicl")
    rows, ok = [], True
    for name in backends:
        if device.type == "cpu" and name != "torch":
            continue
        out = tmp / f"run-{name}"
        overrides = {"train.backend": name, "train.amp": "bf16" if device.type == "cpu" else "auto",
                     "train.epochs": 1000, "train.batch_size": 2, "train.num_workers": 2,
                     "train.voxel_size": 0.1 if quick else 0.02, "train.width": 0.25 if quick else 1.0,
                     "train.out_dir": str(out), "train.checkpoint_every": 10**9, "train.hicl.feedback_warmup_epochs": 1}
        pipeline = load_pipeline(path, overrides)
        start = time.perf_counter()
        losses = fit(pipeline, max_steps=steps)
        seconds = time.perf_counter() - start
        with (out / "log.csv").open() as f:
            log = list(csv.DictReader(f))[1:]  # the first step pays for start-up
        finite = all(math.isfinite(v) for v in losses)
        ok &= finite
        step_s = sum(float(r["step_s"]) + float(r["data_s"]) for r in log) / max(1, len(log))
        voxels = sum(float(r["points_per_s"]) for r in log) / max(1, len(log))
        wait = max(float(r["data_s"]) for r in log) if log else float("nan")
        precision = resolve_precision(overrides["train.amp"], device, select_backend(name, device)).name
        rows.append((f"fit hicl {name} {precision}", f"{len(losses)} steps in {seconds:.1f} s, loss {losses[0]:.3f} -> "
                     f"{losses[-1]:.3f}", f"{1 / step_s:.2f} steps/s, {voxels:,.0f} vox/s, max loader wait {wait:.2f} s"
                     + ("" if finite else " NON-FINITE LOSS")))
        dataset = SceneDataset(pipeline, "val", with_gt=True, fields=())
        start = time.perf_counter()
        result = validate(pipeline, load_model(pipeline, out / "last.pt", dataset, device), device)
        rows.append((f"eval {name} {precision}", f"{len(dataset)} held-out room(s)",
                     f"mIoU {100 * result.miou:.2f} in {time.perf_counter() - start:.1f} s"))
    return rows, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes (for a CPU run of the script)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device; run with --device cpu --quick to check the script", file=sys.stderr)
        return 2
    if device.type == "cpu":
        torch.set_num_threads(1)  # small CPU check: thread hand-offs cost more than they save on a shared machine
    started = time.perf_counter()
    backends = importable_backends(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False) if device.type == "cuda" else "n/a"
    rows: list[Row] = [("machine", f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}", f"bf16: {bf16}"),
                       ("backends", ", ".join(backends), "")]
    equal, ok_equal = equality_rows(device, backends)
    rows += equal
    rows += bench_rows(device, backends, args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        fits, ok_fit = fit_rows(device, backends, args.quick, Path(tmp))
    rows += fits
    rows.append(("total", "", f"{time.perf_counter() - started:.0f} s"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(("check", "detail", "result"), width)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in width) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, width)) + " |")
    return 0 if ok_equal and ok_fit else 1


if __name__ == "__main__":
    sys.exit(main())
