"""A tiny synthetic store for trainer tests, benchmarks and `make gpu-check`: rooms of a floor,
two walls and a box, with partitions, simulated pseudo-labels, CLIP features and text
embeddings, written the way the preprocessing stages write them.

Needs only numpy, zarr and the project (no pytest), so a GPU machine can build one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.config import FelzenszwalbParams, load_pipeline, params_dict
from shared.store import POINTS, Store, stage_key
from train.data import label_params

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
        "[labels]", 'labeler = "simulated-clip"', "store_features = true",
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
    part_params = {"method": "felzenszwalb", **params_dict(FelzenszwalbParams())}
    labels = label_params(pipeline)
    for i in range(scenes):
        s = toy_scene(rng, points)
        feat = text[np.maximum(s["label"], 0)] + rng.normal(0, 0.3, (points, dim))
        points_key = f"points{i}"
        store.write(f"toy{i}", POINTS, {k: s[k] for k in ("xyz", "rgb", "normal", "gt")},
                    {"key": points_key, "num_points": points})
        store.write(f"toy{i}", f"partitions/felzenszwalb-{stage_key('partitions', part_params, [points_key])}",
                    {"segment": s["segment"]}, {"params": part_params})
        store.write(f"toy{i}", f"pseudo/simulated-clip-{stage_key('labels', labels, [points_key])}",
                    {"label": s["label"], "score": s["score"], "views": np.ones(points, np.uint16),
                     "feat": feat.astype(np.float16)}, {"params": labels})
    text_key = stage_key("labels", {k: labels[k] for k in ("labeler", "labeler_params", "classes")}, [])
    store.write("", f"text/simulated-clip-{text_key}", {"embedding": text}, {"key": text_key})
    return path
