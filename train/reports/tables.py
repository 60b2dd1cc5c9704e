"""An evaluation report folder: per-class tables (markdown, CSV, JSON) and a confusion-matrix plot.

The tables and the metric convention come from shared/metrics.py (the same code scores
pseudo-labels offline); this module adds the run's context and the figure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from shared.metrics import ACCURACY_CONVENTION, CONVENTION, IoUResult, summary_table, write_tables

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_confusion(result: IoUResult, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows = ground truth) as a PNG; empty rows stay blank."""
    cm = result.confusion.astype(np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(rows > 0, cm / rows, np.nan)
    n = len(result.names)
    fig, ax = plt.subplots(figsize=(2 + 0.45 * n, 1.5 + 0.45 * n))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(n), result.names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), result.names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title or f"mIoU {100 * result.miou:.2f}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def write_report(out_dir: str | Path, rows: dict[str, IoUResult], info: dict[str, Any]) -> list[Path]:
    """`results.{md,csv,json}` (one row per method; results.md ends with Pointcept's mIoU / mAcc /
    allAcc summary), `confusion.png` of the first row and
    `run.json` with `info` (checkpoint, method, scenes, settings) and the metric convention."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    note = "; ".join(f"{k}: {v}" for k, v in info.items() if isinstance(v, (str, int, float)))
    paths = write_tables(rows, out / "results", note=note)
    with (out / "results.md").open("a") as f:
        f.write("\n" + summary_table(rows) + "\n")
    first, result = next(iter(rows.items()))
    paths.append(plot_confusion(result, out / "confusion.png", title=f"{first}: mIoU {100 * result.miou:.2f}"))
    run = out / "run.json"
    run.write_text(json.dumps({**info, "convention": f"{CONVENTION} {ACCURACY_CONVENTION}",
                               "rows": {name: r.as_dict() for name, r in rows.items()}}, indent=2, default=str))
    paths.append(run)
    return paths
