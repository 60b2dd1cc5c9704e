"""L0 cut pursuit: the generalised minimal partition of a graph signal (Landrieu & Obozinski).

Minimises SPG's energy over piecewise-constant signals x (value of a component = its mean):

    E(x) = 1/2 * sum_i ||x_i - f_i||^2 + reg * sum_edges w_e * [x_source != x_target]

Each iteration SPLITs every non-saturated component in two (2-means alternatives refined by
min cuts; max-flow by Boykov-Kolmogorov), REDUCEs to the connected components of the graph
minus the cut ("active") edges, then MERGEs adjacent components best gain first while that
lowers E. The split runs on Numba's threads, over components and, for a component too large
to share out, over pieces of it whose max-flows are then stitched into the component's exact
one (Kohli & Torr's reuse of search trees), so the result does not depend on the threads. Written from the papers and the notes in docs/oversegmentation.md (c); the GPL
reference code is not used. On scene0000_00's SPG graph it ends 0.1-0.4% below the official
parallel cut pursuit's energy at reg 0.01-0.3 (tests/test_cut_pursuit.py).
"""

from __future__ import annotations

import heapq

import numpy as np
from numba import get_num_threads, njit, prange

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
    split_size: int = 0,
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
    split_size: 0 (default): with several Numba threads (`numba.set_num_threads`,
        NUMBA_NUM_THREADS), a component larger than one thread's share of a split step's work
        is max-flowed in pieces of that share, pieces in parallel, then stitched; > 0: pieces of
        at most this many vertices, whatever the threads. Every min cut stays exact, so the
        partition does not depend on the pieces or the number of threads.

    Returns (components int32 (N,) numbered 0..K-1 in order of first vertex, energy E).
    """
    x, src, tgt, w = _validated(features, source, target, weights)
    if not np.isfinite(reg) or reg < 0:
        raise ValueError(f"reg must be a finite number >= 0, got {reg}")
    if min(max_iterations, flow_rounds, kmeans_restarts, kmeans_iterations) < 1 or min(seed, tolerance, split_size) < 0:
        raise ValueError("max_iterations, flow_rounds, kmeans_restarts, kmeans_iterations must be >= 1, "
                         f"seed, tolerance and split_size >= 0; got {max_iterations}, {flow_rounds}, {kmeans_restarts}, "
                         f"{kmeans_iterations}, {seed}, {tolerance}, {split_size}")
    n = x.shape[0]
    keep = src != tgt
    src, tgt, cap = src[keep], tgt[keep], reg * w[keep]
    indptr, adj, arc_edge, rev = _forward_star(n, src, tgt)

    one = np.ones(1, np.bool_)
    comp, k = _components(np.zeros(n, np.int64), 1, one, indptr, adj, arc_edge, np.zeros(src.shape[0], np.bool_))
    saturated = np.zeros(k, np.bool_)
    energy = _energy(x, comp, k, src, tgt, cap)
    for iteration in range(max_iterations):
        active = comp[src] != comp[tgt]
        split = _split_all(
            x, comp, k, saturated, indptr, adj, arc_edge, rev, cap, active,
            flow_rounds, kmeans_restarts, kmeans_iterations, np.uint64(seed * 1_000_003 + iteration), split_size,
            get_num_threads(),
        )
        if not split.any():
            break
        new_comp, new_k = _components(comp, k, split, indptr, adj, arc_edge, active)
        new_comp, new_k = _merge(x, new_comp, new_k, src, tgt, cap)
        new_energy = _energy(x, new_comp, new_k, src, tgt, cap)
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
def _forward_star(n, src, tgt):
    """Both arcs of every edge grouped by tail, in edge order (a stable counting sort): arc ->
    (head, edge, the opposite arc)."""
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
    position = np.empty(2 * m, np.int64)  # arc of "edge e forward" (j = e) and "backward" (j = m + e)
    for j in range(2 * m):
        e = j % m
        tail, head = (src[e], tgt[e]) if j < m else (tgt[e], src[e])
        a = fill[tail]
        fill[tail] += 1
        adj[a] = head
        arc_edge[a] = e
        position[j] = a
    rev = np.empty(2 * m, np.int64)
    for j in range(2 * m):
        rev[position[j]] = position[(j + m) % (2 * m)]
    return indptr, adj, arc_edge, rev


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
def _components(comp, k, split, indptr, adj, arc_edge, active):
    """Connected components of the graph minus the active edges, numbered in order of their
    first vertex, given that they refine `comp` (k components, active edges between any two)
    and that only the components flagged in `split` can have fallen apart. Components are
    searched in parallel."""
    n = comp.shape[0]
    order, start = _grouped(comp, k)
    local = np.zeros(n, np.int64)
    first = np.empty(n, np.int64)  # component c's pieces' first vertices at first[start[c]:]
    pieces = np.ones(k, np.int64)
    for c in prange(k):
        vs = order[start[c]:start[c + 1]]
        first[start[c]] = vs[0]
        if not split[c]:
            continue
        for v in vs:
            local[v] = -1
        queue = np.empty(vs.shape[0], np.int64)
        count = 0
        for root in vs:
            if local[root] >= 0:
                continue
            local[root] = count
            first[start[c] + count] = root
            head, tail = 0, 1
            queue[0] = root
            while head < tail:
                u = queue[head]
                head += 1
                for a in range(indptr[u], indptr[u + 1]):
                    v = adj[a]
                    if local[v] < 0 and not active[arc_edge[a]]:
                        local[v] = count
                        queue[tail] = v
                        tail += 1
            count += 1
        pieces[c] = count
    offset = np.zeros(k + 1, np.int64)
    for c in range(k):
        offset[c + 1] = offset[c] + pieces[c]
    firsts = np.empty(offset[k], np.int64)
    for c in range(k):
        firsts[offset[c]:offset[c + 1]] = first[start[c]:start[c] + pieces[c]]
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
def _label_means(x, vs, label, centers):
    """Means of the two label sets into centers; False (centers untouched) if a side is empty."""
    count0 = 0
    for v in vs:
        count0 += 1 - label[v]
    count1 = vs.shape[0] - count0
    if count0 == 0 or count1 == 0:
        return False
    centers[:] = 0.0
    for v in vs:
        for j in range(x.shape[1]):
            centers[label[v], j] += x[v, j]
    for j in range(x.shape[1]):
        centers[0, j] /= count0
        centers[1, j] /= count1
    return True


@njit(cache=True, nogil=True)
def _terminal(x, v, centers):
    """v's terminal capacity for the alternatives centers[0] (source side, > 0) and centers[1]."""
    return 0.5 * (_sq_dist(x, v, centers[1]) - _sq_dist(x, v, centers[0]))


