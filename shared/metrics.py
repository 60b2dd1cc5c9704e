"""Semantic segmentation metrics and the per-class tables of every report.

Convention (design.md; written into every table): the confusion matrix counts points whose
ground truth is a benchmark class (ignored points are dropped first); IoU_c = TP/(TP+FP+FN) for
every class with ground-truth points among them; mIoU is the mean over those classes. A class
without ground truth there is "n/a" in every row, so rows scored on the same points average over
the same classes: a model that falsely predicts such a class is not scored 0 on it while another
shows n/a (its false predictions already count as misses of the points' true classes).

Differences between models trained with several seeds are tested here too: Welch's t-test
between two models' per-seed mIoUs, a one-sample t-test of a model against a fixed score (the
pseudo-labels it learned from), both two-sided.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

CONVENTION = (
    "IoU = TP/(TP+FP+FN) over points with a benchmark ground-truth class (ignored points dropped); "
    "mIoU = mean over the classes with ground truth among those points, the same classes for every row "
    "scored on them; n/a = class without ground truth there (predicting it counts as missing the true class)."
)
# Pointcept's accuracies (its SemSegEvaluator), over the same points: a class's accuracy is its
# recall; Pointcept averages every class (an absent one counting 0), here absent ones are n/a.
ACCURACY_CONVENTION = (
    "acc_c = TP/(points of class c); mAcc = mean over classes present in the ground truth; "
    "allAcc = correct points / all points with a benchmark class."
)


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, C) int64 counts (rows = ground truth, columns = prediction) and the per-class count of
    points left unlabelled (prediction outside 0..C-1, e.g. -1): gt < 0 is dropped, and an
    unlabelled point is a miss of its true class only (a false negative, in no column)."""
    pred = np.asarray(pred).astype(np.int64).ravel()
    gt = np.asarray(gt).astype(np.int64).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth differ in length: {pred.shape} vs {gt.shape}")
    keep = (gt >= 0) & (gt < num_classes)
    pred, gt = pred[keep], gt[keep]
    valid = (pred >= 0) & (pred < num_classes)
    cm = np.bincount(gt[valid] * num_classes + pred[valid], minlength=num_classes**2)
    cm = cm.reshape(num_classes, num_classes)
    missed = np.bincount(gt[~valid], minlength=num_classes)
    return cm, missed


@dataclass(frozen=True)
class IoUResult:
    names: tuple[str, ...]
    iou: np.ndarray  # (C,) float, NaN = n/a
    confusion: np.ndarray  # (C, C)
    missed: np.ndarray | None = None  # (C,) points of each class left unlabelled (in no column)

    @classmethod
    def from_counts(cls, names: tuple[str, ...] | list[str], confusion: np.ndarray,
                    missed: np.ndarray | None = None) -> "IoUResult":
        """The result of these counts (what `counts()` wrote, e.g. a committed run record)."""
        cm = np.asarray(confusion, dtype=np.int64)
        missed = np.zeros(len(cm), dtype=np.int64) if missed is None else np.asarray(missed, dtype=np.int64)
        return cls(tuple(names), iou_from_confusion(cm, missed), cm, missed)

    def counts(self) -> dict[str, list]:
        """The exact counts, JSON-ready: every number of the result follows from them."""
        missed = np.zeros(len(self.names), dtype=np.int64) if self.missed is None else self.missed
        return {"confusion": self.confusion.tolist(), "missed": missed.tolist()}

    @property
    def miou(self) -> float:
        valid = ~np.isnan(self.iou)
        return float(self.iou[valid].mean()) if valid.any() else float("nan")

    @property
    def class_points(self) -> np.ndarray:
        """(C,) points of each ground-truth class (the unlabelled ones included)."""
        return self.confusion.sum(axis=1) + (0 if self.missed is None else self.missed)

    @property
    def acc(self) -> np.ndarray:
        """(C,) per-class accuracy (recall), NaN where the class has no ground-truth point."""
        points = self.class_points
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(points > 0, np.diag(self.confusion) / points, np.nan)

    @property
    def macc(self) -> float:
        valid = ~np.isnan(self.acc)
        return float(self.acc[valid].mean()) if valid.any() else float("nan")

    @property
    def all_acc(self) -> float:
        points = self.class_points.sum()
        return float(np.trace(self.confusion) / points) if points else float("nan")

    def as_dict(self) -> dict:
        return {
            "mIoU": _pct(self.miou),
            "mAcc": _pct(self.macc),
            "allAcc": _pct(self.all_acc),
            "classes": {n: _pct(v) for n, v in zip(self.names, self.iou)},
        }


