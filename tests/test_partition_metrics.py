"""Partition quality metrics on hand-made arrays with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from preprocess.geometry.graph import knn_edges, mesh_edges
from preprocess.partition.metrics import (
    boundary_points,
    boundary_recall,
    partition_report,
    purity,
    size_stats,
    spanning_share,
    undersegmentation_error,
)

#                     point: 0  1  2  3  4   5  6  7
SEGMENT = np.array([0, 0, 0, 1, 1, 2, 2, 2])
LABELS = np.array([5, 5, 7, 7, 7, -1, 3, 4])
CHAIN = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6], [6, 7]])


def test_purity_counts_majority_label_of_each_segment() -> None:
    # Labelled points: 7 (point 5 ignored). Majorities: segment 0 -> 5 (2 of 3),
    # segment 1 -> 7 (2 of 2), segment 2 -> 3 or 4 (1 of 2).
    assert purity(SEGMENT, LABELS) == pytest.approx(5 / 7)
    assert purity(LABELS, LABELS) == 1.0
    # Segment ids are names only: union-find roots give the same answer.
    assert purity(SEGMENT * 1000 + 5753, LABELS) == pytest.approx(5 / 7)
    assert math.isnan(purity(SEGMENT, np.full(8, -1)))


def test_spanning_share_counts_segments_over_two_instances() -> None:
    # segment 0 holds instances 5 and 7, segment 1 only 7, segment 2 3 and 4 (point 5 ignored)
    assert spanning_share(SEGMENT, LABELS) == pytest.approx(2 / 3)
    assert spanning_share(LABELS, LABELS) == 0.0
    # a segment of ignored points only is not counted: segment 2 keeps point 6 alone
    assert spanning_share(SEGMENT, np.array([5, 5, 7, 7, 7, -1, 3, -1])) == pytest.approx(1 / 3)
    assert math.isnan(spanning_share(SEGMENT, np.full(8, -1)))
    # outside the majority: segment 0 1/3 of its points, segment 2 1/2
    assert spanning_share(SEGMENT, LABELS, minority=0.4) == pytest.approx(1 / 3)
    assert spanning_share(SEGMENT, LABELS, minority=0.5) == 0.0


def test_purity_scored_on_some_points_keeps_each_segments_majority_over_all() -> None:
    # Majorities as above; segment 2's tie (labels 3 and 4, one point each) goes to label 3.
    assert purity(SEGMENT, LABELS, LABELS == 7) == pytest.approx(2 / 3)  # points 2, 3, 4: 3 and 4 agree
    assert purity(SEGMENT, LABELS, np.ones(8, bool)) == pytest.approx(5 / 7)
    assert purity(SEGMENT, LABELS, np.arange(8) == 6) == 1.0
    assert purity(SEGMENT, LABELS, np.arange(8) == 7) == 0.0
    assert math.isnan(purity(SEGMENT, LABELS, np.arange(8) == 5))  # only an ignored point scored


def test_undersegmentation_error_is_leakage_over_labelled_points() -> None:
    # Segment sizes over labelled points: 3, 2, 2. Overlapping (segment, region) pairs and the
    # points of the segment outside the region: (0,5): 1, (0,7): 2, (1,7): 0, (2,3): 1, (2,4): 1.
    assert undersegmentation_error(SEGMENT, LABELS) == pytest.approx(5 / 7)
    assert undersegmentation_error(np.arange(8), LABELS) == 0.0
    # One segment over everything: each of the 4 regions sees the 7 - |G| points outside it.
    assert undersegmentation_error(np.zeros(8, int), LABELS) == pytest.approx((4 * 7 - 7) / 7)


def test_boundary_points_and_recall_over_a_chain() -> None:
    # GT boundary edges: (1,2) labels 5|7 and (6,7) labels 3|4 ((4,5) and (5,6) touch an ignored
    # point), so GT boundary points 1, 2, 6, 7. SEGMENT cuts (2,3) and (4,5): points 2, 3, 4, 5.
    np.testing.assert_array_equal(np.flatnonzero(boundary_points(LABELS, CHAIN)), [1, 2, 6, 7])
    np.testing.assert_array_equal(np.flatnonzero(boundary_points(SEGMENT, CHAIN)), [2, 3, 4, 5])
    assert boundary_recall(SEGMENT, LABELS, CHAIN) == 0.25  # point 2
    assert boundary_recall(SEGMENT, LABELS, CHAIN, tolerance=1) == 0.75  # 1, 2 and 6 within a hop of a cut
    assert boundary_recall(SEGMENT, LABELS, CHAIN, tolerance=2) == 1.0
    assert boundary_recall(np.array([0, 0, 0, 1, 1, 2, 2, 3]), LABELS, CHAIN) == 0.75  # 2, 6, 7
    assert boundary_recall(np.arange(8), LABELS, CHAIN) == 1.0
    assert math.isnan(boundary_recall(SEGMENT, np.zeros(8, int), CHAIN))


def test_edge_builders() -> None:
    np.testing.assert_array_equal(
        mesh_edges(np.array([[0, 1, 2], [2, 1, 3]])), [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]
    )
    points = np.array([[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [10, 0, 0]])
    np.testing.assert_array_equal(knn_edges(points, k=1), [[0, 1], [1, 2], [2, 3]])
    assert knn_edges(points, k=3).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]


def test_size_stats() -> None:
    assert size_stats(np.array([3, 3, 3, 7, 9, 9])) == {"count": 3, "min": 1, "median": 2.0, "mean": 2.0, "max": 3}


def test_partition_report_against_instances_and_against_boxes() -> None:
    sizes = {"count": 3, "min": 2, "median": 3.0, "mean": 8 / 3, "max": 3}
    assert partition_report(SEGMENT, LABELS, CHAIN) == pytest.approx(
        {**sizes, "purity": 5 / 7, "undersegmentation_error": 5 / 7, "boundary_recall": 0.25}
    )
    # As boxes: point 5 is background, instance 8. Segment 2 holds 8, 3, 4 (tie: 3 wins).
    # Leakage pairs: (0,5): 1, (0,7): 2, (1,7): 0, (2,8): 2, (2,3): 2, (2,4): 2 -> 9 over 8 points.
    # GT boundary points 1, 2, 4, 5, 6, 7; cut at 2, 4, 5.
    assert partition_report(SEGMENT, LABELS, CHAIN, background=True) == pytest.approx(
        {**sizes, "purity": 5 / 8, "in_box_purity": 5 / 7, "undersegmentation_error": 9 / 8, "boundary_recall": 0.5}
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: purity(SEGMENT.astype(float), LABELS), "segment must be"),
        (lambda: purity(SEGMENT, LABELS[:-1]), "labels has 7 entries"),
        (lambda: undersegmentation_error(SEGMENT, LABELS[None]), "instances must be"),
        (lambda: boundary_recall(SEGMENT, LABELS, np.array([[0, 8]])), "outside"),
        (lambda: boundary_recall(SEGMENT, LABELS, np.array([0, 1])), "edges must be"),
        (lambda: boundary_recall(SEGMENT, LABELS, CHAIN, tolerance=-1), "tolerance must be"),
        (lambda: purity(SEGMENT, LABELS, np.ones(8)), "scored must be a boolean mask"),
        (lambda: partition_report(SEGMENT, LABELS[:3], CHAIN), "instance has 3 entries"),
        (lambda: size_stats(np.array([], dtype=int)), "empty"),
        (lambda: mesh_edges(np.array([[0, 1]])), "faces must be"),
        (lambda: knn_edges(np.array([[0.0, np.nan, 0.0]])), "finite"),
    ],
)
def test_bad_input_raises(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_plot_partitions_writes_oblique_panels_side_by_side(tmp_path) -> None:
    from matplotlib.image import imread

    from preprocess.partition.figures import plot_partitions

    n = 30
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    xyz = np.stack([i.ravel(), j.ravel(), np.zeros(n * n)], axis=1) / (n - 1)
    q = (i[:-1, :-1] * n + j[:-1, :-1]).ravel()
    faces = np.concatenate([np.stack([q, q + n, q + 1], 1), np.stack([q + 1, q + n, q + n + 1], 1)])
    tiles = (i.ravel() // 5) * 6 + j.ravel() // 5  # 36 square tiles
    partitions = {"tiles": tiles, "halves": (i.ravel() >= n // 2).astype(int)}
    for drawn_faces, name in ((faces, "mesh.png"), (None, "points.png")):
        out = plot_partitions(xyz, drawn_faces, partitions, tmp_path / name, title="grid", panel_px=120)
        image = imread(out)
        image = (image[..., :3] * 255).round().astype(np.uint8) if image.dtype != np.uint8 else image[..., :3]
        assert image.shape[1] == 2 * 120 + 6  # two panels of panel_px and the gap between them
        pixels = image.reshape(-1, 3)
        coloured = np.unique(pixels[(pixels[:, 0] != pixels[:, 1]) | (pixels[:, 1] != pixels[:, 2])], axis=0)
        assert len(coloured) >= 36 + 2
    with pytest.raises(ValueError, match="partition 'tiles'"):
        plot_partitions(xyz, faces, {"tiles": tiles[:-1]}, tmp_path / "bad.png")
