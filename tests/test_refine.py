"""Intra-set refinement on hand-made sets (method.md §2)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.refine import refine_labels, set_labels


def _refine(label, score, segment, num_classes=4, **kw):
    return refine_labels(np.array(label, np.int16), np.array(score, np.float32),
                         np.array(segment, np.int32), num_classes, **kw)


def test_majority_wins_and_fills_unseen_points():
    #           set 0: 2x class 1, 1x class 2, one unseen | set 1: 1x class 3, one unseen
    label = [1, 1, 2, -1, 3, -1]
    score = [1, 1, 1, 0, 1, 0]
    segment = [0, 0, 0, 0, 1, 1]
    out = _refine(label, score, segment)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, [1, 1, 1, 1, 3, 3])


def test_score_weighting_beats_count():
    # Three weak votes for class 0 (0.2 each) lose to one strong vote for class 2 (0.9).
    out = _refine([0, 0, 0, 2], [0.2, 0.2, 0.2, 0.9], [0, 0, 0, 0])
    np.testing.assert_array_equal(out, [2, 2, 2, 2])


def test_tie_goes_to_lowest_class_id():
    # Equal weight for classes 3 and 1: share 0.5 >= rho 0.5, winner is class 1.
    out = _refine([3, 1], [0.5, 0.5], [0, 0])
    np.testing.assert_array_equal(out, [1, 1])
    # Order of the points does not matter.
    np.testing.assert_array_equal(_refine([1, 3], [0.5, 0.5], [0, 0]), [1, 1])


def test_threshold_respected():
    # Winner share exactly 0.5 is refined ...
    np.testing.assert_array_equal(_refine([0, 1, 2], [0.5, 0.25, 0.25], [0, 0, 0]), [0, 0, 0])
    # ... just below 0.5 keeps y0.
    np.testing.assert_array_equal(_refine([0, 1, 2, -1], [0.49, 0.26, 0.25, 0.0], [0, 0, 0, 0]),
                                  [0, 1, 2, -1])
    # A stricter rho keeps a set that the default would refine.
    np.testing.assert_array_equal(_refine([0, 0, 1], [1, 1, 1], [0, 0, 0], rho=0.7), [0, 0, 1])
    np.testing.assert_array_equal(_refine([0, 0, 1], [1, 1, 1], [0, 0, 0], rho=0.6), [0, 0, 0])


def test_set_without_seen_points_and_points_in_no_set_unchanged():
    label = [-1, -1, 2, 1, 1]
    score = [0, 0, 1, 1, 1]
    segment = [0, 0, 1, -1, 1]  # set 0 unseen; point 3 in no set
    np.testing.assert_array_equal(_refine(label, score, segment), [-1, -1, 1, 1, 1])


def test_set_labels_per_set_and_gaps():
    label = np.array([1, 1, 2, -1, 0, 3], np.int16)
    score = np.ones(6, np.float32)
    segment = np.array([0, 0, 0, 1, 3, 3], np.int32)  # set 2 has no points; set 3 is a 50/50 tie
    out = set_labels(label, score, segment, 4)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, [1, -1, -1, 0])


def test_visual_weighting_changes_outcome():
    # Class 0 has two votes, class 1 one, so the plain vote picks class 0. The seen features sum
    # to (4, 0): the class-0 voters point away from the set's mean (cos < 0, weight 0) while the
    # class-1 voter agrees with it (cos 1), so the weighted vote picks class 1.
    label = np.array([0, 0, 1, -1], np.int16)
    score = np.ones(4, np.float32)
    segment = np.zeros(4, np.int32)
    features = np.array([[-1.0, 0.2], [-1.0, -0.2], [6.0, 0.0], [0.0, 0.0]], np.float32)
    np.testing.assert_array_equal(refine_labels(label, score, segment, 2), [0, 0, 0, 0])
    np.testing.assert_array_equal(refine_labels(label, score, segment, 2, features=features), [1, 1, 1, 1])


def test_visual_weighting_all_votes_unlike_keeps_y0():
    # Two opposite features: the set mean is zero, so every vote weighs zero and y0 is kept.
    label = np.array([0, 1], np.int16)
    features = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)
    out = refine_labels(label, np.ones(2, np.float32), np.zeros(2, np.int32), 2, features=features)
    np.testing.assert_array_equal(out, [0, 1])


def test_large_random_matches_reference():
    rng = np.random.default_rng(0)
    n, s, c = 20000, 4000, 5
    segment = rng.integers(0, s, n).astype(np.int32)
    label = rng.integers(-1, c, n).astype(np.int16)
    score = rng.random(n).astype(np.float32)
    out = refine_labels(label, score, segment, c)
    expected = label.copy()
    for g in range(s):  # reference: plain loop over sets
        m = segment == g
        seen = m & (label >= 0)
        h = np.array([score[seen & (label == k)].astype(np.float64).sum() for k in range(c)])
        if h.sum() > 0 and h.max() >= 0.5 * h.sum():
            expected[m] = h.argmax()
    np.testing.assert_array_equal(out, expected)


def test_mismatched_lengths_rejected():
    with pytest.raises(ValueError, match="equal-length"):
        _refine([0, 1], [1.0], [0, 0])