@dataclass(frozen=True)
class SeedResults:
    """One model trained with several seeds: per-class IoU and mIoU as means over the seeds, and
    the spread of the mIoU, so a table can say which differences exceed the noise."""

    runs: tuple[IoUResult, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return self.runs[0].names

    @property
    def mious(self) -> np.ndarray:
        return np.array([r.miou for r in self.runs])

    @property
    def miou(self) -> float:
        return float(self.mious.mean())

    @property
    def std(self) -> float:
        """Sample standard deviation of the mIoU over seeds (0 for one seed)."""
        return float(self.mious.std(ddof=1)) if len(self.runs) > 1 else 0.0

    @property
    def iou(self) -> np.ndarray:
        """Per-class mean over the seeds where the class is not n/a."""
        stacked = np.stack([r.iou for r in self.runs])
        present = ~np.isnan(stacked)
        with np.errstate(invalid="ignore"):
            return np.where(present.any(0), np.nansum(stacked, 0) / np.maximum(present.sum(0), 1), np.nan)

    def as_dict(self) -> dict:
        return {"mIoU": _pct(self.miou), "mIoU_std": _pct(self.std), "mIoU_seeds": [_pct(m) for m in self.mious],
                "classes": {n: _pct(v) for n, v in zip(self.names, self.iou)}}


Row = IoUResult | SeedResults


# ----------------------------------------------------------------------------- tests of differences
# scipy is imported where a test runs: training (validation imports this module) needs only numpy.
def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (no equal-variance assumption) that two models'
    per-seed scores share their mean; NaN with fewer than two seeds on a side or no spread at all."""
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    from scipy.stats import ttest_ind

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(np.asarray(a, float), np.asarray(b, float), equal_var=False).pvalue)


def one_sample_p(values: Sequence[float], reference: float) -> float:
    """Two-sided p-value of a one-sample t-test that per-seed scores have mean `reference` (a
    fixed score such as the pseudo-labels'); NaN with fewer than two seeds."""
    if len(values) < 2:
        return float("nan")
    from scipy.stats import ttest_1samp

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_1samp(np.asarray(values, float), reference).pvalue)


def p_text(p: float) -> str:
    """A p-value as the tables write it."""
    if np.isnan(p):
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _pct(v: float) -> float | None:
    return None if np.isnan(v) else round(100.0 * float(v), 2)


def iou_from_confusion(cm: np.ndarray, missed: np.ndarray | None = None) -> np.ndarray:
    """Per-class IoU; NaN (n/a) for a class without ground-truth points (the module's class set)."""
    tp = np.diag(cm).astype(np.float64)
    fn = cm.sum(1) - tp + (0 if missed is None else missed)
    fp = cm.sum(0) - tp
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp + fn > 0, tp / union, np.nan)


class IoUAccumulator:
    """Confusion counts added scene by scene (and across DDP ranks by summing `.counts`)."""

    def __init__(self, names: tuple[str, ...] | list[str]):
        self.names = tuple(names)
        c = len(self.names)
        self.cm = np.zeros((c, c), dtype=np.int64)
        self.missed = np.zeros(c, dtype=np.int64)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        cm, missed = confusion_matrix(pred, gt, len(self.names))
        self.cm += cm
        self.missed += missed

    def result(self) -> IoUResult:
        return IoUResult.from_counts(self.names, self.cm.copy(), self.missed.copy())


# ----------------------------------------------------------------------------- tables
def _cell(v: float) -> str:
    return "n/a" if np.isnan(v) else f"{100 * v:.2f}"


def _miou_cell(r: Row) -> str:
    """mIoU, with ± its std over seeds for a model trained with several."""
    if isinstance(r, SeedResults) and len(r.runs) > 1:
        return f"{_cell(r.miou)} ± {100 * r.std:.2f}"
    return _cell(r.miou)


def markdown_table(rows: dict[str, Row], note: str = "") -> str:
    """The seed paper's layout: method, mIoU, then one column per class (means over seeds for a
    model trained with several; its mIoU cell shows ± the std over seeds)."""
    names = next(iter(rows.values())).names
    head = "| Method | mIoU | " + " | ".join(n.title() for n in names) + " |"
    sep = "|---|---:|" + "---:|" * len(names)
    lines = [head, sep]
    for method, r in rows.items():
        lines.append(f"| {method} | {_miou_cell(r)} | " + " | ".join(_cell(v) for v in r.iou) + " |")
    lines.append("")
    lines.append(f"_{CONVENTION}_" + (f" {note}" if note else ""))
    return "\n".join(lines)


def write_tables(rows: dict[str, Row], out_stem: str | Path, note: str = "") -> list[Path]:
    """Write `<stem>.md`, `<stem>.csv` and `<stem>.json`; returns the paths."""
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    names = next(iter(rows.values())).names
    md = stem.with_suffix(".md")
    md.write_text(markdown_table(rows, note) + "\n")
    csv_path = stem.with_suffix(".csv")
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "mIoU", "mIoU std", *names])
        for method, r in rows.items():
            std = _cell(r.std) if isinstance(r, SeedResults) else ""
            w.writerow([method, _cell(r.miou), std, *(_cell(v) for v in r.iou)])
    js = stem.with_suffix(".json")
    js.write_text(json.dumps({"convention": CONVENTION, "note": note, "rows": {m: r.as_dict() for m, r in rows.items()}}, indent=2))
    return [md, csv_path, js]


def summary_table(rows: dict[str, IoUResult]) -> str:
    """Pointcept's one-line summary per row: mIoU, mAcc, allAcc (markdown)."""
    lines = ["| Method | mIoU | mAcc | allAcc |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {_cell(r.miou)} | {_cell(r.macc)} | {_cell(r.all_acc)} |" for name, r in rows.items()]
    return "\n".join(lines + ["", f"_{ACCURACY_CONVENTION}_"])