@njit(cache=True, nogil=True)
def _refit(x, vs, label, centers):
    """Fit the alternatives to the labels of vs and return the capacity below which the
    component's max-flows count one as saturated (1e-12 x its largest terminal capacity);
    -1 if a side is empty."""
    if not _label_means(x, vs, label, centers):
        return -1.0
    largest = 0.0
    for v in vs:
        largest = max(largest, abs(_terminal(x, v, centers)))
    return 1e-12 * largest


@njit(cache=True, nogil=True)
def _two_means(x, vs, label, centers, restarts, iterations, state):
    """k-means++ 2-means; leaves the best labelling in label. False if the values are constant."""
    n = vs.shape[0]
    dist = np.empty(n)
    best = np.empty((2, x.shape[1]))
    best_sse = np.inf
    for _ in range(restarts):
        state, u = _uniform(state)
        centers[0] = x[vs[min(int(u * n), n - 1)]]
        total = 0.0
        for i in range(n):
            dist[i] = _sq_dist(x, vs[i], centers[0])
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
        centers[1] = x[vs[pick]]
        for _ in range(iterations):
            for v in vs:
                label[v] = 1 if _sq_dist(x, v, centers[1]) < _sq_dist(x, v, centers[0]) else 0
            if not _label_means(x, vs, label, centers):
                break
        sse = 0.0
        for v in vs:
            sse += min(_sq_dist(x, v, centers[0]), _sq_dist(x, v, centers[1]))
        if sse < best_sse:
            best_sse = sse
            best[:] = centers
    for v in vs:
        label[v] = 1 if _sq_dist(x, v, best[1]) < _sq_dist(x, v, best[0]) else 0
    return True


