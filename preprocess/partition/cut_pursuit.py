"""L0 cut pursuit: the generalised minimal partition of a graph signal (Landrieu & Obozinski).

Minimises SPG's energy over piecewise-constant signals x (value of a component = its mean):

    E(x) = 1/2 * sum_i ||x_i - f_i||^2 + reg * sum_edges w_e * [x_source != x_target]

Each iteration SPLITs every non-saturated component in two (2-means alternatives refined by
min cuts; max-flow by Boykov-Kolmogorov), REDUCEs to the connected components of the graph
minus the cut ("active") edges, then MERGEs adjacent components best gain first while that
lowers E. The split runs on Numba's threads, one component per thread at a time, each
max-flow on the component's own compact copy of its arcs; every min cut is exact, so the
result does not depend on the threads. Unlike the official parallel cut pursuit, a large
component is never cut into pieces split apart (its "balanced split"): tried on
scene0000_00's SPG graph, pieces of 10,000-40,000 vertices raised the energy by 2-6% at reg
0.3. A pair listed twice (mutual kNN) is fused into one edge first, leaving 56% of the arcs
on that graph. Written from the papers and the notes in docs/oversegmentation.md (c); the
GPL reference code is not used. On that graph it ends 0.1-0.4% below the official parallel
cut pursuit's energy at reg 0.01-0.3 (tests/test_cut_pursuit.py); its speed against the
official program is the README's cut pursuit table (benchmarks/bench_partitions.py --only
cut-pursuit).
"""

from __future__ import annotations

import heapq
import os

import numpy as np
from numba import config, get_num_threads, njit, prange

