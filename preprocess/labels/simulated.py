"""The "simulated-clip" labeler: MaskCLIP-like noisy 2D labels made from ground truth.

Where CLIP weights cannot be had, the method still needs pseudo-labels with MaskCLIP's kind of
noise to be evaluated on. Starting from a ground-truth label image rendered from the labelled
mesh, this module makes labels that are
- coarse: decided per patch (majority of the patch, like a ViT-B/16's 1/16 resolution grid);
- confused by region: random regions of about `region_px` swap a class for a plausible one
  (wall→door, table→desk...), the dominant error of MaskCLIP, and consistent inside a region;
- view-dependent: each patch flips to a confusable class with `flip_prob`, independently per
  view, so fusing views helps as it does with real MaskCLIP;
- bled across boundaries: a random per-view class order decides which class spreads over its
  neighbour by up to `bleed_px` pixels (MaskCLIP's blurry, upsampled boundaries);
and scores that are lower where noise was applied, and per-patch "CLIP features"
normalize(text_emb[label] + noise) around fixed random unit text embeddings, so that feature
distillation has something to learn. Everything is seeded.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from preprocess.geometry.render import MeshRaycaster

# Plausible MaskCLIP confusions (symmetric, weight = how often relative to the row's others).
# Names not in a dataset's class list are ignored, so one table serves ScanNet and nuScenes.
DEFAULT_CONFUSIONS: tuple[tuple[str, str, float], ...] = (
    ("wall", "door", 1.0), ("wall", "window", 1.0), ("wall", "picture", 1.0),
    ("wall", "curtain", 1.0), ("wall", "floor", 0.3), ("door", "window", 0.5),
    ("door", "cabinet", 0.5), ("door", "refrigerator", 0.5), ("window", "curtain", 1.0),
    ("window", "picture", 0.5), ("curtain", "shower curtain", 1.0),
    ("table", "desk", 1.0), ("table", "counter", 1.0), ("desk", "counter", 1.0),
    ("chair", "sofa", 1.0), ("sofa", "bed", 1.0), ("chair", "otherfurniture", 0.5),
    ("bed", "otherfurniture", 0.5), ("cabinet", "otherfurniture", 1.0),
    ("cabinet", "bookshelf", 1.0), ("bookshelf", "otherfurniture", 1.0),
    ("cabinet", "counter", 0.5), ("cabinet", "refrigerator", 0.5),
    ("toilet", "sink", 1.0), ("sink", "bathtub", 1.0), ("toilet", "bathtub", 0.5),
    ("car", "truck", 1.0), ("truck", "construction vehicle", 1.0), ("truck", "trailer", 1.0),
    ("bus", "truck", 1.0), ("car", "bus", 0.5), ("bicycle", "motorcycle", 1.0),
    ("pedestrian", "bicycle", 0.3), ("barrier", "traffic cone", 0.5), ("barrier", "manmade", 1.0),
    ("driveable surface", "other flat", 1.0), ("driveable surface", "sidewalk", 1.0),
    ("sidewalk", "other flat", 1.0), ("terrain", "vegetation", 1.0), ("terrain", "sidewalk", 0.5),
    ("manmade", "vegetation", 0.5),
)


def confusion_matrix(
    class_names: list[str] | tuple[str, ...],
    pairs: tuple[tuple[str, str, float], ...] = DEFAULT_CONFUSIONS,
) -> np.ndarray:
    """(C,C) row-stochastic matrix: row c = which class c is mistaken for, when it is.

    class_names: the dataset's classes. pairs: symmetric (name, name, weight) confusions;
    a class without any partner is mistaken uniformly for the others. The diagonal is zero.
    """
    index = {n: i for i, n in enumerate(class_names)}
    C = len(class_names)
    if C < 2:
        raise ValueError(f"confusion_matrix: need at least 2 classes, got {C}")
    M = np.zeros((C, C), dtype=np.float64)
    for a, b, w in pairs:
        if a in index and b in index and a != b:
            M[index[a], index[b]] += w
            M[index[b], index[a]] += w
    empty = M.sum(axis=1) == 0
    M[empty] = 1.0
    np.fill_diagonal(M, 0.0)
    return M / M.sum(axis=1, keepdims=True)


def simulated_text_embeddings(num_classes: int, dim: int = 512, seed: int = 0) -> np.ndarray:
    """(C, dim) float32 fixed random unit vectors standing in for CLIP's class text embeddings."""
    rng = np.random.default_rng([seed, 0x7E47])
    emb = rng.standard_normal((num_classes, dim))
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)