_FREE, _TERMINAL, _ORPHAN = -1, -2, -3
_FAR = 1 << 60


@njit(cache=True, nogil=True)
def _min_cut(vs, r, region, seam, warm, eps, indptr, adj, rev, res, tr, parent, sink, stamp, dist, queued, label):
    """Boykov-Kolmogorov max-flow on the vertices vs of region r (arcs leaving the region are
    ignored); label = 0 on the source side of the min cut. Returns how many labels changed.

    res: residual capacity per arc (rev pairs the two arcs of an edge); tr: terminal capacity,
    > 0 from the source, < 0 to the sink; capacities <= eps count as saturated. parent[v] is the
    arc from v to its tree parent. warm: res, tr and the search trees (parent, sink, dist) are
    those left by max-flows on the pieces of the region that `seam` names (one id per piece);
    the trees are kept and only the vertices at a seam grow, so only flow that crosses seams is
    searched for (Kohli & Torr's reuse of search trees)."""
    n = vs.shape[0]
    queue = np.empty(n, np.int64)
    orphans = np.empty(n, np.int64)
    q_head, q_len, o_head, o_len = 0, 0, 0, 0
    for v in vs:
        stamp[v] = 0
        queued[v] = False
        if not warm:
            dist[v] = 1
            parent[v] = _FREE
            if tr[v] > eps or tr[v] < -eps:
                parent[v] = _TERMINAL
                sink[v] = tr[v] < 0
                queued[v] = True
                queue[q_len] = v
                q_len += 1
    if warm:  # the distance heuristic needs exact tree depths (BK's start: all stamps 0)
        for v in vs:
            dist[v] = 0
        for v in vs:
            depth = 0
            i = v
            while parent[i] != _FREE and dist[i] == 0 and parent[i] != _TERMINAL:
                orphans[depth] = i
                depth += 1
                i = adj[parent[i]]
            if parent[i] == _FREE:
                continue
            if dist[i] == 0:
                dist[i] = 1
            for t in range(depth - 1, -1, -1):
                dist[orphans[t]] = dist[i] + depth - t
        for v in vs:
            if parent[v] == _FREE:
                continue
            for a in range(indptr[v], indptr[v + 1]):
                j = adj[a]
                if region[j] == r and seam[j] != seam[v]:
                    queued[v] = True
                    queue[q_len] = v
                    q_len += 1
                    break
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
            q_head = (q_head + 1) % n
            q_len -= 1
            queued[i] = False
            if parent[i] == _FREE:
                i = -1
        if i < 0:
            break
        # Grow i's tree; stop at the first arc that reaches the other tree.
        middle = -1
        for a in range(indptr[i], indptr[i + 1]):
            j = adj[a]
            if region[j] != r:
                continue
            if (res[rev[a]] if sink[i] else res[a]) <= eps:
                continue
            if parent[j] == _FREE:
                sink[j] = sink[i]
                parent[j] = rev[a]
                stamp[j] = stamp[i]
                dist[j] = dist[i] + 1
                if not queued[j]:
                    queued[j] = True
                    queue[(q_head + q_len) % n] = j
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
        x = adj[rev[middle]]
        while parent[x] != _TERMINAL:
            b = min(b, res[rev[parent[x]]])
            x = adj[parent[x]]
        b = min(b, tr[x])
        x = adj[middle]
        while parent[x] != _TERMINAL:
            b = min(b, res[parent[x]])
            x = adj[parent[x]]
        b = min(b, -tr[x])
        res[middle] -= b
        res[rev[middle]] += b
        x = adj[rev[middle]]
        while parent[x] != _TERMINAL:
            p = parent[x]
            res[p] += b
            res[rev[p]] -= b
            if res[rev[p]] <= eps:
                parent[x] = _ORPHAN
                o_head = (o_head - 1) % n
                orphans[o_head] = x
                o_len += 1
            x = adj[p]
        tr[x] -= b
        if tr[x] <= eps:
            parent[x] = _ORPHAN
            o_head = (o_head - 1) % n
            orphans[o_head] = x
            o_len += 1
        x = adj[middle]
        while parent[x] != _TERMINAL:
            p = parent[x]
            res[rev[p]] += b
            res[p] -= b
            if res[p] <= eps:
                parent[x] = _ORPHAN
                o_head = (o_head - 1) % n
                orphans[o_head] = x
                o_len += 1
            x = adj[p]
        tr[x] += b
        if tr[x] >= -eps:
            parent[x] = _ORPHAN
            o_head = (o_head - 1) % n
            orphans[o_head] = x
            o_len += 1
        # Adopt orphans: a new parent in the same tree still rooted at the terminal, or free it.
        while o_len > 0:
            i = orphans[o_head]
            o_head = (o_head + 1) % n
            o_len -= 1
            best_arc, best_d = -1, _FAR
            for a0 in range(indptr[i], indptr[i + 1]):
                j = adj[a0]
                if region[j] != r or parent[j] == _FREE or sink[j] != sink[i]:
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
                    k = adj[p]
                if d < _FAR:
                    if d < best_d:
                        best_arc, best_d = a0, d
                    k = j
                    while stamp[k] != time:
                        stamp[k] = time
                        dist[k] = d
                        d -= 1
                        k = adj[parent[k]]
            if best_arc >= 0:
                parent[i] = best_arc
                stamp[i] = time
                dist[i] = best_d + 1
                continue
            parent[i] = _FREE
            for a0 in range(indptr[i], indptr[i + 1]):
                j = adj[a0]
                if region[j] != r or parent[j] == _FREE or sink[j] != sink[i]:
                    continue
                if (res[a0] if sink[i] else res[rev[a0]]) > eps and not queued[j]:
                    queued[j] = True
                    queue[(q_head + q_len) % n] = j
                    q_len += 1
                p = parent[j]
                if p >= 0 and adj[p] == i:
                    parent[j] = _ORPHAN
                    orphans[(o_head + o_len) % n] = j
                    o_len += 1
    changed = 0
    for v in vs:
        side = 0 if parent[v] != _FREE and not sink[v] else 1
        changed += side != label[v]
        label[v] = side
    return changed