if "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
    # Numba tries TBB first, and an older libtbb brought by another package only earns a
    # warning on every run; OpenMP serves these loops as well.
    config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def cut_pursuit(
    features: np.ndarray,
    source: np.ndarray,
    target: np.ndarray,
    weights: np.ndarray,
    reg: float,
    max_iterations: int = 15,
    tolerance: float = 1e-3,
    flow_rounds: int = 2,
    kmeans_restarts: int = 3,
    kmeans_iterations: int = 3,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Partition the vertices of an undirected graph into components of constant value.

    features: (N, D) float, the signal f to approximate.
    source, target: (E,) int, edge endpoints in [0, N). Each listed edge counts once, so a pair
        listed twice (mutual kNN) counts twice, like the reference; self-loops never count.
    weights: (E,) float >= 0, edge weights w.
    reg: regularisation strength (>= 0); larger gives fewer, larger components.
    max_iterations: most split/reduce/merge iterations.
    tolerance: stop once an iteration lowers E by less than this fraction of E.
    flow_rounds: min-cut refinements of each binary split (alternatives re-fitted in between).
    kmeans_restarts, kmeans_iterations: k-means++ restarts and Lloyd steps of the 2-means that
        proposes the two alternatives of a split.
    seed: seeds k-means++; the result is a deterministic function of the inputs and the seed.

    Returns (components int32 (N,) numbered 0..K-1 in order of first vertex, energy E).
    """
    x, src, tgt, w = _validated(features, source, target, weights)
    if not np.isfinite(reg) or reg < 0:
        raise ValueError(f"reg must be a finite number >= 0, got {reg}")
    if min(max_iterations, flow_rounds, kmeans_restarts, kmeans_iterations) < 1 or min(seed, tolerance) < 0:
        raise ValueError("max_iterations, flow_rounds, kmeans_restarts, kmeans_iterations must be >= 1, "
                         f"seed and tolerance >= 0; got {max_iterations}, {flow_rounds}, {kmeans_restarts}, "
                         f"{kmeans_iterations}, {seed}, {tolerance}")
    n = x.shape[0]
    keep = src != tgt
    src, tgt, cap = _coalesced(n, src[keep], tgt[keep], reg * w[keep])
    indptr, adj, arc_edge, rev = _forward_star(n, src, tgt)
    arc_cap = cap[arc_edge]

    one = np.zeros(n, np.int64)  # one component, split into the graph's connected ones
    comp, k = _components(one, 1, *_grouped(one, 1), np.ones(1, np.bool_), indptr, adj, arc_edge,
                          np.zeros(src.shape[0], np.bool_), 1)
    saturated = np.zeros(k, np.bool_)
    energy = _energy(x, comp, k, src, tgt, cap)
    for iteration in range(max_iterations):
        order, start = _grouped(comp, k)
        active = _cut_edges(comp, src, tgt)
        split = _split_all(
            x, comp, k, order, start, saturated, indptr, adj, arc_edge, rev, arc_cap, active,
            flow_rounds, kmeans_restarts, kmeans_iterations, np.uint64(seed * 1_000_003 + iteration), get_num_threads(),
        )
        if not split.any():
            break
        new_comp, new_k = _components(comp, k, order, start, split, indptr, adj, arc_edge, active, get_num_threads())
        new_comp, new_k, new_energy = _merge(x, new_comp, new_k, src, tgt, cap)
        if new_energy > energy:  # the greedy merge can leave a worse partition: keep the better
            break
        decrease = energy - new_energy
        saturated = _unchanged(comp, k, new_comp, new_k)
        comp, k, energy = new_comp, new_k, new_energy
        if decrease <= tolerance * energy:
            break
    return _first_vertex_order(comp), float(energy)


def partition_energy(
    features: np.ndarray,
    source: np.ndarray,
    target: np.ndarray,
    weights: np.ndarray,
    components: np.ndarray,
    reg: float,
) -> float:
    """SPG's energy of a partition with each component at its mean (see the module docstring).

    Used to compare partitions made by different programs on equal terms."""
    x, src, tgt, w = _validated(features, source, target, weights)
    comp = np.asarray(components)
    if comp.shape != (x.shape[0],) or not np.issubdtype(comp.dtype, np.integer):
        raise ValueError(
            f"components must be an integer array of shape ({x.shape[0]},), got {comp.dtype} {comp.shape}"
        )
    _, comp = np.unique(comp, return_inverse=True)
    k = int(comp.max()) + 1
    counts = np.bincount(comp, minlength=k).astype(np.float64)
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, comp, x)
    residual = x - (sums / counts[:, None])[comp]
    cut = comp[src] != comp[tgt]
    return float(0.5 * np.sum(residual * residual) + reg * np.sum(w[cut]))


def _validated(
    features: np.ndarray, source: np.ndarray, target: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0 or not np.all(np.isfinite(x)):
        raise ValueError(
            f"features must be a finite (N, D) array with N, D >= 1, got shape {np.shape(features)}"
        )
    src, tgt, w = np.asarray(source), np.asarray(target), np.asarray(weights, dtype=np.float64)
    if not (src.ndim == tgt.ndim == w.ndim == 1 and src.shape == tgt.shape == w.shape):
        raise ValueError(
            f"source, target, weights must be 1-D of equal length, got {src.shape}, {tgt.shape}, {w.shape}"
        )
    if src.size and (not np.issubdtype(src.dtype, np.integer) or not np.issubdtype(tgt.dtype, np.integer)):
        raise ValueError(f"source and target must be integer arrays, got {src.dtype}, {tgt.dtype}")
    src, tgt = src.astype(np.int64), tgt.astype(np.int64)
    if src.size and (min(src.min(), tgt.min()) < 0 or max(src.max(), tgt.max()) >= x.shape[0]):
        raise ValueError(f"edge endpoints must lie in [0, {x.shape[0]})")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and >= 0")
    return x, src, tgt, w


def _prange_only() -> dict[str, bool]:
    """Numba's parallel options with only the explicit prange loops parallel: its automatic
    parallelisation of array expressions (zeros, arange...) would add a fork and join per
    expression, a cost paid many times per split step (heavily where cores are shared)."""
    return {"comprehension": False, "reduction": False, "inplace_binop": False, "setitem": False,
            "numpy": False, "stencil": False, "fusion": False, "prange": True}


@njit(cache=True, nogil=True)
def _coalesced(n, src, tgt, cap):
    """The edges with each pair listed once, lower end first, its capacity the sum of the
    pair's (mutual kNN lists most pairs twice): the same energy for every partition, and
    about half the arcs for each split to search. Ordered by lower end, then first listing."""
    lower, higher = np.minimum(src, tgt), np.maximum(src, tgt)
    order, start = _grouped(lower, n)
    slot = np.full(n, -1, np.int64)  # slot[w]: w's edge from the current lower end, if >= first
    out_src = np.empty(src.shape[0], np.int64)
    out_tgt = np.empty(src.shape[0], np.int64)
    out_cap = np.empty(src.shape[0])
    count = 0
    for v in range(n):
        first = count
        for e in order[start[v]:start[v + 1]]:
            w = higher[e]
            if slot[w] >= first:
                out_cap[slot[w]] += cap[e]
            else:
                slot[w] = count
                out_src[count] = v
                out_tgt[count] = w
                out_cap[count] = cap[e]
                count += 1
    return out_src[:count], out_tgt[:count], out_cap[:count]


@njit(cache=True, nogil=True)
def _forward_star(n, src, tgt):
    """Both arcs of every edge grouped by tail, forward arcs first, each in edge order (a
    stable counting sort): arc -> (head, edge, the opposite arc)."""
    m = src.shape[0]
    indptr = np.zeros(n + 1, np.int64)
    for e in range(m):
        indptr[src[e] + 1] += 1
        indptr[tgt[e] + 1] += 1
    for v in range(n):
        indptr[v + 1] += indptr[v]
    fill = indptr[:-1].copy()
    adj = np.empty(2 * m, np.int64)
    arc_edge = np.empty(2 * m, np.int64)
    rev = np.empty(2 * m, np.int64)
    forward = np.empty(m, np.int64)
    for e in range(m):
        a = fill[src[e]]
        fill[src[e]] += 1
        adj[a] = tgt[e]
        arc_edge[a] = e
        forward[e] = a
    for e in range(m):
        b = fill[tgt[e]]
        fill[tgt[e]] += 1
        adj[b] = src[e]
        arc_edge[b] = e
        rev[b] = forward[e]
        rev[forward[e]] = b
    return indptr, adj, arc_edge, rev


@njit(cache=True, nogil=True, parallel=_prange_only())
def _cut_edges(comp, src, tgt):
    """Which edges join two components."""
    cut = np.empty(src.shape[0], np.bool_)
    for e in prange(src.shape[0]):
        cut[e] = comp[src[e]] != comp[tgt[e]]
    return cut


def _unchanged(old: np.ndarray, k_old: int, new: np.ndarray, k_new: int) -> np.ndarray:
    """Per new component: is its vertex set an old component's? Every old component was either
    saturated or just failed to split for good (its halves merged back), so these are saturated."""
    representative = np.zeros(k_new, np.int64)
    representative[new] = old
    pure = np.bincount(new, weights=old != representative[new], minlength=k_new) == 0
    return pure & (np.bincount(new, minlength=k_new) == np.bincount(old, minlength=k_old)[representative])


def _first_vertex_order(comp: np.ndarray) -> np.ndarray:
    _, first, inverse = np.unique(comp, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int32)
    rank[np.argsort(first)] = np.arange(first.size, dtype=np.int32)
    return rank[inverse]


@njit(cache=True, nogil=True, parallel=_prange_only())
def _components(comp, k, order, start, split, indptr, adj, arc_edge, active, threads):
    """Connected components of the graph minus the active edges, numbered in order of their
    first vertex, given that they refine `comp` (k components, active edges between any two)
    and that only the components flagged in `split` can have fallen apart (order, start:
    `_grouped(comp, k)`). Components are searched on `threads` threads, each marking the
    vertices it reached in its own scratch."""
    n = comp.shape[0]
    local = np.zeros(n, np.int64)  # which of its component's parts a vertex is in
    first = np.empty(n, np.int64)  # component c's parts' first vertices at first[start[c]:]
    parts = np.ones(k, np.int64)
    sorder, sstart = _slots(_flagged_sizes(start, split), threads)
    for s in prange(sstart.shape[0] - 1):
        reached = np.zeros(n, np.bool_)
        for c in sorder[sstart[s]:sstart[s + 1]]:
            if not split[c]:
                continue
            vs = order[start[c]:start[c + 1]]
            queue = np.empty(vs.shape[0], np.int64)
            count = 0
            for root in vs:
                if reached[root]:
                    continue
                reached[root] = True
                first[start[c] + count] = root
                local[root] = count
                head, tail = 0, 1
                queue[0] = root
                while head < tail:
                    u = queue[head]
                    head += 1
                    for a in range(indptr[u], indptr[u + 1]):
                        v = adj[a]
                        if not reached[v] and not active[arc_edge[a]]:
                            reached[v] = True
                            local[v] = count
                            queue[tail] = v
                            tail += 1
                count += 1
            parts[c] = count
    offset = np.zeros(k + 1, np.int64)
    for c in range(k):
        offset[c + 1] = offset[c] + parts[c]
    firsts = np.empty(offset[k], np.int64)
    for c in range(k):
        if split[c]:
            firsts[offset[c]:offset[c + 1]] = first[start[c]:start[c] + parts[c]]
        else:
            firsts[offset[c]] = order[start[c]]
    rank = np.empty(offset[k], np.int64)
    rank[np.argsort(firsts)] = np.arange(offset[k])
    out = np.empty(n, np.int64)
    for c in prange(k):
        for v in order[start[c]:start[c + 1]]:
            out[v] = rank[offset[c] + local[v]]
    return out, offset[k]


@njit(cache=True, nogil=True)
def _component_sums(x, comp, k):
    """Per-component feature sums (k, D) and point counts (k,)."""
    n, d = x.shape
    sums = np.zeros((k, d))
    counts = np.zeros(k)
    for i in range(n):
        counts[comp[i]] += 1.0
        for j in range(d):
            sums[comp[i], j] += x[i, j]
    return sums, counts


@njit(cache=True, nogil=True)
def _energy(x, comp, k, src, tgt, cap):
    n, d = x.shape
    sums, counts = _component_sums(x, comp, k)
    fidelity = 0.0
    for i in range(n):
        c = comp[i]
        for j in range(d):
            r = x[i, j] - sums[c, j] / counts[c]
            fidelity += r * r
    boundary = 0.0
    for e in range(src.shape[0]):
        if comp[src[e]] != comp[tgt[e]]:
            boundary += cap[e]
    return 0.5 * fidelity + boundary


@njit(cache=True, nogil=True)
def _uniform(state):
    """splitmix64: the next state and a uniform float in [0, 1)."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return state, float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, nogil=True)
def _sq_dist(x, i, center):
    s = 0.0
    for j in range(x.shape[1]):
        r = x[i, j] - center[j]
        s += r * r
    return s


@njit(cache=True, nogil=True)
def _label_means(x, label, centers):
    """Means of the two label sets into centers; False (centers untouched) if a side is empty."""
    n = x.shape[0]
    count0 = 0
    for i in range(n):
        count0 += 1 - label[i]
    count1 = n - count0
    if count0 == 0 or count1 == 0:
        return False
    centers[:] = 0.0
    for i in range(n):
        for j in range(x.shape[1]):
            centers[label[i], j] += x[i, j]
    for j in range(x.shape[1]):
        centers[0, j] /= count0
        centers[1, j] /= count1
    return True


@njit(cache=True, nogil=True)
def _terminal(x, i, centers):
    """Row i's terminal capacity for the alternatives centers[0] (source side, > 0) and centers[1]."""
    return 0.5 * (_sq_dist(x, i, centers[1]) - _sq_dist(x, i, centers[0]))


@njit(cache=True, nogil=True)
def _refit(x, label, centers):
    """Fit the alternatives to the labels and return the capacity below which the component's
    max-flows count one as saturated (1e-12 x its largest terminal capacity); -1 if a side is
    empty."""
    if not _label_means(x, label, centers):
        return -1.0
    largest = 0.0
    for i in range(x.shape[0]):
        largest = max(largest, abs(_terminal(x, i, centers)))
    return 1e-12 * largest


@njit(cache=True, nogil=True)
def _two_means(x, label, centers, restarts, iterations, state):
    """k-means++ 2-means of the rows of x; leaves the best labelling in label. False if the rows
    are all equal."""
    n = x.shape[0]
    dist = np.empty(n)
    best = np.empty((2, x.shape[1]))
    best_sse = np.inf
    for _ in range(restarts):
        state, u = _uniform(state)
        centers[0] = x[min(int(u * n), n - 1)]
        total = 0.0
        for i in range(n):
            dist[i] = _sq_dist(x, i, centers[0])
            total += dist[i]
        if total <= 0.0:
            return False
        state, u = _uniform(state)
        pick, acc = n - 1, 0.0
        for i in range(n):
            acc += dist[i]
            if acc > u * total:
                pick = i
                break
        centers[1] = x[pick]
        for _ in range(iterations):
            for i in range(n):
                label[i] = 1 if _sq_dist(x, i, centers[1]) < _sq_dist(x, i, centers[0]) else 0
            if not _label_means(x, label, centers):
                break
        sse = 0.0
        for i in range(n):
            sse += min(_sq_dist(x, i, centers[0]), _sq_dist(x, i, centers[1]))
        if sse < best_sse:
            best_sse = sse
            best[:] = centers
    for i in range(n):
        label[i] = 1 if _sq_dist(x, i, best[1]) < _sq_dist(x, i, best[0]) else 0
    return True


@njit(cache=True, nogil=True)
def _component_graph(vs, c, comp, indptr, adj, rev, arc_cap, local):
    """The arcs of the vertices vs of component c, renumbered within it: (offsets, head,
    opposite arc, capacity). Arc b of vertex i is its arc indptr[vs[i]] + b - offsets[i]; an arc
    that leaves the component keeps its place but points at the extra vertex len(vs), with no
    capacity. Small and contiguous, so one thread's max-flow stays in its cache; `local` is the
    thread's scratch (one entry per vertex of the graph)."""
    n = vs.shape[0]
    offsets = np.empty(n + 1, np.int64)
    offsets[0] = 0
    for i in range(n):
        v = vs[i]
        local[v] = i
        offsets[i + 1] = offsets[i] + indptr[v + 1] - indptr[v]
    head = np.empty(offsets[n], np.int32)
    opposite = np.empty(offsets[n], np.int32)
    capacity = np.zeros(offsets[n])
    for i in range(n):
        v = vs[i]
        b = offsets[i]
        for a in range(indptr[v], indptr[v + 1]):
            w = adj[a]
            if comp[w] == c:
                head[b] = local[w]
                opposite[b] = offsets[local[w]] + rev[a] - indptr[w]
                capacity[b] = arc_cap[a]
            else:
                head[b] = n
                opposite[b] = b
            b += 1
    return offsets, head, opposite, capacity


_FREE, _TERMINAL, _ORPHAN = -1, -2, -3
_FAR = 1 << 60


@njit(cache=True, nogil=True)
def _min_cut(offsets, head, rev, res, tr, eps, label):
    """Boykov-Kolmogorov max-flow on a component's graph (see `_component_graph`); label = 0 on the source
    side of the min cut. Returns how many labels changed.

    res: residual capacity per arc (rev pairs the two arcs of an edge); tr: terminal capacity,
    > 0 from the source, < 0 to the sink; capacities <= eps count as saturated. parent[i] is the
    arc from i to its tree parent."""
    n = offsets.shape[0] - 1
    parent = np.full(n + 1, _FREE, np.int64)  # n: where arcs leaving the component point, always free
    sink = np.zeros(n + 1, np.bool_)
    stamp = np.zeros(n + 1, np.int64)
    dist = np.ones(n + 1, np.int64)
    queued = np.zeros(n + 1, np.bool_)
    queue = np.empty(n, np.int64)
    orphans = np.empty(n, np.int64)
    q_head, q_len, o_head, o_len = 0, 0, 0, 0
    for i in range(n):  # first the paths source -> i -> j -> sink, without trees
        if tr[i] <= eps:
            continue
        for a in range(offsets[i], offsets[i + 1]):
            j = head[a]
            if j < n and tr[j] < -eps and res[a] > eps:
                push = min(tr[i], -tr[j], res[a])
                tr[i] -= push
                tr[j] += push
                res[a] -= push
                res[rev[a]] += push
                if tr[i] <= eps:
                    break
    for v in range(n):
        if tr[v] > eps or tr[v] < -eps:
            parent[v] = _TERMINAL
            sink[v] = tr[v] < 0
            queued[v] = True
            queue[q_len] = v
            q_len += 1
    time = 0
    current = -1
    while True:
        i = current
        if i >= 0:
            queued[i] = False
            if parent[i] == _FREE:
                i = -1
        while i < 0 and q_len > 0:
            i = queue[q_head]
            q_head = q_head + 1 if q_head + 1 < n else 0
            q_len -= 1
            queued[i] = False
            if parent[i] == _FREE:
                i = -1
        if i < 0:
            break
        # Grow i's tree; stop at the first arc that reaches the other tree.
        middle = -1
        for a in range(offsets[i], offsets[i + 1]):
            if (res[rev[a]] if sink[i] else res[a]) <= eps:
                continue
            j = head[a]
            if parent[j] == _FREE:
                sink[j] = sink[i]
                parent[j] = rev[a]
                stamp[j] = stamp[i]
                dist[j] = dist[i] + 1
                if not queued[j]:
                    queued[j] = True
                    tail = q_head + q_len
                    queue[tail if tail < n else tail - n] = j
                    q_len += 1
            elif sink[j] != sink[i]:
                middle = rev[a] if sink[i] else a
                break
            elif stamp[j] <= stamp[i] and dist[j] > dist[i]:
                parent[j] = rev[a]
                stamp[j] = stamp[i]
                dist[j] = dist[i] + 1
        time += 1
        if middle < 0:
            current = -1
            continue
        current = i
        queued[i] = True
        # Augment along source -> ... -> tail(middle) -> head(middle) -> ... -> sink.
        b = res[middle]
        x = head[rev[middle]]
        while parent[x] != _TERMINAL:
            b = min(b, res[rev[parent[x]]])
            x = head[parent[x]]
        b = min(b, tr[x])
        x = head[middle]
        while parent[x] != _TERMINAL:
            b = min(b, res[parent[x]])
            x = head[parent[x]]
        b = min(b, -tr[x])
        res[middle] -= b
        res[rev[middle]] += b
        x = head[rev[middle]]
        while parent[x] != _TERMINAL:
            p = parent[x]
            res[p] += b
            res[rev[p]] -= b
            if res[rev[p]] <= eps:
                parent[x] = _ORPHAN
                o_head = o_head - 1 if o_head > 0 else n - 1
                orphans[o_head] = x
                o_len += 1
            x = head[p]
        tr[x] -= b
        if tr[x] <= eps:
            parent[x] = _ORPHAN
            o_head = o_head - 1 if o_head > 0 else n - 1
            orphans[o_head] = x
            o_len += 1
        x = head[middle]
        while parent[x] != _TERMINAL:
            p = parent[x]
            res[rev[p]] += b
            res[p] -= b
            if res[p] <= eps:
                parent[x] = _ORPHAN
                o_head = o_head - 1 if o_head > 0 else n - 1
                orphans[o_head] = x
                o_len += 1
            x = head[p]
        tr[x] += b
        if tr[x] >= -eps:
            parent[x] = _ORPHAN
            o_head = o_head - 1 if o_head > 0 else n - 1
            orphans[o_head] = x
            o_len += 1
        # Adopt orphans: a new parent in the same tree still rooted at the terminal, or free it.
        while o_len > 0:
            i = orphans[o_head]
            o_head = o_head + 1 if o_head + 1 < n else 0
            o_len -= 1
            best_arc, best_d = -1, _FAR
            for a0 in range(offsets[i], offsets[i + 1]):
                j = head[a0]
                if parent[j] == _FREE or sink[j] != sink[i]:
                    continue
                if (res[a0] if sink[i] else res[rev[a0]]) <= eps:
                    continue
                d = 0
                k = j
                while True:
                    if stamp[k] == time:
                        d += dist[k]
                        break
                    p = parent[k]
                    d += 1
                    if p == _TERMINAL:
                        stamp[k] = time
                        dist[k] = 1
                        break
                    if p == _ORPHAN:
                        d = _FAR
                        break
                    k = head[p]
                if d < _FAR:
                    if d < best_d:
                        best_arc, best_d = a0, d
                    k = j
                    while stamp[k] != time:
                        stamp[k] = time
                        dist[k] = d
                        d -= 1
                        k = head[parent[k]]
            if best_arc >= 0:
                parent[i] = best_arc
                stamp[i] = time
                dist[i] = best_d + 1
                continue
            parent[i] = _FREE
            for a0 in range(offsets[i], offsets[i + 1]):
                j = head[a0]
                if parent[j] == _FREE or sink[j] != sink[i]:
                    continue
                if (res[a0] if sink[i] else res[rev[a0]]) > eps and not queued[j]:
                    queued[j] = True
                    tail = q_head + q_len
                    queue[tail if tail < n else tail - n] = j
                    q_len += 1
                p = parent[j]
                if p >= 0 and head[p] == i:
                    parent[j] = _ORPHAN
                    tail = o_head + o_len
                    orphans[tail if tail < n else tail - n] = j
                    o_len += 1
    changed = 0
    for v in range(n):
        side = 0 if parent[v] != _FREE and not sink[v] else 1
        changed += side != label[v]
        label[v] = side
    return changed


@njit(cache=True, nogil=True)
def _split_component(x, vs, c, comp, indptr, adj, rev, arc_edge, arc_cap, local, active, flow_rounds, restarts,
                     iterations, state):
    """Split the vertices vs (ascending) of component c in two: 2-means proposes two values,
    then `flow_rounds` min cuts, the values re-fitted to the labels in between. Activates the
    edges the split cuts; returns whether there was one."""
    n = vs.shape[0]
    xs = np.empty((n, x.shape[1]))
    for i in range(n):
        xs[i] = x[vs[i]]
    label = np.zeros(n, np.int64)
    centers = np.empty((2, x.shape[1]))
    if not _two_means(xs, label, centers, restarts, iterations, state):
        return False
    eps = _refit(xs, label, centers)
    if eps < 0.0:
        return False
    offsets, head, opposite, capacity = _component_graph(vs, c, comp, indptr, adj, rev, arc_cap, local)
    tr = np.empty(n)
    for round_ in range(flow_rounds):
        for i in range(n):
            tr[i] = _terminal(xs, i, centers)
        if _min_cut(offsets, head, opposite, capacity.copy(), tr, eps, label) == 0:
            break  # same labels, same values: another round would repeat the cut
        if round_ + 1 < flow_rounds:
            eps = _refit(xs, label, centers)
            if eps < 0.0:
                return False
    cut = False
    for i in range(n):
        for b in range(offsets[i], offsets[i + 1]):
            j = head[b]
            if i < j < n and label[i] != label[j]:  # each edge from its lower end (vs ascends)
                active[arc_edge[indptr[vs[i]] + b - offsets[i]]] = True
                cut = True
    return cut


@njit(cache=True, nogil=True)
def _flagged_sizes(start, flags):
    """The sizes of the flagged groups (offsets `start`), 0 for the others."""
    sizes = np.zeros(flags.shape[0], np.int64)
    for c in range(flags.shape[0]):
        if flags[c]:
            sizes[c] = start[c + 1] - start[c]
    return sizes


@njit(cache=True, nogil=True)
def _slots(sizes, slots):
    """Jobs of these sizes dealt to `slots` threads, largest first to the least loaded (LPT):
    (jobs by slot, slot offsets). Which thread does a job never changes its result."""
    load = np.zeros(slots, np.int64)
    slot = np.empty(sizes.shape[0], np.int64)
    for r in np.argsort(-sizes, kind="mergesort"):
        s = np.argmin(load)
        slot[r] = s
        load[s] += sizes[r]
    return _grouped(slot, slots)


@njit(cache=True, nogil=True)
def _grouped(group, k):
    """The indices of `group` (values in 0..k-1) ordered by group, stably (a counting sort), and
    each group's offset into that order (k+1 offsets)."""
    start = np.zeros(k + 1, np.int64)
    for i in range(group.shape[0]):
        start[group[i] + 1] += 1
    for c in range(k):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    order = np.empty(group.shape[0], np.int64)
    for i in range(group.shape[0]):
        order[fill[group[i]]] = i
        fill[group[i]] += 1
    return order, start


@njit(cache=True, nogil=True, parallel=_prange_only())
def _split_all(x, comp, k, order, start, saturated, indptr, adj, arc_edge, rev, arc_cap, active, flow_rounds, restarts,
               iterations, seed, threads):
    """Split every non-saturated component in two, activating the edges the split cuts; flag the
    components that did not split as saturated. Returns which components split.

    Components are dealt to `threads` threads, each with its own scratch (threads writing near
    each other's data would slow each other down); the result never depends on the threads.
    order, start: `_grouped(comp, k)`."""
    runnable = np.zeros(k, np.bool_)
    for c in range(k):
        runnable[c] = not saturated[c] and start[c + 1] - start[c] >= 2
    sorder, sstart = _slots(_flagged_sizes(start, runnable), threads)
    split = np.zeros(k, np.bool_)
    for s in prange(sstart.shape[0] - 1):
        local = np.empty(x.shape[0], np.int64)
        for c in sorder[sstart[s]:sstart[s + 1]]:
            if not runnable[c]:
                continue
            vs = order[start[c]:start[c + 1]]
            state = (seed * np.uint64(0x100000001B3)) ^ np.uint64(vs[0])
            split[c] = _split_component(x, vs, c, comp, indptr, adj, rev, arc_edge, arc_cap, local, active,
                                        flow_rounds, restarts, iterations, state)
    for c in range(k):
        if not saturated[c]:
            saturated[c] = not split[c]
    return split


@njit(cache=True, nogil=True)
def _merge_gain(sums, counts, u, v, weight):
    d2 = 0.0
    for j in range(sums.shape[1]):
        r = sums[u, j] / counts[u] - sums[v, j] / counts[v]
        d2 += r * r
    return weight - 0.5 * counts[u] * counts[v] / (counts[u] + counts[v]) * d2


@njit(cache=True, nogil=True)
def _reduced_graph(comp, k, src, tgt, cap):
    """One edge per pair of adjacent components, weighted by the summed capacities of the edges
    between them, in order of (lower, higher) component: (lower ends, higher ends, weights).
    The pairs are gathered in an open-addressing table, so only the few distinct pairs are
    sorted, not every edge between components."""
    border = 0
    for e in range(src.shape[0]):
        border += comp[src[e]] != comp[tgt[e]]
    bits = 1
    while (1 << bits) < 2 * border + 2:
        bits += 1
    mask = (1 << bits) - 1
    keys = np.full(mask + 1, -1, np.int64)
    weights = np.zeros(mask + 1)
    for e in range(src.shape[0]):
        a, b = comp[src[e]], comp[tgt[e]]
        if a == b:
            continue
        key = min(a, b) * k + max(a, b)
        slot = np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(64 - bits))
        while keys[slot] != key and keys[slot] >= 0:
            slot = (slot + 1) & mask
        if keys[slot] < 0:
            keys[slot] = key
        weights[slot] += cap[e]
    used = np.flatnonzero(keys >= 0)
    used = used[np.argsort(keys[used])]
    return keys[used] // k, keys[used] % k, weights[used]


