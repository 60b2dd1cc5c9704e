"""The training loop: optimiser and schedule, AMP, clipping, logging, checkpoints, exact resume, DDP.

One process, or one per GPU/CPU worker under torchrun (WORLD_SIZE > 1: gloo on CPU, NCCL on
CUDA; rank 0 logs and checkpoints). Resume restores model, optimiser, schedule, AMP scaler, the
method's own state (memory bank), every RNG and the position inside the epoch; samples are a
function of (seed, epoch, index) (train/engine/dataset.py), so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from shared.config import Pipeline
from train.engine.checkpoint import inference_record, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from train.engine.dataset import SceneDataset
from train.engine.loader import EpochBatchSampler, EpochSampler, make_loader
from train.engine.methods import Method, build_method, method_class

log = logging.getLogger(__name__)

CHECKPOINT = "last.pt"
VAL_LOG = "val.csv"  # the learning curve: one row per validation (train.eval_every_epochs)
BEST = "best.pt"  # the checkpoint of the best val mIoU so far, where validation runs


# ----------------------------------------------------------------------------- setup helpers
def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the torchrun process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, device


def cpu_threads(num_workers: int, world: int = 1) -> int:
    """Intra-op threads for training on CPU where OMP_NUM_THREADS does not say: the cores left
    after the loader workers, shared among the processes of a run. OpenMP threads waiting for a
    core that another process holds spin: on a busy 2-core machine two threads beside one loader
    worker made steps 12x slower than one thread (84 s vs 7 s for 3 steps)."""
    return max(1, ((os.cpu_count() or 1) - num_workers * world) // world)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(params: list[torch.nn.Parameter], cfg, device: torch.device) -> torch.optim.Optimizer:
    """SGD, or AdamW fused into one kernel per step on CUDA and CPU (torch >= 2.4): a few launches
    instead of several per parameter tensor, and its step counters stay on the device."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type in ("cuda", "cpu"))


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `total` (per step)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def tensorboard_writer(path: Path, purge_step: int | None) -> Any | None:
    """A TensorBoard SummaryWriter, or None (with a warning) where tensorboard is not installed:
    a GPU machine with only torch, numpy, numba, zarr and tqdm still trains (log.csv has every row)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed: no curves under %s (log.csv still has every step)", path)
        return None
    return SummaryWriter(str(path), purge_step=purge_step)


class CSVLog:
    """Per-step rows in `log.csv`; on resume, rows past the checkpoint's step are dropped."""

    def __init__(self, path: Path, columns: list[str], resume_step: int | None):
        self.path, self.columns = path, columns
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns, extrasaction="ignore").writerow(row)