@njit(cache=True, nogil=True)
def _regions(comp, order, start, runnable, indptr, adj, split_size):
    """The vertices of the components to split, grouped into regions that are cut separately.

    A component of at most `split_size` vertices (or any, when split_size is 0) is one region,
    its vertices in `order`'s (ascending) order. A larger one is cut into about equal runs of
    its breadth-first order from its first vertex, so the pieces are compact and one large
    component can keep several threads busy. Returns (region per vertex, -1 outside; vertices
    by region; region offsets; component of each region)."""
    n = comp.shape[0]
    k = start.shape[0] - 1
    region = np.full(n, -1, np.int64)
    rorder = np.empty(n, np.int64)
    pieces = np.zeros(k, np.int64)
    for c in range(k):
        size = start[c + 1] - start[c]
        if runnable[c]:
            pieces[c] = 1 if split_size <= 0 or size <= split_size else (size + split_size - 1) // split_size
    rstart = np.zeros(pieces.sum() + 1, np.int64)
    rcomp = np.empty(pieces.sum(), np.int64)
    seen = np.zeros(n, np.bool_)
    r, m = 0, 0
    for c in range(k):
        if pieces[c] == 0:
            continue
        vs = order[start[c]:start[c + 1]]
        size = vs.shape[0]
        run = rorder[m:m + size]
        if pieces[c] == 1:
            run[:] = vs
        else:
            run[0] = vs[0]
            seen[vs[0]] = True
            head, tail = 0, 1
            while head < tail:
                u = run[head]
                head += 1
                for a in range(indptr[u], indptr[u + 1]):
                    v = adj[a]
                    if comp[v] == c and not seen[v]:
                        seen[v] = True
                        run[tail] = v
                        tail += 1
            for i in range(pieces[c]):  # sorted runs: vertex order is memory order
                run[i * size // pieces[c]:(i + 1) * size // pieces[c]].sort()
        for i in range(pieces[c]):
            rcomp[r] = c
            rstart[r + 1] = m + (i + 1) * size // pieces[c]
            region[rorder[rstart[r]:rstart[r + 1]]] = r
            r += 1
        m += size
    return region, rorder, rstart, rcomp


@njit(cache=True, nogil=True)
def _slots(rstart, slots):
    """Regions dealt to `slots` threads, largest first to the least loaded (LPT): (regions by
    slot, slot offsets). Which thread cuts a region never changes its result."""
    nr = rstart.shape[0] - 1
    size = rstart[1:] - rstart[:-1]
    load = np.zeros(slots, np.int64)
    slot = np.empty(nr, np.int64)
    for r in np.argsort(-size, kind="mergesort"):
        s = np.argmin(load)
        slot[r] = s
        load[s] += size[r]
    return _grouped(slot, slots)


@njit(cache=True, nogil=True)
def _grouped(group, k):
    """The indices of `group` (values in 0..k-1) ordered by group, stably, and each group's offset
    into that order (k+1 offsets)."""
    order = np.argsort(group, kind="mergesort")
    start = np.zeros(k + 1, np.int64)
    for i in range(group.shape[0]):
        start[group[i] + 1] += 1
    for c in range(k):
        start[c + 1] += start[c]
    return order, start


_SKIP, _CUTTING, _SETTLED, _FAILED = 0, 1, 2, 3
_MIN_PIECE = 2048  # vertices; below this a piece's own max-flow costs less than stitching it


@njit(cache=True, nogil=True, parallel=_prange_only())
def _split_all(x, comp, k, saturated, indptr, adj, arc_edge, rev, cap, active, flow_rounds, restarts,
               iterations, seed, split_size, threads):
    """Split every non-saturated component in two, activating the edges the split cuts; flag the
    components that did not split as saturated. Returns which components split.

    A component's two alternatives come from 2-means over its vertices and are re-fitted to its
    labels between min-cut rounds. Each round's min cut is exact, and found in two phases:
    max-flow inside each region (see `_regions`), regions in parallel on `threads` threads; then,
    for a component of several regions, max-flow on the whole component starting from the
    flow the regions pushed, which only has to route what crosses region borders. Any maximum
    flow leaves the same vertices reachable from the source, so the labels are those of one
    max-flow over the whole component, whatever the regions and the number of threads."""
    n, d = x.shape
    order, start = _grouped(comp, k)
    state = np.full(k, _SKIP, np.int64)
    label = np.zeros(n, np.int64)
    centers = np.empty((k, 2, d))
    eps = np.zeros(k)
    for c in prange(k):
        vs = order[start[c]:start[c + 1]]
        if saturated[c] or vs.shape[0] < 2:
            continue
        rng = (seed * np.uint64(0x100000001B3)) ^ np.uint64(vs[0])
        state[c] = _FAILED
        if _two_means(x, vs, label, centers[c], restarts, iterations, rng):
            eps[c] = _refit(x, vs, label, centers[c])
            if eps[c] >= 0.0:
                state[c] = _CUTTING
    if split_size == 0 and threads > 1:  # each thread's share of the work, pieces not too small
        work = 0
        for c in range(k):
            work += start[c + 1] - start[c] if state[c] == _CUTTING else 0
        split_size = max(_MIN_PIECE, (work + threads - 1) // threads)
    region, rorder, rstart, rcomp = _regions(comp, order, start, state == _CUTTING, indptr, adj, split_size)
    sorder, sstart = _slots(rstart, threads)
    pieces = np.zeros(k, np.int64)
    for r in range(rcomp.shape[0]):
        pieces[rcomp[r]] += 1
    res = np.zeros(adj.shape[0])
    tr = np.zeros(n)
    parent = np.zeros(n, np.int64)
    sink = np.zeros(n, np.bool_)
    stamp = np.zeros(n, np.int64)
    dist = np.zeros(n, np.int64)
    queued = np.zeros(n, np.bool_)
    before = np.zeros(n, np.int64)
    for round_ in range(flow_rounds):
        for s in prange(sstart.shape[0] - 1):  # capacities from the alternatives, then max-flow, by region
            for r in sorder[sstart[s]:sstart[s + 1]]:
                c = rcomp[r]
                if state[c] != _CUTTING:
                    continue
                vs = rorder[rstart[r]:rstart[r + 1]]
                for v in vs:
                    before[v] = label[v]
                    tr[v] = _terminal(x, v, centers[c])
                    for a in range(indptr[v], indptr[v + 1]):
                        res[a] = cap[arc_edge[a]]
                _min_cut(vs, r, region, region, False, eps[c], indptr, adj, rev, res, tr, parent, sink, stamp, dist,
                         queued, label)
        for c in prange(k):  # stitch the pieces' flows; the alternatives for the next round
            if state[c] != _CUTTING:
                continue
            vs = order[start[c]:start[c + 1]]
            if pieces[c] > 1:
                _min_cut(vs, c, comp, region, True, eps[c], indptr, adj, rev, res, tr, parent, sink, stamp, dist,
                         queued, label)
            moved = 0
            for v in vs:
                moved += label[v] != before[v]
            if moved == 0:
                state[c] = _SETTLED  # same labels, same alternatives: another round would repeat the cut
            elif round_ + 1 < flow_rounds:
                eps[c] = _refit(x, vs, label, centers[c])
                if eps[c] < 0.0:
                    state[c] = _FAILED
    cut = np.zeros(rcomp.shape[0], np.bool_)
    for s in prange(sstart.shape[0] - 1):  # each edge is activated from its lower end only
        for r in sorder[sstart[s]:sstart[s + 1]]:
            c = rcomp[r]
            if state[c] != _CUTTING and state[c] != _SETTLED:
                continue
            for v in rorder[rstart[r]:rstart[r + 1]]:
                for a in range(indptr[v], indptr[v + 1]):
                    w = adj[a]
                    if v < w and comp[w] == c and label[w] != label[v]:
                        active[arc_edge[a]] = True
                        cut[r] = True
    split = np.zeros(k, np.bool_)
    for r in range(rcomp.shape[0]):
        split[rcomp[r]] |= cut[r]
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
def _merge(x, comp, k, src, tgt, cap):
    """Greedy best-first merging of adjacent components while it lowers the energy.

    Merging u and v changes E by -(reg * w_border - 1/2 * W_u W_v / (W_u + W_v) ||x_u - x_v||^2)."""
    n, d = x.shape
    sums, counts = _component_sums(x, comp, k)
    # Reduced graph: one edge per adjacent pair, weight = summed capacities of its border.
    keys = np.empty(src.shape[0], np.int64)
    m = 0
    for e in range(src.shape[0]):
        a, b = comp[src[e]], comp[tgt[e]]
        if a != b:
            keys[m] = min(a, b) * k + max(a, b)
            m += 1
    keys = keys[:m]
    border = np.zeros(m)
    m = 0
    for e in range(src.shape[0]):
        a, b = comp[src[e]], comp[tgt[e]]
        if a != b:
            border[m] = cap[e]
            m += 1
    order = np.argsort(keys)
    eu = np.empty(m, np.int64)
    ev = np.empty(m, np.int64)
    rw = np.zeros(m)
    r = -1
    last = -1
    for i in order:
        if keys[i] != last:
            r += 1
            last = keys[i]
            eu[r] = last // k
            ev[r] = last % k
        rw[r] += border[i]
    m = r + 1
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
            kept += 1
    out = np.empty(n, np.int64)
    for i in range(n):
        out[i] = new_id[parent[comp[i]]]
    return out, kept