def render_vertex_labels(
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_labels: np.ndarray,
    world_to_camera: np.ndarray,
    intrinsic: np.ndarray,
    width: int,
    height: int,
    raycaster: MeshRaycaster | None = None,
) -> np.ndarray:
    """(height, width) int16 ground-truth label image of a mesh with per-vertex labels: each
    pixel takes the label of the vertex of the hit triangle nearest to the hit point (so a label
    boundary runs between vertices, as in the mesh); -1 where nothing is hit. `raycaster`: the
    mesh's, built once for all its views (one is built here when None)."""
    raycaster = raycaster or MeshRaycaster(vertices, faces)
    depth, face = raycaster.render(world_to_camera, intrinsic, width, height)
    hit = face >= 0
    rows, cols = np.nonzero(hit)
    K = np.asarray(intrinsic, dtype=np.float64)
    z = depth[rows, cols].astype(np.float64)
    yn = (rows + 0.5 - K[1, 2]) / K[1, 1]  # back-project the pixel centre to depth z
    xn = (cols + 0.5 - K[0, 2] - K[0, 1] * yn) / K[0, 0]
    x, y = xn * z, yn * z
    cam_to_world = np.linalg.inv(np.asarray(world_to_camera, dtype=np.float64))
    point = np.stack([x, y, z], axis=1) @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
    corners = faces[face[rows, cols]]  # (M,3) vertex ids
    dist = np.linalg.norm(vertices[corners] - point[:, None, :], axis=2)
    nearest = corners[np.arange(len(corners)), dist.argmin(axis=1)]
    out = np.full((height, width), -1, dtype=np.int16)
    out[rows, cols] = vertex_labels[nearest]
    return out


