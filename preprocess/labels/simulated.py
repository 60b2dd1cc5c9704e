"""The "simulated-clip" labeler: a model of MaskCLIP's output, made by corrupting ground truth.

Where CLIP weights cannot be had, the method still needs pseudo-labels with MaskCLIP's kind of
errors. This module models what MaskCLIP computes (`maskclip.py`: class logits per 16-pixel
patch, bilinearly upsampled; label = argmax, score = softmax maximum) and simulates the logits
instead of computing them from pixels. Its only inputs are the ground truth it corrupts — the
class and object instance of the mesh vertex every pixel shows, rendered from the labelled mesh
— and seeded random draws; the labels, the scores and the features all follow from the simulated
logits, so the score says exactly as much about correctness as the modelled CLIP does.

The logits at a surface point x of object instance k, drawn ONCE PER SCENE:

    l(x) = margin * ((1 - w(x)) * e[y_k] + w(x) * e[t_k]) + instance_noise * z_k

- y_k, the class the instance looks like: its ground-truth class; for an object outside the
  benchmark classes (ground truth "ignore": a pillow, a lamp, a television) a class drawn from
  the classes of the labelled surfaces nearest to it (a pillow reads as the bed it lies on, a
  television as a picture or the wall), because MaskCLIP gives every pixel one of the C classes.
- t_k, the class it can be mistaken for, drawn from the plausible confusions (wall/door,
  table/desk, chair/sofa...; `DEFAULT_CONFUSIONS`), and its pull w_k ~ U(0, 0.5 / (1 - confusion)):
  the instance reads as t_k (w > 0.5) with probability `confusion`, and a mistaken instance wins
  by a smaller margin on average than a correct one, as CLIP's wrong answers are its less sure ones.
- w(x) = clip(w_k + surface_noise * F(x), 0, 1), F a smooth random field over the scene (unit
  variance, correlation length `region_m` metres): a stretch of wall looks more like a door than
  the rest of it, the same stretch in every view.
- z_k ~ N(0, I_C): the instance's own leaning toward unrelated classes.
Because these are shared by every view of the object, CLIP's errors repeat across views (the same
appearance gives the same logits) and multi-view fusion cannot average them away.

PER VIEW: each object's pull shifts by `view_noise` * N(0, 1) (a chair seen from behind looks
more like a sofa): errors that are whole-object and confident in one view, which fusion dilutes.
PER PATCH: a patch's logits are the mean of the view's l over the pixels it covers (so small
things are swallowed by their surroundings) plus `patch_noise` * N(0, I_C) (lighting, texture,
context); they are bilinearly upsampled to the label map as MaskCLIP does (boundaries blur by
about half a patch). Pixels that show no surface take the patch's logits too: every pixel gets
one of the C classes. Patch features are normalize(softmax(patch logits) @ T + feature_noise * n
/ sqrt(D)), T the fixed random unit text embeddings: a mixture of the class embeddings weighted
as the logits are, so distillation learns what the logits say, uncertainty included.

Defaults (`shared.labelers.SimulatedCLIPConfig`), chosen so that the fused pseudo-labels of the
generated val rooms score 20-30% mIoU on the points the views see: MaskCLIP-like (the label-free
CLIP2Scene network, which learns from MaskCLIP's labels, scores 28.75 on ScanNet val; method.md):
- margin 4: with 20 classes a clean patch's softmax confidence is about 0.7 (e^4 / (e^4 + 19)),
  where MaskCLIP's (100 x cosine, cosines a few hundredths apart) mostly lies;
- confusion 0.3: about a third of the objects read as a neighbouring class, the dominant MaskCLIP
  error indoors (walls, doors and windows, tables and desks, cabinets and shelves);
- instance_noise 0.5: the largest of 19 such offsets is about 1, so an object leans toward an
  unrelated class only when its own class leads by little (at 1.0 the unrelated classes swamped
  the confusions and the fused labels of the val rooms fell to 14%);
- surface_noise 0.25 over region_m 1 m: large surfaces are confused in parts, not only whole;
- view_noise 0.3 and patch_noise 0.5: one view is visibly noisier than the fused result, so
  fusing views helps. Per-patch noise alone makes only near-tie, low-confidence errors, which
  the score would single out (on the real scene0000_00, seen once per point, refinement gained
  3-8 points more with the scores than with unit weights); the per-view object shifts make
  errors of the confident kind MaskCLIP also makes. Noise on every class also predicts classes
  absent from a room, each a 0 in the mean (with no other noise, patch_noise 1.5 took the fused
  labels of the val rooms from 67% to 28%), so it stays small.
Measured by `python -m preprocess label-quality` on the 10 rooms of `make synth` (numbers in the
README's "The simulated-CLIP labeler").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from shared.render import MeshRaycaster
from shared.config import SimulatedCLIPConfig

TOUCH = 0.02  # metres: parts of one class closer than this are one object where none are annotated
FIELD_WAVES = 32  # random Fourier features of the surface field

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
    """(height, width) image of a per-vertex integer value (a label, an instance or the vertex
    id itself), in the dtype of `vertex_labels`: each pixel takes the value of the vertex of the
    hit triangle nearest to the hit point (so a label boundary runs between vertices, as in the
    mesh); -1 where nothing is hit. `raycaster`: the mesh's, built once for all its views (one is
    built here when None)."""
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
    vertex_labels = np.asarray(vertex_labels)
    out = np.full((height, width), -1, dtype=vertex_labels.dtype)
    out[rows, cols] = vertex_labels[nearest]
    return out


def measured_vertices(
    vertex_tree: cKDTree,
    depth: tuple[np.ndarray, np.ndarray],
    world_to_camera: np.ndarray,
    intrinsic: np.ndarray,
    width: int,
    height: int,
) -> np.ndarray:
    """(height, width) int64: per pixel the mesh vertex nearest to the surface point the view's
    depth frame measured on that pixel's ray (-1 where it has no reading). The image is then what
    the camera saw, not a rendering of the mesh (which misses what the reconstruction lost and
    shows what it invented), each point named by its nearest annotated vertex as ScanNet's 2D
    annotations are its 3D ones projected. depth: (map f32 metres, 0 = none; its (3,3) intrinsic)
    in the camera frame of `intrinsic` (the label map's, at `width` x `height`)."""
    K = np.asarray(intrinsic, dtype=np.float64)
    rows, cols = np.mgrid[0:height, 0:width]
    yn = (rows + 0.5 - K[1, 2]) / K[1, 1]  # the ray through each pixel centre, at z = 1
    xn = (cols + 0.5 - K[0, 2] - K[0, 1] * yn) / K[0, 0]
    depth_map, Kd = depth[0], np.asarray(depth[1], dtype=np.float64)
    u = np.floor(Kd[0, 0] * xn + Kd[0, 1] * yn + Kd[0, 2]).astype(np.int64)
    v = np.floor(Kd[1, 1] * yn + Kd[1, 2]).astype(np.int64)
    inside = (u >= 0) & (u < depth_map.shape[1]) & (v >= 0) & (v < depth_map.shape[0])
    z = np.where(inside, depth_map[np.clip(v, 0, depth_map.shape[0] - 1), np.clip(u, 0, depth_map.shape[1] - 1)], 0)
    hit = z > 0
    camera_to_world = np.linalg.inv(np.asarray(world_to_camera, dtype=np.float64))
    points = np.stack([xn[hit] * z[hit], yn[hit] * z[hit], z[hit]], axis=1) @ camera_to_world[:3, :3].T
    out = np.full((height, width), -1, dtype=np.int64)
    out[hit] = vertex_tree.query(points + camera_to_world[:3, 3])[1]
    return out


# --------------------------------------------------------------------------------------------
# Per scene: which object every vertex belongs to, what it looks like, its systematic logits
# --------------------------------------------------------------------------------------------
def mesh_instances(
    xyz: np.ndarray, faces: np.ndarray, gt: np.ndarray, instance: np.ndarray | None = None, touch: float = TOUCH
) -> np.ndarray:
    """(N,) int64 object id in 0..K-1 per vertex: the annotated instance where `instance` >= 0
    (ScanNet's aggregation), else a connected region of one ground-truth value (ignore included):
    vertices joined by a mesh edge, or closer than `touch` metres (a generated table's legs and
    top are separate surfaces that touch)."""
    n = len(xyz)
    annotated = np.zeros(n, bool) if instance is None else np.asarray(instance) >= 0
    free = np.flatnonzero(~annotated)
    gt = np.asarray(gt)
    edges = [np.asarray(faces)[:, [0, 1]], np.asarray(faces)[:, [1, 2]], np.asarray(faces)[:, [2, 0]]]
    if len(free) > 1 and touch > 0:
        pairs = cKDTree(xyz[free]).query_pairs(touch, output_type="ndarray")
        edges.append(free[pairs])
    a, b = np.concatenate(edges).T
    keep = ~annotated[a] & ~annotated[b] & (gt[a] == gt[b])
    graph = sparse.coo_matrix((np.ones(int(keep.sum()), np.int8), (a[keep], b[keep])), shape=(n, n))
    _, region = connected_components(graph, directed=False)
    given = np.zeros(n, np.int64) if instance is None else np.asarray(instance, np.int64)
    key = np.where(annotated, given, given.max(initial=-1) + 1 + region)  # regions after the annotated ids
    return np.unique(key, return_inverse=True)[1].ravel().astype(np.int64)


def apparent_classes(
    xyz: np.ndarray, gt: np.ndarray, objects: np.ndarray, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """(K,) the class each object looks like: its most common ground-truth class; for an object
    with none (ignore-gt), a class drawn in proportion to how many of its vertices have a vertex
    of that class as their nearest labelled vertex (uniform where the scene has none)."""
    K = int(objects.max()) + 1 if len(objects) else 0
    labelled = gt >= 0
    counts = np.bincount(objects[labelled] * num_classes + gt[labelled], minlength=K * num_classes)
    counts = counts.reshape(K, num_classes).astype(np.float64)
    known = counts.sum(axis=1) > 0
    out = counts.argmax(axis=1)
    unknown = ~known[objects]
    if unknown.any():
        near = np.ones((K, num_classes))
        if labelled.any():
            _, nearest = cKDTree(xyz[labelled]).query(xyz[unknown])
            near = np.bincount(objects[unknown] * num_classes + gt[labelled][nearest],
                               minlength=K * num_classes).reshape(K, num_classes).astype(np.float64)
        rows = np.flatnonzero(~known)
        out[rows] = _draw(near[rows] / near[rows].sum(axis=1, keepdims=True), rng.random(len(rows)))
    return out


def surface_field(xyz: np.ndarray, length: float, rng: np.random.Generator, waves: int = FIELD_WAVES) -> np.ndarray:
    """(N,) a smooth random field of unit variance and correlation length `length` metres
    (random Fourier features of a Gaussian kernel) at the points `xyz`."""
    omega = rng.standard_normal((waves, 3)) / length
    phase = rng.uniform(0.0, 2 * np.pi, waves)
    return np.sqrt(2.0 / waves) * np.cos(np.asarray(xyz, np.float64) @ omega.T + phase).sum(axis=1)


@dataclass(frozen=True)
class SceneModel:
    """The per-scene draws of the model (module docstring): per vertex its object and its pull
    toward the confusable class (object pull + surface field); per object the class it looks
    like, the class it can be mistaken for, and its leaning toward unrelated classes."""

    objects: np.ndarray  # (N,) int64 object of each vertex
    pull: np.ndarray  # (N,) float32 w(x) before a view's jitter
    looks: np.ndarray  # (K,) int64
    mistaken_for: np.ndarray  # (K,) int64
    lean: np.ndarray  # (K, C) float32, instance_noise * z_k

    def logits(self, vertex: np.ndarray, margin: float, jitter: np.ndarray | None = None) -> np.ndarray:
        """(..., C) float32 logits of the vertices `vertex` (any shape, ids >= 0) as one view sees
        them: `jitter` (K,) shifts each object's pull in this view (None: no shift)."""
        k = np.asarray(self.objects[vertex])
        w = self.pull[vertex] + (np.float32(0.0) if jitter is None else jitter[k].astype(np.float32))
        w = np.clip(w, 0.0, 1.0).ravel()
        out = self.lean[k]  # a copy, (..., C)
        flat, k = out.reshape(-1, out.shape[-1]), k.ravel()
        rows = np.arange(len(flat))
        flat[rows, self.looks[k]] += margin * (1.0 - w)
        flat[rows, self.mistaken_for[k]] += margin * w
        return out


def scene_model(
    xyz: np.ndarray,
    faces: np.ndarray,
    gt: np.ndarray,
    instance: np.ndarray | None,
    confusions: np.ndarray,
    cfg: SimulatedCLIPConfig,
    rng: np.random.Generator,
) -> SceneModel:
    """The scene's draws (see `SceneModel`) from the mesh's ground truth and instances."""
    C = confusions.shape[0]
    gt = np.asarray(gt).astype(np.int64)
    if len(gt) and gt.max() >= C:
        raise ValueError(f"simulated-clip: ground-truth label {int(gt.max())} outside 0..{C - 1}")
    objects = mesh_instances(xyz, faces, gt, instance)
    K = int(objects.max()) + 1
    looks = apparent_classes(xyz, gt, objects, C, rng)
    mistaken_for = _draw(confusions[looks], rng.random(K))
    pull = rng.uniform(0.0, 0.5 / (1.0 - cfg.confusion), K)
    lean = cfg.instance_noise * rng.standard_normal((K, C))
    field = cfg.surface_noise * surface_field(xyz, cfg.region_m, rng)
    return SceneModel(objects, (pull[objects] + field).astype(np.float32), looks, mistaken_for, lean.astype(np.float32))


def _draw(rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Categorical draws: for each k, the class j with cumsum(rows[k])[j-1] <= u[k] < cumsum[j]."""
    cum = np.cumsum(rows, axis=-1)
    return np.minimum((u[..., None] >= cum).sum(axis=-1), rows.shape[-1] - 1)


# --------------------------------------------------------------------------------------------
# Per view: patches, noise, upsampling, labels, scores, features
# --------------------------------------------------------------------------------------------
def view_logits(
    surface: np.ndarray, hit: np.ndarray, rng: np.random.Generator, patch: int = 16, patch_noise: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """(pixel logits (H, W, C), patch logits (ceil(H/p), ceil(W/p), C)) of one view.

    surface: (H, W, C) logits of the surface each pixel shows (`SceneModel.logits` of the vertices
    rendered through the view); hit: (H, W) bool, False where the pixel shows nothing. A patch's logits are
    the mean over its hit pixels plus `patch_noise` Gaussian noise; they are upsampled bilinearly
    (align_corners=False, as MaskCLIP does) to the pixels.
    """
    H, W, C = surface.shape
    hp, wp = -(-H // patch), -(-W // patch)
    padded = np.zeros((hp * patch, wp * patch, C), np.float32)
    padded[:H, :W] = np.where(hit[..., None], surface, np.float32(0.0))
    count = np.zeros((hp * patch, wp * patch), np.float32)
    count[:H, :W] = hit
    sums = padded.reshape(hp, patch, wp, patch, C).sum(axis=(1, 3))
    counts = count.reshape(hp, patch, wp, patch).sum(axis=(1, 3))
    noise = (patch_noise * rng.standard_normal((hp, wp, C))).astype(np.float32)
    patches = sums / np.maximum(counts, 1.0)[..., None] + noise
    grid = torch.from_numpy(patches.transpose(2, 0, 1)[None])
    pixels = F.interpolate(grid, size=(hp * patch, wp * patch), mode="bilinear", align_corners=False)
    return pixels[0].numpy().transpose(1, 2, 0)[:H, :W], patches


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def simulate_view(
    surface: np.ndarray,
    hit: np.ndarray,
    rng: np.random.Generator,
    text_embeddings: np.ndarray | None = None,
    patch: int = 16,
    patch_noise: float = 0.5,
    feature_noise: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """MaskCLIP-like (label i16 (H,W), score f16 (H,W), feature f16 (H/patch, W/patch, D) or None)
    of one view from its `view_logits`: label = argmax, score = softmax maximum, features =
    normalize(softmax(patch logits) @ text_embeddings + noise of norm about `feature_noise`)."""
    if surface.ndim != 3 or hit.shape != surface.shape[:2]:
        raise ValueError(f"simulate_view: surface must be (H,W,C) and hit (H,W), got {surface.shape}, {hit.shape}")
    pixels, patches = view_logits(surface, hit, rng, patch, patch_noise)
    label = pixels.argmax(axis=-1).astype(np.int16)
    score = (1.0 / np.exp(pixels - pixels.max(axis=-1, keepdims=True)).sum(axis=-1)).astype(np.float16)  # softmax max
    feature = None
    if text_embeddings is not None:
        D = text_embeddings.shape[1]
        noise = rng.standard_normal(patches.shape[:2] + (D,)) * (feature_noise / np.sqrt(D))
        f = softmax(patches) @ text_embeddings + noise
        feature = (f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), 1e-12)).astype(np.float16)
    return label, score, feature


def seed_for(seed: int, scene_id: str, view_name: str | None = None) -> list[int]:
    """Seed of a scene's draws (view_name None) or of one view's: the same whatever else is
    labelled with them."""
    parts = [seed, zlib.crc32(scene_id.encode())]
    return parts if view_name is None else parts + [zlib.crc32(view_name.encode())]
