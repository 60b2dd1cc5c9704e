"""Consistency sets from 2D masks: per-image segments projected to 3D and merged across views.

Chen et al. (NeurIPS'23, "Towards label-free scene understanding by vision foundation models")
take SAM masks; CLIP2Scene takes SLIC superpixels of the camera images. Either way a mask says
"these pixels belong together" in one view; this module turns many such statements into 3D sets.

The rule (one pass per view, vectorised over the link graph's edges):
* links are the edges of the scene's own neighbourhood graph: mesh edges, or each point's `knn`
  nearest neighbours for point clouds, so a set is always connected in 3D and a mask that
  spills over a depth edge links nothing across it;
* a view votes on a link when it sees both points (the projection's occlusion test) inside a
  mask (id > 0): "same mask" agrees, "different masks" disagrees; views that do not see both
  points masked say nothing;
* a link holds when `agree >= consistency * voted` (and at least one view voted): the share of
  the views that saw both points that put them in one mask. So a boundary that SLIC draws
  differently in one view of five does not cut an object, while two objects that one view
  merges but the others separate stay apart;
* sets are the connected components of the held links. A set smaller than `min_points` joins
  the neighbouring set it has the most agreeing votes with; one with no such neighbour, and
  every point no view saw inside a mask, gets -1 ("in no set": refinement keeps its raw label,
  the set losses skip it).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from preprocess.datasets.scene import Scene, View
from preprocess.io.frames import check_aspect, read_id_png
from preprocess.geometry.graph import distinct, neighbour_edges
from preprocess.geometry.projection import visible_pixels
from shared.partitioners import MaskParams


def count_votes(
    num_points: int, a: np.ndarray, b: np.ndarray, views: Iterable[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per edge: views that put both points in one mask (agree), views that saw both masked
    (voted); per point: whether any view saw it inside a mask.

    views: per view (point index (M,), mask id (M,)) of the points it sees; id 0 = in no mask.
    """
    agree = np.zeros(len(a), np.int32)
    voted = np.zeros(len(a), np.int32)
    masked = np.zeros(num_points, bool)
    ids = np.zeros(num_points, np.int64)
    for idx, mask_id in views:
        ids[:] = 0
        ids[idx] = mask_id
        ia, ib = ids[a], ids[b]
        both = (ia > 0) & (ib > 0)
        voted += both
        agree += both & (ia == ib)
        masked[idx[mask_id > 0]] = True
    return agree, voted, masked


def merge_votes(
    num_points: int,
    a: np.ndarray,
    b: np.ndarray,
    agree: np.ndarray,
    voted: np.ndarray,
    masked: np.ndarray,
    consistency: float = 0.5,
    min_points: int = 20,
) -> np.ndarray:
    """(N,) int32 set ids 0..S-1 in order of each set's first point, -1 for points in no set
    (see the module's rule)."""
    if not 0.0 < consistency <= 1.0:
        raise ValueError(f"consistency must be in (0, 1], got {consistency}")
    if min_points < 1:
        raise ValueError(f"min_points must be >= 1, got {min_points}")
    held = (voted > 0) & (agree >= consistency * voted)
    graph = coo_matrix((np.ones(int(held.sum()), np.int8), (a[held], b[held])), shape=(num_points, num_points))
    count, comp = connected_components(graph, directed=False)
    comp = np.where(masked, comp, -1)
    size = np.bincount(comp[comp >= 0], minlength=count)
    small = size < min_points
    # a small set joins the large neighbour it shares most agreeing votes with (one round)
    ca, cb, w = comp[a], comp[b], agree
    cross = (ca >= 0) & (cb >= 0) & (ca != cb) & (w > 0)
    src = np.concatenate([ca[cross], cb[cross]])
    dst = np.concatenate([cb[cross], ca[cross]])
    weight = np.concatenate([w[cross], w[cross]]).astype(np.int64)
    into = small[src] & ~small[dst]
    target = np.arange(count)
    if into.any():
        pair, inverse = distinct(src[into] * count + dst[into])
        total = np.bincount(inverse, weights=weight[into])
        order = np.lexsort((pair % count, -total, pair // count))  # per small set: heaviest, then lowest id
        first = np.r_[True, (pair[order] // count)[1:] != (pair[order] // count)[:-1]]
        target[pair[order][first] // count] = pair[order][first] % count
    target[small & (target == np.arange(count))] = -1
    comp = np.where(comp >= 0, target[np.maximum(comp, 0)], -1)
    kept = np.flatnonzero(comp >= 0)
    first = np.full(count, num_points, np.int64)
    np.minimum.at(first, comp[kept], kept)
    used = np.flatnonzero(first < num_points)
    rank = np.full(count, -1, np.int64)
    rank[used[np.argsort(first[used], kind="stable")]] = np.arange(len(used))
    return np.where(comp >= 0, rank[np.maximum(comp, 0)], -1).astype(np.int32)


def slic_masks(image: np.ndarray, n_segments: int = 150, compactness: float = 10.0, width: int = 320) -> np.ndarray:
    """SLIC superpixels (scikit-image) of an RGB image resized to `width` (aspect kept): (h, w)
    int32 ids >= 1, so 0 can keep meaning "in no mask"."""
    from PIL import Image
    from skimage.segmentation import slic

    if image.shape[1] != width:
        height = max(1, round(image.shape[0] * width / image.shape[1]))
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    return slic(image, n_segments=n_segments, compactness=compactness, start_label=1, channel_axis=-1).astype(np.int32)


def view_masks(view: View, params: MaskParams) -> np.ndarray:
    """A view's (h, w) mask ids, 0 = in no mask: SLIC of its colour image, or its mask file."""
    if params.source == "slic":
        return slic_masks(view.load_color(), params.n_segments, params.compactness, params.width)
    path = view.frame_file(params.folder, ".png")
    ids = read_id_png(path, "mask file", "write one 8- or 16-bit PNG of mask ids per frame, 0 = no mask "
                      "(README: sets from 2D masks), or use source = \"slic\"")
    check_aspect(path, ids.shape, view)
    return ids


def mask_partition(scene: Scene, params: MaskParams) -> tuple[np.ndarray, dict]:
    """Sets of `scene`'s points from the masks of its views (every `frame_skip`-th frame of a
    video; all cameras of a LiDAR sweep): (segment ids, extra attributes for the store)."""
    views = scene.views[:: params.frame_skip] if scene.faces is not None else list(scene.views)
    a, b = neighbour_edges(scene.xyz, scene.faces, params.knn).T

    def masked_points() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for view in views:
            ids = view_masks(view, params)
            idx, u, v = visible_pixels(scene, view, ids.shape[1], ids.shape[0], params.depth_tolerance)
            yield idx, ids[v, u]

    agree, voted, masked = count_votes(len(scene.xyz), a, b, masked_points())
    segment = merge_votes(len(scene.xyz), a, b, agree, voted, masked, params.consistency, params.min_points)
    return segment, {"views": len(views), "masked_points": int(masked.sum()), "in_no_set": int((segment < 0).sum())}
