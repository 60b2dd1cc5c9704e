"""Training losses: HICL's correlation terms (correlation.py, memory_bank.py) and the baselines
(baselines.py). Intra-set refinement lives in shared.refine: preprocessing needs it too."""

from train.losses.baselines import clip2scene_loss, pseudo_ce_loss
from train.losses.correlation import HICLLoss, correlation_loss, set_prototypes
from train.losses.memory_bank import MemoryBank

__all__ = [
    "HICLLoss",
    "MemoryBank",
    "clip2scene_loss",
    "correlation_loss",
    "pseudo_ce_loss",
    "set_prototypes",
]
