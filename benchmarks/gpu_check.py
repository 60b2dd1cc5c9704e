"""`make gpu-check`: what a machine with a GPU should show, in one table and a few minutes.

1. equality: every importable sparse backend on the device against the pure-PyTorch backend on
   CPU, in value and gradient (float64 where the backend has it), on a small MinkUNet batch;
2. AMP against float32: a MinkUNet's logits and gradients under bf16 and fp16 autocast against
   the same network in float32, on the device;
3. speed: benchmarks/bench_sparse.py on the device for every importable backend, in float32 and
   under the AMP dtype train.amp = "auto" picks, with the goal for MinkUNet cr=1 under AMP
   (<= 60 ms fwd+bwd on the 53k-voxel room, an H100's figure) and the peak GPU memory;
4. training: every method (gt, pseudo-ce, clip2scene, hicl) with both heads (linear, text;
   CLIP2Scene has its own) a few steps each in bf16 and in fp16 on a toy store this script
   writes (no dataset needed): loss, steps/s, host syncs in one step (CUDA's sync debug mode;
   on CPU the operations that would sync, tests/sync_proxies.py), peak GPU memory;
5. evaluation of each method's checkpoint on the store's held-out room;
6. resume: a run stopped half-way and resumed (`--resume`) against an uninterrupted one, loss
   for loss (deterministic algorithms on, so the comparison is exact).

Imports only torch, numpy, numba, tqdm, tensorboard (optional) and zarr (with numcodecs, donfig
and google-crc32c) besides the standard library: `scripts/stage_gpu_wheels.sh` downloads the
wheels a bare GPU machine lacks (README, "Checking a GPU machine"; tests/test_gpu_check.py). `--device cpu --quick` runs the same steps small on a CPU
to check the script itself. Exit status 1 when a check fails.

    python benchmarks/gpu_check.py                       # on the GPU machine, < 8 minutes
    python benchmarks/gpu_check.py --device cpu --quick  # the same steps, small, on CPU
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# cuBLAS is deterministic only with a fixed workspace (the resume check); set before CUDA starts.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from bench_sparse import run as bench_sparse  # noqa: E402
from device_equality import amp_errors, max_errors  # noqa: E402
from shared.config import load_pipeline  # noqa: E402
from sync_proxies import count_step  # noqa: E402
from toy_store import make_toy_store  # noqa: E402
from train.amp import resolve_precision  # noqa: E402
from train.engine import loop  # noqa: E402
from train.engine.dataset import SceneDataset  # noqa: E402
from train.engine.loop import Trainer  # noqa: E402
from train.reports.evaluate import load_method, validate  # noqa: E402
from train.sparse import select_backend  # noqa: E402
from train.sparse.backend import _import_spconv, _import_torchsparse  # noqa: E402
from train.sparse.nn import conv_algorithm  # noqa: E402

Row = tuple[str, str, str]
_bar = loop.tqdm
loop.tqdm = lambda *args, **kwargs: _bar(*args, **{**kwargs, "disable": True})  # the table is the output
GOAL_MINKUNET_AMP_S = 0.060  # MinkUNet cr=1 fwd+bwd on bench_sparse's room with AMP, an H100 (issue 21)
# Relative L2 error limits of AMP against float32 (output, input grad, weight grads): about 3x
# what CPU autocast gives for the same network (bf16 0.003 / 0.075 / 0.035, fp16 0.0003 / 0.05 / 0.02).
AMP_LIMITS = {"bf16": (0.01, 0.25, 0.1), "fp16": (0.002, 0.15, 0.05)}
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Every method with the heads it can have (CLIP2Scene's classifier is its own dot-product text
# head whatever train.head says); every term on from the first step.
METHODS = {"gt": ("linear", "text"), "pseudo-ce": ("linear", "text"), "clip2scene": ("own",), "hicl": ("linear", "text")}
ALL_TERMS = {"train.clip2scene.switch_epoch": 0, "train.hicl.feedback_warmup_epochs": 0}


def verdict(passed: bool, why: str = "") -> str:
    return ("pass" if passed else "FAIL") + (f" ({why})" if why else "")


def importable_backends(device: torch.device) -> list[str]:
    """torch always; torchsparse and spconv where they import (on CPU: spconv values only)."""
    names = ["torch"]
    if _import_torchsparse() is not None and device.type == "cuda":
        names.append("torchsparse")
    if _import_spconv()[0] is not None:
        names.append("spconv")
    return names


def peak_memory(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB peak" if device.type == "cuda" else "n/a on CPU"


@contextmanager
def measured_memory(device: torch.device) -> Iterator[None]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield


def equality_rows(device: torch.device, backends: list[str]) -> list[tuple[Row, bool]]:
    rows = []
    for name in backends:
        double = name == "torch"  # spconv's and torchsparse's kernels are float32/float16 only
        grads = device.type == "cuda" or name == "torch"  # spconv's CPU build has no backward
        # the GPU's algorithm (also on CPU, where auto would pick the reference's)
        errors = max_errors(name, str(device), torch.float64 if double else torch.float32, grads=grads,
                            algorithm="gather")
        limit = 1e-10 if double else 1e-2  # float32 kernels may multiply in TF32 (10-bit mantissa)
        detail = ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
        how = f"{device.type}, gather" if name == "torch" else device.type
        what = f"equality {name} ({'float64' if double else 'float32'}, {how} vs CPU pairs)"
        passed = max(errors.values()) < limit
        rows.append(((what, detail, verdict(passed, f"< {limit:g}")), passed))
    return rows


def amp_rows(device: torch.device, quick: bool) -> list[tuple[Row, bool]]:
    rows = []
    for name, dtype in AMP_DTYPES.items():
        with conv_algorithm("gather"):
            errors = amp_errors("torch", str(device), dtype, width=0.25 if quick else 1.0)
        limits = AMP_LIMITS[name]
        passed = all(errors[k] < limit for k, limit in zip(errors, limits))
        detail = ", ".join(f"{k} {v:.1e} (< {limit:g})" for (k, v), limit in zip(errors.items(), limits))
        rows.append(((f"AMP {name} vs float32 (MinkUNet logits, gradients)", detail, verdict(passed, "relative L2")), passed))
    return rows


def bench_rows(device: torch.device, backends: list[str], quick: bool) -> list[tuple[Row, bool]]:
    rows = []
    for name in backends:
        if device.type == "cpu" and name != "torch":
            continue  # no backward on CPU
        # float32, and the dtype train.amp = "auto" picks (on CPU, where auto is off: bf16 anyway)
        amp = "bf16" if device.type == "cpu" else resolve_precision("auto", device, select_backend(name, device)).name
        for precision in ("off", amp):
            with measured_memory(device):
                table = bench_sparse(str(device), name, precision, width=0.25 if quick else 1.0,
                                     repeats=1 if quick else 5, dense_repeats=0 if quick else 2,
                                     model_repeats=1 if quick else 5, crop_x=30 if quick else 0)
            for what, detail, seconds in table[1:]:
                row, passed = (f"bench {name} {precision}: {what}", detail, f"{1000 * seconds:.1f} ms"), True
                if what.startswith("MinkUNet") and precision != "off":
                    goal = f"goal <= {1000 * GOAL_MINKUNET_AMP_S:.0f} ms"
                    if device.type == "cuda" and not quick:
                        passed = seconds <= GOAL_MINKUNET_AMP_S
                        row = (row[0], f"{detail}, {peak_memory(device)}", f"{row[2]}: {verdict(passed, goal)}")
                    else:
                        row = (row[0], detail, f"{row[2]} ({goal} on a GPU, full size)")
                rows.append((row, passed))
    return rows


def count_syncs(trainer: Trainer, batch) -> tuple[tuple[float, dict[str, float]], str]:
    """One training step and its host syncs: CUDA's sync debug mode on a GPU (every operation that
    waits, the optimiser's too), the sync proxies on CPU (tests/sync_proxies.py)."""
    if trainer.device.type != "cuda":
        with conv_algorithm("gather"):
            result, proxies = count_step(trainer.train_step, trainer.optimizer, batch)
        return result, f"{proxies.total} sync proxies ({', '.join(f'{k} {v}' for k, v in proxies.counts.items())})"
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = trainer.train_step(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return result, f"{sum('synchroniz' in str(w.message) for w in caught)} CUDA syncs"


def short_fit(path: Path, out: Path, overrides: dict, steps: int, resume: bool = False,
              count: bool = True) -> tuple[Trainer, list[float], str]:
    """`steps` training steps (the loop's own, checkpoint and log included); with `count`, the
    third step's host syncs counted (on CPU with the GPU's convolution algorithm)."""
    trainer = Trainer(load_pipeline(path, {**overrides, "train.out_dir": str(out)}), resume=resume, max_steps=steps)
    step, calls, syncs = trainer.train_step, [0], ["not counted"]

    def counted(batch):
        calls[0] += 1
        if calls[0] != 3:
            return step(batch)
        result, syncs[0] = count_syncs(trainer, batch)
        return result

    if count:
        trainer.train_step = counted
    return trainer, trainer.run(), syncs[0]


def fit_rows(device: torch.device, quick: bool, tmp: Path) -> list[tuple[Row, bool]]:
    points, scenes, steps = (3000, 3, 4) if quick else (60000, 7, 12)
    path = make_toy_store(tmp / "store", scenes=scenes, points=points, method="hicl")
    base = {"train.backend": "torch", "train.epochs": 1000, "train.batch_size": 2,
            "train.num_workers": 0 if device.type == "cpu" else 2, "train.voxel_size": 0.1 if quick else 0.02,
            "train.width": 0.25 if quick else 1.0, "train.checkpoint_every": 10**9,
            "train.hicl.queries_per_scene": 256 if quick else 4096, **ALL_TERMS}
    rows, evaluated = [], set()
    for method, heads in METHODS.items():
        for head in heads:
            for amp in AMP_DTYPES:
                overrides = {**base, "train.method": method, "train.amp": amp,
                             **({"train.head": head} if head != "own" else {})}
                out = tmp / f"run-{method}-{head}-{amp}"
                start = time.perf_counter()
                with measured_memory(device):
                    trainer, losses, syncs = short_fit(path, out, overrides, steps)
                seconds = time.perf_counter() - start
                finite = len(losses) == steps and all(math.isfinite(v) for v in losses)
                rows.append(((f"fit {method} head={head} {amp}", f"{steps} steps in {seconds:.1f} s, loss {losses[0]:.3f} -> "
                              f"{losses[-1]:.3f}; {syncs} in one step", f"{verdict(finite, 'finite losses')}, "
                              f"{peak_memory(device)}"), finite))
                if method not in evaluated:
                    evaluated.add(method)
                    rows.append(eval_row(trainer.pipeline, out, device, f"eval {method} head={head} {amp}"))
    return rows


def eval_row(pipeline, out: Path, device: torch.device, what: str) -> tuple[Row, bool]:
    """The run's checkpoint (loaded on the CPU, then moved) on the device, scored."""
    dataset = SceneDataset(pipeline, "val", with_gt=True, fields=())
    start = time.perf_counter()
    result = validate(pipeline, load_method(pipeline, out / "last.pt", dataset, device), device)
    ok = math.isfinite(result.miou)
    return (what, f"{len(dataset)} held-out room(s), checkpoint loaded onto {device.type}",
            f"mIoU {100 * result.miou:.2f} in {time.perf_counter() - start:.1f} s"), ok


def resume_rows(device: torch.device, quick: bool, tmp: Path) -> list[tuple[Row, bool]]:
    """HICL (memory bank, sampling generator, AMP) stopped half-way and resumed, against the same
    steps uninterrupted; where they differ, a second uninterrupted run tells nondeterminism apart."""
    points, steps = (3000, 4) if quick else (60000, 8)
    path = make_toy_store(tmp / "resume-store", scenes=3, points=points, method="hicl")
    overrides = {"train.method": "hicl", "train.backend": "torch", "train.amp": "bf16", "train.head": "text",
                 "train.epochs": 1000, "train.batch_size": 1, "train.num_workers": 0,
                 "train.voxel_size": 0.1 if quick else 0.02, "train.width": 0.25 if quick else 1.0,
                 "train.checkpoint_every": 10**9, "train.hicl.queries_per_scene": 256, **ALL_TERMS}
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        whole = short_fit(path, tmp / "whole", overrides, steps, count=False)[1]
        first = short_fit(path, tmp / "parts", overrides, steps // 2, count=False)[1]
        rest = short_fit(path, tmp / "parts", overrides, steps, resume=True, count=False)[1]
        again = short_fit(path, tmp / "again", overrides, steps, count=False)[1] if first + rest != whole else whole
    finally:
        torch.use_deterministic_algorithms(False)
    exact = first + rest == whole
    gap = max(abs(a - b) for a, b in zip(first + rest, whole)) if len(first + rest) == len(whole) else float("inf")
    why = "resumed == uninterrupted, loss for loss" if exact else (
        f"max |diff| {gap:.2e}; two uninterrupted runs {'agree' if again == whole else 'differ too'}")
    return [((f"resume hicl text bf16 on {device.type}", f"{len(first)} steps + {len(rest)} resumed vs {len(whole)}",
              verdict(exact, why)), exact)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes (for a CPU run of the script)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device; run with --device cpu --quick to check the script", file=sys.stderr)
        return 2
    if device.type == "cpu":  # small CPU check: thread hand-offs cost more than they save on a shared machine
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # the trainer's own thread count respects it
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    started = time.perf_counter()
    backends = importable_backends(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False) if device.type == "cuda" else "n/a"
    checked: list[tuple[Row, bool]] = [
        (("machine", f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}", f"bf16: {bf16}"), True),
        (("backends", ", ".join(backends), ""), True),
    ]
    for part in (lambda: equality_rows(device, backends), lambda: amp_rows(device, args.quick),
                 lambda: bench_rows(device, backends, args.quick)):
        checked += part()
    with tempfile.TemporaryDirectory() as tmp:
        checked += fit_rows(device, args.quick, Path(tmp))
        checked += resume_rows(device, args.quick, Path(tmp))
    failed = sum(not ok for _, ok in checked)
    checked.append((("total", f"{len(checked) - 2} checks, {failed} failed", f"{time.perf_counter() - started:.0f} s"), True))
    rows = [row for row, _ in checked]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(("check", "detail", "result"), width)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in width) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, width)) + " |")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
