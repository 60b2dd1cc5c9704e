"""Cut pursuit: the energy by hand, exact recovery of a piecewise-constant signal, and the
official parallel cut pursuit's energies on a real ScanNet graph as the bar to meet."""

from __future__ import annotations

import json
from contextlib import contextmanager

import numba
import numpy as np
import pytest
from scipy.spatial import cKDTree

from preprocess.partition.cut_pursuit import cut_pursuit, partition_energy

REGS = ["0.01", "0.03", "0.1", "0.3"]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a, b]), axis=1).shape[1]
    return pairs == np.unique(a).size == np.unique(b).size


# A path 0-1-2-3 whose first edge is listed twice (a mutual kNN pair counts twice).
FEATURES = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 2.0]])
SOURCE = np.array([0, 1, 1, 2])
TARGET = np.array([1, 0, 2, 3])
WEIGHTS = np.array([1.0, 1.0, 2.0, 0.5])


@pytest.mark.parametrize(
    ("components", "expected"),
    [
        # means (1,0), (10,1): 1/2 * (1+1+1+1) + 0.5 * 2
        ([0, 0, 1, 1], 3.0),
        # no fidelity term, every edge cut: 0.5 * (1+1+2+0.5)
        ([0, 1, 2, 3], 2.25),
        # mean (5.5, 0.5): 1/2 * (30.5 + 12.5 + 20.5 + 22.5)
        ([7, 7, 7, 7], 43.0),
        # the doubled edge is cut twice: 1/2 * (0 + (2-22/3)^2 + ... ) + 0.5 * (1+1)
        ([0, 1, 1, 1], 0.5 * ((2 - 22 / 3) ** 2 + (10 - 22 / 3) ** 2 * 2 + (2 / 3) ** 2 * 2 + (4 / 3) ** 2) + 1.0),
    ],
)
def test_partition_energy_by_hand(components: list[int], expected: float) -> None:
    energy = partition_energy(FEATURES, SOURCE, TARGET, WEIGHTS, np.array(components), reg=0.5)
    assert energy == pytest.approx(expected, rel=1e-12)


def test_path_takes_the_cheapest_partition() -> None:
    # reg 10: cutting the middle edge costs 20 < 43 of one component; any other cut costs more.
    components, energy = cut_pursuit(FEATURES, SOURCE, TARGET, WEIGHTS, reg=10.0)
    assert components.tolist() == [0, 0, 1, 1]
    assert energy == pytest.approx(2.0 + 20.0, rel=1e-12)
    # reg 100: 43 < cutting anything (>= 50).
    components, energy = cut_pursuit(FEATURES, SOURCE, TARGET, WEIGHTS, reg=100.0)
    assert components.tolist() == [0, 0, 0, 0]
    assert energy == pytest.approx(43.0, rel=1e-12)