# ----------------------------------------------------------------------------- the loop
class Trainer:
    """Holds everything one training run needs; `run()` trains until the schedule (or max_steps) ends."""

    def __init__(self, pipeline: Pipeline, resume: bool = False, max_steps: int | None = None):
        self.pipeline, self.cfg = pipeline, pipeline.train
        self.rank, self.world, self.device = init_distributed()
        if self.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(cpu_threads(self.cfg.num_workers, self.world))
        self.max_steps = max_steps
        seed_everything(self.cfg.seed + self.rank)
        self.out_dir = Path(self.cfg.out_dir)
        self.checkpoint_path = self.out_dir / CHECKPOINT

        method = method_class(self.cfg)
        self.dataset = SceneDataset(pipeline, "train", fields=method.fields_for(self.cfg),
                                    target=method.target_for(self.cfg))
        self.method: Method = build_method(pipeline, self.dataset, self.device)
        self.model = self.method.model.to(self.device)
        # Every parameter gets a gradient at every step (methods.py builds only the heads its
        # settings train), so DDP needs no find_unused_parameters.
        self.ddp = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.world > 1 else self.model
        )
        self.sampler = EpochSampler(self.dataset, self.world, self.rank, seed=self.cfg.seed)
        self.steps_per_epoch = math.ceil(self.sampler.num_samples / self.cfg.batch_size)
        self.total_steps = self.cfg.epochs * self.steps_per_epoch
        self.optimizer = make_optimizer([p for p in self.method.parameters() if p.requires_grad], self.cfg, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.cfg.warmup_steps, self.total_steps)
        )
        self.precision = self.method.precision
        self.precision.allow_tf32()
        self.scaler = self.precision.grad_scaler()
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_miou = -1.0
        resumed = resume and self.checkpoint_path.is_file()
        if resume and not resumed:
            log.warning("--resume: no checkpoint at %s; starting from scratch", self.checkpoint_path)
        if resumed:
            self._restore(load_checkpoint(self.checkpoint_path))

        self.writer: Any | None = None
        self.csv: CSVLog | None = None
        self.val_csv: CSVLog | None = None
        if self.rank == 0:
            log.info("fit %s: %s", self.cfg.method, "; ".join(f"{k} {v}" for k, v in self.method.run_info().items()))
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.writer = tensorboard_writer(self.out_dir / "tb", self.step if resumed else None)
            columns = ["step", "epoch", "lr", "loss", *self.method.loss_names, "points_per_s", "data_s", "step_s"]
            self.csv = CSVLog(self.out_dir / "log.csv", columns, self.step if resumed else None)
            self.val_csv = CSVLog(self.out_dir / VAL_LOG, ["step", "epoch", "mIoU", "mAcc"], self.step if resumed else None)

    # ------------------------------------------------------------------ checkpoint state
    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "method_state": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_miou": self.best_miou,
            "train_config": asdict(self.cfg),
            "inference": inference_record(self.pipeline, self.method),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method_state"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when saved without float16 scaling
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best_miou = state["best_miou"]
        log.info("resumed from %s at step %d (epoch %d, batch %d)", self.checkpoint_path, self.step, self.epoch,
                 self.batch_in_epoch)

    def save(self) -> None:
        if self.rank == 0:
            save_checkpoint(self.state(), self.checkpoint_path)

    # ------------------------------------------------------------------ training
    def train_step(self, batch) -> tuple[float, dict[str, float]]:
        """One optimiser step; (loss, its logged components), read on the host in one transfer."""
        batch = batch.to(self.device)
        with self.precision.autocast():
            out = self.ddp(self.method.sparse_input(batch))
            loss, parts = self.method.loss(out, batch, self.epoch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        values = torch.stack([loss.detach().float(), *(v.float() for v in parts.values())]).tolist()
        return values[0], dict(zip(parts, values[1:]))

    def run(self) -> list[float]:
        """Train; returns this process's per-step losses (for tests and benchmarks)."""
        losses: list[float] = []
        bar = tqdm(total=self.total_steps, initial=self.step, disable=self.rank != 0, desc=self.cfg.method,
                   unit="step", dynamic_ncols=True)
        # One loader iterator for all remaining epochs: no wait for workers at epoch boundaries.
        batches = EpochBatchSampler(self.sampler, self.cfg.batch_size, self.epoch, self.cfg.epochs, skip=self.batch_in_epoch)
        loader = make_loader(self.dataset, self.cfg.batch_size, self.cfg.num_workers, batches) if not self._stop() else []
        t_data = time.perf_counter()
        for batch in loader:
            t_step = time.perf_counter()
            loss, parts = self.train_step(batch)
            done = time.perf_counter()
            self.step += 1
            self.batch_in_epoch += 1
            losses.append(loss)
            points = len(batch.coords) * self.world
            self._log(loss, parts, points / (done - t_data), t_step - t_data, done - t_step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", pts_s=f"{points / (done - t_data):.0f}", epoch=self.epoch)
            if self.batch_in_epoch == self.steps_per_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
                self._maybe_validate()
            if self.step % self.cfg.checkpoint_every == 0:
                self.save()
            if self._stop():
                break
            t_data = time.perf_counter()
        self.save()
        bar.close()
        if self.writer is not None:
            self.writer.close()
        return losses

    def _stop(self) -> bool:
        return self.max_steps is not None and self.step >= self.max_steps

    def _log(self, loss: float, parts: dict[str, float], pts_s: float, data_s: float, step_s: float) -> None:
        if self.rank != 0:
            return
        row = {"step": self.step, "epoch": self.epoch, "lr": self.scheduler.get_last_lr()[0], "loss": loss, **parts,
               "points_per_s": pts_s, "data_s": data_s, "step_s": step_s}
        self.csv.write(row)
        if self.writer is None:
            return
        for k, v in row.items():
            if k not in ("step", "epoch"):
                self.writer.add_scalar(f"train/{k}", v, self.step)

    def _maybe_validate(self) -> None:
        every = self.cfg.eval_every_epochs
        if not every or self.epoch % every:
            return
        if self.rank == 0:
            from train.reports.evaluate import validate

            result = validate(self.pipeline, self.method, self.device)
            if self.writer is not None:
                self.writer.add_scalar("val/mIoU", result.miou, self.step)
            log.info("epoch %d: val mIoU %.2f", self.epoch, 100 * result.miou)
            self.val_csv.write({"step": self.step, "epoch": self.epoch, "mIoU": result.miou, "mAcc": result.macc})
            if result.miou > self.best_miou:
                self.best_miou = result.miou
                save_checkpoint(self.state(), self.out_dir / BEST)
        if self.world > 1:
            dist.barrier()


def fit(pipeline: Pipeline, resume: bool = False, max_steps: int | None = None) -> list[float]:
    """Train the pipeline's method; writes `<out_dir>/last.pt` (and `best.pt` where validation
    runs), `log.csv`, `val.csv` (one row per validation: the learning curve) and `tb/`."""
    trainer = Trainer(pipeline, resume=resume, max_steps=max_steps)
    try:
        return trainer.run()
    finally:
        if trainer.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