@njit(cache=True, nogil=True)
def _merge(x, comp, k, src, tgt, cap):
    """Greedy best-first merging of adjacent components while it lowers the energy. Returns
    (components numbered 0..K-1, K, energy).

    Merging u and v changes E by -(reg * w_border - 1/2 * W_u W_v / (W_u + W_v) ||x_u - x_v||^2)."""
    n, d = x.shape
    sums, counts = _component_sums(x, comp, k)
    eu, ev, rw = _reduced_graph(comp, k, src, tgt, cap)
    m = eu.shape[0]
    head = np.full(k, -1, np.int64)
    nxt = np.empty(2 * m, np.int64)
    for e in range(m):
        nxt[2 * e] = head[eu[e]]
        head[eu[e]] = 2 * e
        nxt[2 * e + 1] = head[ev[e]]
        head[ev[e]] = 2 * e + 1
    dead = np.zeros(m, np.bool_)
    version = np.zeros(m, np.int64)
    heap = [(0.0, np.int64(0), np.int64(0))]
    heap.pop()
    for e in range(m):
        g = _merge_gain(sums, counts, eu[e], ev[e], rw[e])
        if g > 0.0:
            heap.append((-g, np.int64(e), np.int64(0)))
    heapq.heapify(heap)
    parent = np.arange(k)
    mark = np.full(k, -1, np.int64)
    while len(heap) > 0:
        _, e, ver = heapq.heappop(heap)
        if dead[e] or ver != version[e]:
            continue
        u, v = eu[e], ev[e]
        dead[e] = True
        parent[v] = u
        counts[u] += counts[v]
        sums[u] += sums[v]
        # u inherits v's edges; edges to a common neighbour are fused into one.
        new_head = -1
        for h0 in (head[u], head[v]):
            h = h0
            while h != -1:
                nh = nxt[h]
                f = h >> 1
                if not dead[f]:
                    if eu[f] == v:
                        eu[f] = u
                    if ev[f] == v:
                        ev[f] = u
                    o = ev[f] if eu[f] == u else eu[f]
                    if mark[o] >= 0:
                        rw[mark[o]] += rw[f]
                        dead[f] = True
                    else:
                        mark[o] = f
                        nxt[h] = new_head
                        new_head = h
                h = nh
        head[u] = new_head
        head[v] = -1
        h = new_head
        while h != -1:
            f = h >> 1
            o = ev[f] if eu[f] == u else eu[f]
            mark[o] = -1
            version[f] += 1
            g = _merge_gain(sums, counts, u, o, rw[f])
            if g > 0.0:
                heapq.heappush(heap, (-g, f, version[f]))
            h = nxt[h]
    # Compress the merge forest and renumber the surviving components.
    new_id = np.full(k, -1, np.int64)
    kept = 0
    for c in range(k):
        root = c
        while parent[root] != root:
            root = parent[root]
        parent[c] = root
        if new_id[root] < 0:
            new_id[root] = kept
            sums[root] /= counts[root]
            kept += 1
    out = np.empty(n, np.int64)
    fidelity = 0.0
    for i in range(n):
        root = parent[comp[i]]
        out[i] = new_id[root]
        for j in range(d):
            r = x[i, j] - sums[root, j]
            fidelity += r * r
    boundary = 0.0
    for e in range(m):
        if not dead[e]:
            boundary += rw[e]
    return out, kept, 0.5 * fidelity + boundary
