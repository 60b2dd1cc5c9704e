"""Semantic segmentation metrics and the per-class tables of every report.

Convention (design.md; written into every table): the confusion matrix counts points whose
ground truth is a benchmark class (ignored points are dropped first); IoU_c = TP/(TP+FP+FN);
mIoU is the mean over classes whose union is non-zero; a class with neither ground truth nor
prediction is "n/a" and left out of the mean.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONVENTION = (
    "IoU = TP/(TP+FP+FN) over points with a benchmark ground-truth class (ignored points dropped); "
    "mIoU = mean over classes with a non-empty union; n/a = class neither present nor predicted."
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

    @property
    def miou(self) -> float:
        valid = ~np.isnan(self.iou)
        return float(self.iou[valid].mean()) if valid.any() else float("nan")

    def as_dict(self) -> dict:
        return {
            "mIoU": _pct(self.miou),
            "classes": {n: _pct(v) for n, v in zip(self.names, self.iou)},
        }


def _pct(v: float) -> float | None:
    return None if np.isnan(v) else round(100.0 * float(v), 2)


def iou_from_confusion(cm: np.ndarray, missed: np.ndarray | None = None) -> np.ndarray:
    tp = np.diag(cm).astype(np.float64)
    fn = cm.sum(1) - tp + (0 if missed is None else missed)
    fp = cm.sum(0) - tp
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


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
        return IoUResult(self.names, iou_from_confusion(self.cm, self.missed), self.cm.copy())


# ----------------------------------------------------------------------------- tables
def _cell(v: float) -> str:
    return "n/a" if np.isnan(v) else f"{100 * v:.2f}"


def markdown_table(rows: dict[str, IoUResult], note: str = "") -> str:
    """The seed paper's layout: method, mIoU, then one column per class."""
    names = next(iter(rows.values())).names
    head = "| Method | mIoU | " + " | ".join(n.title() for n in names) + " |"
    sep = "|---|---:|" + "---:|" * len(names)
    lines = [head, sep]
    for method, r in rows.items():
        lines.append(f"| {method} | {_cell(r.miou)} | " + " | ".join(_cell(v) for v in r.iou) + " |")
    lines.append("")
    lines.append(f"_{CONVENTION}_" + (f" {note}" if note else ""))
    return "\n".join(lines)


def write_tables(rows: dict[str, IoUResult], out_stem: str | Path, note: str = "") -> list[Path]:
    """Write `<stem>.md`, `<stem>.csv` and `<stem>.json`; returns the paths."""
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    names = next(iter(rows.values())).names
    md = stem.with_suffix(".md")
    md.write_text(markdown_table(rows, note) + "\n")
    csv_path = stem.with_suffix(".csv")
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "mIoU", *names])
        for method, r in rows.items():
            w.writerow([method, _cell(r.miou), *(_cell(v) for v in r.iou)])
    js = stem.with_suffix(".json")
    js.write_text(json.dumps({"convention": CONVENTION, "note": note, "rows": {m: r.as_dict() for m, r in rows.items()}}, indent=2))
    return [md, csv_path, js]
