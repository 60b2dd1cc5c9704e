"""One DDP rank of tests/test_train_processes.py's every-method check: a few steps of each
configuration in one process group, then the ranks compare their parameters (DDP averaged the
gradients, so they must be equal). Run under torchrun: `python -m torch.distributed.run
--standalone --nproc_per_node 2 tests/ddp_methods.py STORE.toml OUT_DIR`."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.config import load_pipeline  # noqa: E402
from train.engine.loop import Trainer  # noqa: E402

REFINEMENT_ONLY = {"train.hicl.intra_set": False, "train.hicl.intra_scene": False, "train.hicl.inter_scene": False,
                   "train.hicl.feedback": False}
CONFIGS = {
    "gt": {"train.method": "gt"},
    "pseudo-ce": {"train.method": "pseudo-ce"},
    "clip2scene": {"train.method": "clip2scene", "train.clip2scene.switch_epoch": 0},
    "clip2scene-no-distill": {"train.method": "clip2scene", "train.clip2scene.distill_weight": 0.0},
    "hicl": {"train.method": "hicl", "train.hicl.feedback_warmup_epochs": 0, "train.head": "text"},
    "hicl-refinement-only": {"train.method": "hicl", **REFINEMENT_ONLY},
    "hicl-feedback-warming-up": {"train.method": "hicl", **REFINEMENT_ONLY, "train.hicl.feedback": True},
}


def main(store: str, out: str) -> None:
    for name, overrides in CONFIGS.items():
        settings = {**overrides, "train.batch_size": 1, "train.hicl.queries_per_scene": 32,
                    "train.out_dir": f"{out}/{name}"}
        trainer = Trainer(load_pipeline(Path(store), settings), max_steps=3)
        losses = trainer.run()
        flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        everyone = [torch.zeros_like(flat) for _ in range(trainer.world)]
        dist.all_gather(everyone, flat)
        same = all(torch.equal(everyone[0], other) for other in everyone[1:])
        print(f"rank {trainer.rank} {name}: {len(losses)} steps, parameters equal across ranks: {same}", flush=True)
        if not same:
            raise SystemExit(f"{name}: ranks diverged")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
