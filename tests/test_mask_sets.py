"""Sets from 2D masks: the cross-view vote on links, exact sets from mask files seen through the
projection (occlusion included), SLIC's superpixels, and the mask files' errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from preprocess.datasets.scene import Scene, View
from preprocess.geometry.graph import neighbour_edges
from preprocess.partition.masks import count_votes, mask_partition, merge_votes, slic_masks
from shared.partitioners import MaskParams
from shared.errors import DatasetError

# A line of 10 points linked in order, two more linked to its end, and two masked by no view.
A = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12])
B = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13])
N = 16


def _vote(views, consistency=0.5, min_points=1):
    agree, voted, masked = count_votes(N, A, B, views)
    return merge_votes(N, A, B, agree, voted, masked, consistency, min_points)


def _view(ids: dict[int, int]):
    return np.array(list(ids), np.int64), np.array(list(ids.values()), np.int64)


# two views split the line at 4|5; a third puts all of it in one mask. Point 10 is seen in no
# mask (id 0), 11 by no view; 12-13 hang off 9 and only view `split` agrees with that link.
split = _view({**{i: 1 for i in range(5)}, **{i: 2 for i in range(5, 10)}, 10: 0, 12: 2, 13: 2})
split2 = _view({**{i: 3 for i in range(5)}, **{i: 4 for i in range(5, 10)}, 12: 7, 13: 7})
whole = _view({**{i: 9 for i in range(10)}, 12: 8, 13: 8})


def test_a_link_holds_when_enough_of_the_views_that_saw_it_agree():
    # edge 4-5: 1 of 3 views agree; edge 9-12: 1 of 3 agree; everything else: all agree
    assert _vote([split, split2, whole], consistency=0.5).tolist() == [0] * 5 + [1] * 5 + [-1, -1, 2, 2, -1, -1]
    assert _vote([split, split2, whole], consistency=0.3).tolist() == [0] * 10 + [-1, -1, 0, 0, -1, -1]
    # views that did not see both points masked do not vote: with `whole` alone the line is one set
    assert _vote([whole]).tolist() == [0] * 10 + [-1, -1, 1, 1, -1, -1]


def test_small_sets_join_their_most_agreeing_neighbour_or_leave():
    # {12, 13} (2 points) is below min_points = 3: it joins {5..9}, with which `split` linked it
    assert _vote([split, split2, whole], min_points=3).tolist() == [0] * 5 + [1] * 5 + [-1, -1, 1, 1, -1, -1]
    # with no agreeing vote towards a large set it is in no set
    assert _vote([split2, whole], min_points=3).tolist() == [0] * 10 + [-1] * 6
    # no set is large enough: nothing to join
    assert (_vote([split, split2, whole], min_points=20) == -1).all()


def test_link_graph_of_a_mesh_and_of_points():
    edges = neighbour_edges(np.zeros((4, 3)), np.array([[0, 1, 2], [2, 1, 3]]))
    assert edges.tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]
    xyz = np.array([[0, 0, 0], [1, 0, 0], [5, 0, 0], [5.5, 0, 0]], np.float32)
    assert neighbour_edges(xyz, None, knn=1).tolist() == [[0, 1], [2, 3]]


# ------------------------------------------------------------------ through the projection
def _plane(x0: float, n: int, z: float) -> tuple[np.ndarray, np.ndarray]:
    """A square mesh at depth z (camera frame = scene frame): (n+1)^2 vertices 0.1 m apart from
    (x0, -0.51). Its border vertices lie in the inner half of their pixels, so every vertex's
    pixel centre is on the plane and the rendered depth there is exactly z."""
    coords = x0 + 0.1 * np.arange(n + 1)
    gx, gy = np.meshgrid(coords, -0.51 + 0.1 * np.arange(n + 1), indexing="ij")
    xyz = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, z)], 1).astype(np.float32)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    q = (i * (n + 1) + j).ravel()
    faces = np.concatenate([np.stack([q, q + n + 1, q + 1], 1), np.stack([q + 1, q + n + 1, q + n + 2], 1)])
    return xyz, faces.astype(np.int32)


def _scene(tmp_path: Path, mask: np.ndarray | None) -> Scene:
    """A 1.1 m plane 2 m in front of the camera (x = -0.51..0.59, no vertex at x = 0), a plane
    hidden behind it, and a plane outside the image; no depth frame, so the mesh is rendered."""
    parts = [_plane(-0.51, 11, 2.0), _plane(-0.31, 6, 2.5), _plane(5.0, 3, 2.0)]
    offsets = np.cumsum([0] + [len(p[0]) for p in parts])
    xyz = np.concatenate([p[0] for p in parts])
    faces = np.concatenate([p[1] + o for p, o in zip(parts, offsets)])
    K = np.array([[100.0, 0, 80], [0, 100.0, 60], [0, 0, 1]])
    view = View("0", np.eye(4), K, 160, 120, load_color=lambda: np.zeros((120, 160, 3), np.uint8),
                frame_root=tmp_path, frame="0")
    if mask is not None:
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask).save(tmp_path / "masks" / "0.png")
    scene = Scene("s", xyz, np.zeros_like(xyz, dtype=np.uint8), faces=faces, views=[view])
    scene.meta["parts"] = offsets
    return scene


def test_mask_files_give_exact_sets_and_hidden_or_unseen_points_no_set(tmp_path):
    mask = np.zeros((60, 80), np.uint16)  # half the camera's size: masks are used at their own size
    mask[:, :40] = 7  # image left of the optical axis: x < 0
    mask[:, 40:] = 300
    scene = _scene(tmp_path, mask)
    segment, info = mask_partition(scene, MaskParams(source="precomputed", min_points=1))
    front, hidden, outside = (slice(a, b) for a, b in zip(scene.meta["parts"][:-1], scene.meta["parts"][1:]))
    x = scene.xyz[front, 0]
    assert segment[front].tolist() == np.where(x < 0, 0, 1).tolist()
    assert (segment[hidden] == -1).all() and (segment[outside] == -1).all()
    assert info == {"views": 1, "masked_points": int((segment >= 0).sum()), "in_no_set": int((segment < 0).sum())}


def test_mask_file_errors_name_the_file(tmp_path):
    scene = _scene(tmp_path, None)
    params = MaskParams(source="precomputed")
    with pytest.raises(DatasetError, match=r"masks/0\.png: mask file not found; write one 8- or 16-bit PNG"):
        mask_partition(scene, params)
    _scene(tmp_path, np.zeros((60, 60), np.uint8))
    with pytest.raises(DatasetError, match=r"masks/0\.png: 60x60 does not have the aspect ratio of the 160x120"):
        mask_partition(scene, params)
    Image.fromarray(np.zeros((120, 160, 3), np.uint8)).save(tmp_path / "masks" / "0.png")
    with pytest.raises(DatasetError, match=r"masks/0\.png: mask file must be a single-channel 8- or 16-bit PNG"):
        mask_partition(scene, params)
    (tmp_path / "masks" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"masks/0\.png: not a readable PNG"):
        mask_partition(scene, params)


def test_slic_superpixels_follow_colour_edges():
    image = np.zeros((90, 160, 3), np.uint8)
    image[:, 80:] = (200, 40, 40)
    ids = slic_masks(image, n_segments=8, compactness=10.0, width=160)
    assert ids.shape == (90, 160) and ids.min() >= 1
    left, right = set(np.unique(ids[:, :80]).tolist()), set(np.unique(ids[:, 80:]).tolist())
    assert left and right and not left & right
    assert slic_masks(image, 8, 10.0, width=80).shape == (45, 80)