def _three_regions(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """1500 random points in the unit square, 3 sectors of distinct 2-D values plus noise,
    directed 8-NN edges (mutual pairs appear twice), unit weights."""
    rng = np.random.default_rng(seed)
    xy = rng.random((1500, 2))
    truth = np.where(xy[:, 0] < 0.4, 0, np.where(xy[:, 1] < 0.5, 1, 2))
    values = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    signal = values[truth] + rng.normal(0.0, 0.05, (xy.shape[0], 2))
    _, nn = cKDTree(xy).query(xy, k=9)
    source = np.repeat(np.arange(xy.shape[0]), 8)
    return signal, source, nn[:, 1:].ravel(), truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_piecewise_constant_signal_is_recovered_exactly(seed: int) -> None:
    signal, source, target, truth = _three_regions(seed)
    weights = np.ones(source.size)
    components, energy = cut_pursuit(signal, source, target, weights, reg=0.02)
    assert components.dtype == np.int32
    assert _same_partition(components, truth)
    assert energy == pytest.approx(partition_energy(signal, source, target, weights, truth, 0.02), rel=1e-9)
    again, _ = cut_pursuit(signal, source, target, weights, reg=0.02)
    np.testing.assert_array_equal(again, components)


@contextmanager
def numba_threads(n: int):
    """Run with n of Numba's threads (at most as many as it started with)."""
    before = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def test_two_threads_give_the_one_thread_partition() -> None:
    # A noisy signal that splits into many components, so each split step deals many of them to
    # the two threads.
    signal, source, target, _ = _three_regions(3)
    signal = signal + np.random.default_rng(3).normal(0.0, 0.25, signal.shape)
    weights = np.ones(source.size)
    with numba_threads(1):
        serial, serial_energy = cut_pursuit(signal, source, target, weights, reg=0.01)
    with numba_threads(2):
        parallel, parallel_energy = cut_pursuit(signal, source, target, weights, reg=0.01)
    assert serial.max() + 1 >= 10
    np.testing.assert_array_equal(parallel, serial)
    assert parallel_energy == serial_energy


def test_a_pair_listed_twice_is_one_edge_of_twice_the_weight() -> None:
    # Listing each pair once with the summed weight of its listings must change nothing.
    signal, source, target, _ = _three_regions(4)
    signal = signal + np.random.default_rng(4).normal(0.0, 0.25, signal.shape)
    weights = np.random.default_rng(5).uniform(0.5, 1.5, source.size)
    low, high = np.minimum(source, target), np.maximum(source, target)
    pairs, inverse = np.unique(low * len(signal) + high, return_inverse=True)
    summed = np.bincount(inverse, weights=weights)
    listed, listed_energy = cut_pursuit(signal, source, target, weights, reg=0.01)
    once, once_energy = cut_pursuit(signal, pairs // len(signal), pairs % len(signal), summed, reg=0.01)
    assert pairs.size < source.size
    assert listed.max() + 1 >= 10
    np.testing.assert_array_equal(once, listed)
    assert once_energy == pytest.approx(listed_energy, rel=1e-12)


def test_components_are_numbered_by_first_vertex() -> None:
    signal, source, target, _ = _three_regions(0)
    components, _ = cut_pursuit(signal, source, target, np.ones(source.size), reg=0.02)
    _, first = np.unique(components, return_index=True)
    assert components[np.sort(first)].tolist() == [0, 1, 2]


def test_disconnected_vertices_stay_apart() -> None:
    # Two equal values with no edge between them cannot share a component.
    components, energy = cut_pursuit(np.zeros((3, 1)), np.array([0]), np.array([1]), np.array([1.0]), reg=1.0)
    assert components.tolist() == [0, 0, 1]
    assert energy == 0.0


@pytest.mark.parametrize(
    ("source", "target", "weights", "reg"),
    [
        ([0, 1], [1], [1.0, 1.0], 0.1),  # lengths differ
        ([0, 3], [1, 2], [1.0, 1.0], 0.1),  # endpoint out of range
        ([0, 1], [1, 2], [1.0, -1.0], 0.1),  # negative weight
        ([0, 1], [1, 2], [1.0, 1.0], -0.1),  # negative reg
        ([0, 1], [1, 2], [1.0, 1.0], float("nan")),  # reg not a number
        ([0.0, 1.0], [1, 2], [1.0, 1.0], 0.1),  # float endpoints
    ],
)
def test_bad_input_raises(source: list, target: list, weights: list, reg: float) -> None:
    with pytest.raises(ValueError):
        cut_pursuit(np.zeros((3, 2)), np.array(source), np.array(target), np.array(weights), reg)


@pytest.fixture(scope="module")
def reference(shared_data):
    folder = shared_data / "scannet" / "superpoint-reference"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    graph = np.load(folder / "graph.npz")
    summary = json.loads((folder / "summary.json").read_text())
    return folder, np.load(folder / "features.npy"), graph["source"], graph["target"], graph["weight"], summary


@pytest.mark.realdata
def test_reference_partitions_have_the_published_energies(reference) -> None:
    """Our energy convention is the one summary.json was computed with."""
    folder, features, source, target, weight, summary = reference
    for reg in REGS:
        components = np.load(folder / f"components_reg{reg}.npy").astype(np.int64)
        energy = partition_energy(features, source, target, weight, components, float(reg))
        assert energy == pytest.approx(summary[reg]["energy"], rel=1e-6)


@pytest.mark.realdata
@pytest.mark.parametrize("reg", REGS)
def test_energy_within_two_percent_of_parallel_cut_pursuit(reference, reg: str) -> None:
    _, features, source, target, weight, summary = reference
    components, energy = cut_pursuit(features, source, target, weight, float(reg))
    assert energy == pytest.approx(partition_energy(features, source, target, weight, components, float(reg)), rel=1e-9)
    assert energy <= 1.02 * summary[reg]["energy"]
    segments = components.max() + 1
    assert np.array_equal(np.unique(components), np.arange(segments))
    assert 0.8 <= segments / summary[reg]["segments"] <= 1.25


@pytest.mark.realdata
@pytest.mark.parametrize("reg", ["0.03", "0.3"])
def test_two_threads_keep_the_serial_partition_on_a_real_graph(reference, reg: str) -> None:
    """Every min cut is exact and no component is cut in pieces, so threads change nothing (the
    issue asked for the energy within 0.5%)."""
    _, features, source, target, weight, _ = reference
    with numba_threads(1):
        serial, serial_energy = cut_pursuit(features, source, target, weight, float(reg))
    with numba_threads(2):
        parallel, parallel_energy = cut_pursuit(features, source, target, weight, float(reg))
    assert parallel_energy == serial_energy
    np.testing.assert_array_equal(parallel, serial)
