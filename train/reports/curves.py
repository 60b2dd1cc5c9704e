"""Learning curves of an experiment: validation mIoU against steps, one line per run (mean over
seeds, a ± std band), with the scores the networks are judged by as horizontal lines (the raw
and refined pseudo-labels they learned from, the voxel ceiling). It shows whether a budget lets
the networks reach their plateau, and where that plateau sits against their teachers.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CURVES = "learning_curves.png"  # in an experiment's report folder
Curve = list[dict[str, float]]  # points {"step", "epoch", "mIoU" (%)} of one seed


def mean_curve(seeds: list[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean mIoU, std over seeds) at the steps every seed was validated at (seeds of one
    run share them; a run cut short contributes its common prefix)."""
    common = sorted(set.intersection(*({p["step"] for p in c} for c in seeds)))
    values = np.array([[next(p["mIoU"] for p in c if p["step"] == s) for s in common] for c in seeds], dtype=float)
    std = values.std(axis=0, ddof=1) if len(seeds) > 1 else np.zeros(len(common))
    return np.array(common), values.mean(axis=0), std


def plot_learning_curves(runs: dict[str, list[Curve]], lines: dict[str, float], path: str | Path,
                         title: str = "") -> Path:
    """PNG of each run's mean curve and band (runs: label -> per-seed curves; runs without a
    curve are left out) and a dashed line per reference score (lines: name -> mIoU %)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, seeds in runs.items():
        seeds = [c for c in seeds if c]
        if not seeds:
            continue
        steps, mean, std = mean_curve(seeds)
        name = f"{label} ({len(seeds)} seed{'s' * (len(seeds) > 1)})"
        (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=name)
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    styles = ("--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1)))
    for i, (name, value) in enumerate(lines.items()):
        ax.axhline(value, color="0.35", linestyle=styles[i % len(styles)], linewidth=1, label=f"{name}: {value:.2f}")
    ax.set_xlabel("training step")
    ax.set_ylabel("val mIoU (%)")
    ax.set_ylim(0, 102)  # a line at 100 stays visible
    ax.grid(alpha=0.3)
    ax.set_title(title or "validation mIoU (mean ± std over seeds)", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path