def _draw(rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Categorical draws: for each k, the class j with cumsum(rows[k])[j-1] <= u[k] < cumsum[j]."""
    cum = np.cumsum(rows, axis=-1)
    return np.minimum((u[..., None] >= cum).sum(axis=-1), rows.shape[-1] - 1)


def _patch_majority(gt: np.ndarray, num_classes: int, patch: int) -> np.ndarray:
    """(ceil(H/p), ceil(W/p)) majority label of the valid pixels of each patch (-1: none)."""
    H, W = gt.shape
    hp, wp = -(-H // patch), -(-W // patch)
    padded = np.full((hp * patch, wp * patch), -1, dtype=np.int64)
    padded[:H, :W] = gt
    pid = (np.arange(hp)[:, None, None, None] * wp + np.arange(wp)[None, None, :, None])
    pid = np.broadcast_to(pid, (hp, patch, wp, patch)).reshape(-1)
    lab = padded.reshape(hp, patch, wp, patch).reshape(-1)
    valid = lab >= 0
    counts = np.bincount(pid[valid] * num_classes + lab[valid], minlength=hp * wp * num_classes)
    counts = counts.reshape(hp * wp, num_classes)
    return np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), -1).reshape(hp, wp)


def simulate_view(
    gt: np.ndarray,
    confusions: np.ndarray,
    rng: np.random.Generator,
    text_embeddings: np.ndarray | None = None,
    patch: int = 16,
    confusion: float = 0.45,
    region_px: int = 64,
    bleed_px: int = 12,
    flip_prob: float = 0.08,
    feature_noise: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """MaskCLIP-like (label i16 (H,W), score f16 (H,W), feature f16 (H/patch, W/patch, D) or
    None) from one ground-truth label image.

    gt: (H,W) int labels in 0..C-1, -1 where unknown (stays -1 unless bleeding covers it).
    confusions: (C,C) row-stochastic matrix of `confusion_matrix`. rng: the view's generator.
    text_embeddings: (C,D) unit vectors; None = no features. patch: label grid cell in pixels.
    confusion: probability that a (region, class) pair is swapped for a confusable class.
    region_px: typical size in pixels of those regions (Voronoi cells of random seeds).
    bleed_px: how far labels spread across class boundaries (0 = none).
    flip_prob: per-patch probability of an independent flip to a confusable class.
    feature_noise: norm of the Gaussian noise added to the text embedding before normalising.
    With patch=1 and every noise parameter 0 the labels equal `gt`.
    """
    gt = np.asarray(gt)
    if gt.ndim != 2:
        raise ValueError(f"simulate_view: gt must be a (H,W) label image, got {gt.shape}")
    C = confusions.shape[0]
    if gt.size and gt.max() >= C:
        raise ValueError(f"simulate_view: label {int(gt.max())} outside 0..{C - 1}")
    H, W = gt.shape
    clean = _patch_majority(gt, C, patch)
    hp, wp = clean.shape
    valid = clean >= 0
    noisy = clean.copy()

    # Region-level confusions: Voronoi regions of random seeds over the patch grid.
    n_regions = max(1, int(np.ceil(H * W / float(max(region_px, 1)) ** 2)))
    seeds = rng.random((n_regions, 2)) * (hp, wp)
    centres = np.stack(np.meshgrid(np.arange(hp) + 0.5, np.arange(wp) + 0.5, indexing="ij"), axis=-1)
    region = ((centres[:, :, None, :] - seeds[None, None]) ** 2).sum(-1).argmin(axis=2)
    swap = rng.random((n_regions, C)) < confusion
    target = _draw(np.broadcast_to(confusions, (n_regions, C, C)), rng.random((n_regions, C)))
    lab = np.maximum(clean, 0)
    swapped = valid & swap[region, lab]
    noisy[swapped] = target[region, lab][swapped]

    # View-dependent flips, patch by patch.
    flipped = valid & (rng.random((hp, wp)) < flip_prob)
    flip_to = _draw(confusions[np.maximum(noisy, 0)], rng.random((hp, wp)))
    noisy[flipped] = flip_to[flipped]
    changed = noisy != clean

    base = np.where(changed, rng.uniform(0.3, 0.6, (hp, wp)), rng.uniform(0.6, 0.95, (hp, wp)))
    label = np.repeat(np.repeat(noisy, patch, 0), patch, 1)[:H, :W]
    score = np.repeat(np.repeat(base, patch, 0), patch, 1)[:H, :W]

    # Boundary bleeding: a random class order; each pixel takes the highest class within bleed_px.
    if bleed_px > 0:
        rank = rng.permutation(C)  # rank[c] = priority of class c
        by_rank = np.argsort(rank)
        pri = np.where(label >= 0, rank[np.maximum(label, 0)], -1)
        spread = ndimage.maximum_filter(pri, size=2 * bleed_px + 1, mode="nearest")
        bled = spread != pri
        label = np.where(spread >= 0, by_rank[np.maximum(spread, 0)], -1)
        score = np.where(bled, score * 0.7, score)

    feature = None
    if text_embeddings is not None:
        D = text_embeddings.shape[1]
        f = np.where(valid[..., None], text_embeddings[np.maximum(noisy, 0)], 0.0)
        f = f + rng.standard_normal((hp, wp, D)) * (feature_noise / np.sqrt(D))
        feature = (f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), 1e-12)).astype(np.float16)
    return label.astype(np.int16), np.where(label >= 0, score, 0.0).astype(np.float16), feature
