"""A tiny synthetic store for trainer tests, benchmarks and `make gpu-check`: rooms of a floor,
two walls and a box, with partitions, simulated pseudo-labels, refined labels, CLIP features and
text embeddings, named through shared/schema.py and recorded in the store's manifest the way the
preprocessing stages do.

Needs only numpy, numba, zarr and the project (no pytest), so a GPU machine can build one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared import schema
from shared.config import load_pipeline
from shared.refine import refine_labels
from shared.store import Store

CLASS_COLOURS = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200]], dtype=np.float64)  # wall, floor, cabinet


def toy_scene(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """A 2 m room: floor (class 1), two walls (class 0) and a box (class 2), coloured by class."""
    kind = rng.choice(4, size=n, p=[0.35, 0.2, 0.2, 0.25])
    u, v = rng.uniform(0, 2, n), rng.uniform(0, 2, n)
    xyz = np.stack([u, v, np.zeros(n)], 1)
    normal = np.tile([0.0, 0.0, 1.0], (n, 1))
    wall_x, wall_y, box = kind == 1, kind == 2, kind == 3
    xyz[wall_x] = np.stack([np.zeros(wall_x.sum()), u[wall_x], v[wall_x]], 1)
    normal[wall_x] = [1.0, 0.0, 0.0]
    xyz[wall_y] = np.stack([u[wall_y], np.zeros(wall_y.sum()), v[wall_y]], 1)
    normal[wall_y] = [0.0, 1.0, 0.0]
    corner = rng.uniform(0.6, 1.0, 2)
    xyz[box] = np.stack([corner[0] + u[box] / 4, corner[1] + v[box] / 4, np.full(box.sum(), 0.5)], 1)
    gt = np.array([1, 0, 0, 2])[kind].astype(np.int16)
    rgb = np.clip(CLASS_COLOURS[gt] + rng.normal(0, 15, (n, 3)), 0, 255).astype(np.uint8)
    # Sets: 0.5 m cells per surface, so no set mixes classes.
    cell = np.floor(xyz / 0.5).astype(np.int64)
    _, segment = np.unique(np.c_[kind, cell], axis=0, return_inverse=True)
    label = gt.copy()
    flip = rng.random(n) < 0.2
    label[flip] = rng.integers(0, 3, flip.sum())
    label[rng.random(n) < 0.1] = -1
    return {"xyz": xyz.astype(np.float32), "rgb": rgb, "normal": normal.astype(np.float32), "gt": gt,
            "segment": segment.ravel().astype(np.int32), "label": label.astype(np.int16),
            "score": rng.uniform(0.3, 1.0, n).astype(np.float16)}


TOY_VIEWS = 4


def toy_pairs(rng: np.random.Generator, gt: np.ndarray, text: np.ndarray) -> dict[str, np.ndarray]:
    """Pixel-point pairs of TOY_VIEWS views that each see half the points, the pixel's label the
    point's class flipped at random one time in four; each pair its own patch, whose feature is
    (1 + view) times the label's text embedding (so a test can read the view back from its norm)."""
    point, view = [], []
    for v in range(TOY_VIEWS):
        seen = np.flatnonzero(rng.random(len(gt)) < 0.5)
        point.append(seen)
        view.append(np.full(len(seen), v))
    point, view = np.concatenate(point), np.concatenate(view)
    label = gt[point].astype(np.int64)
    flip = rng.random(len(point)) < 0.25
    label[flip] = rng.integers(0, 3, flip.sum())
    return {schema.PAIRS_POINT: point.astype(np.int32), schema.PAIRS_VIEW: view.astype(np.uint16),
            schema.PAIRS_LABEL: label.astype(np.int16), schema.PAIRS_SCORE: rng.uniform(0.3, 1, len(point)).astype(np.float16),
            schema.PAIRS_PATCH: np.arange(len(point), dtype=np.int32),
            schema.PATCH_FEAT: ((1 + view)[:, None] * text[label]).astype(np.float16)}


def make_toy_store(tmp: Path, scenes: int = 3, points: int = 3000, method: str = "gt", **train: object) -> Path:
    """Write a toy store and pipeline file under `tmp`; returns the pipeline path."""
    train_opts = {"method": method, "voxel_size": 0.1, "epochs": 4, "batch_size": 2, "num_workers": 0,
                  "lr": 0.02, "warmup_steps": 2, "head": "linear", "width": 0.25,
                  "out_dir": str(tmp / "run"), "checkpoint_every": 2, **train}
    lines = [
        "[dataset]", 'name = "synthetic"', f'root = "{tmp / "raw"}"',
        "train = [" + ", ".join(f'"toy{i}"' for i in range(scenes - 1)) + "]", f'val = ["toy{scenes - 1}"]',
        "[store]", f'path = "{tmp / "toy.zarr"}"',
        "[[partitions]]", 'method = "felzenszwalb"',
        "[labels]", 'labeler = "simulated-clip"', "store_features = true", "store_pairs = true",
        "[train]", *(f"{k} = {v!r}".replace("'", '"').replace("True", "true").replace("False", "false")
                     for k, v in train_opts.items()),
    ]
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "toy.toml"
    path.write_text("\n".join(lines) + "\n")
    pipeline = load_pipeline(path)
    store = Store(pipeline.store.path)
    rng = np.random.default_rng(0)
    dim = 8
    text = rng.normal(size=(20, dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    outputs = [("", schema.text_output(pipeline))]
    store.write("", outputs[0][1].group, {"embedding": text}, {"key": outputs[0][1].key})
    for i in range(scenes):
        s = toy_scene(rng, points)
        feat = text[np.maximum(s["label"], 0)] + rng.normal(0, 0.3, (points, dim))
        pts = schema.points_output(pipeline, f"toy{i}")
        part = schema.partition_output(pipeline.partitions[0], pts.key)
        labels = schema.labels_output(pipeline, pts.key)
        refined = schema.refined_output(pipeline, labels.key, part.key)
        refined_label = refine_labels(s["label"], s["score"].astype(np.float32), s["segment"], 20, pipeline.refine.rho)
        views = np.ones(points, np.uint16)
        for out, arrays in (
            (pts, {k: s[k] for k in ("xyz", "rgb", "normal", "gt")}),
            (part, {"segment": s["segment"]}),
            (labels, {"label": s["label"], "score": s["score"], "views": views, "feat": feat.astype(np.float16),
                      **toy_pairs(np.random.default_rng((1, i)), s["gt"], text)}),
            (refined, {"label": refined_label, "score": s["score"], "views": views}),
        ):
            store.write(f"toy{i}", out.group, arrays, {"key": out.key, "stage": out.stage, "params": out.params,
                                                       "num_points": points, "has_gt": True, "seconds": 0.0})
            outputs.append((f"toy{i}", out))
    splits = {"train": [f"toy{i}" for i in range(scenes - 1)], "val": [f"toy{scenes - 1}"]}
    schema.record_outputs(store, pipeline, splits, outputs)
    return path
