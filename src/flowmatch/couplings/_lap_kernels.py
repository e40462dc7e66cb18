"""Numba kernels for the dense linear assignment problem (min-cost perfect matching).

Imported lazily by :mod:`flowmatch.couplings.assignment` (numba is only loaded when an exact
coupling first solves a problem). All kernels are compiled with ``nogil=True`` so a background
pairing thread can run them while the main thread trains.

Conventions: ``cost`` is a C-contiguous float64 ``(n, n)`` array, rows are "persons",
columns "objects"; ``col4row[i]`` is the column matched to row ``i`` and ``row4col`` its
inverse (``-1`` while unmatched). Duals ``u`` (rows) and ``v`` (columns) are kept feasible,
``cost[i, j] - u[i] - v[j] >= 0``, and tight on matched pairs: that is the optimality
certificate of the final matching (linear-programming duality).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_INF = np.inf

# Auction schedule: eps starts at range / _THETA and shrinks by _THETA per phase down to
# range * _EPS_FINAL_REL / n. The auction only has to produce good duals: exactness comes from
# the repair afterwards, so the final eps need not be tiny. On B = 256 2-D
# checkerboard-vs-Gaussian batches the label-correcting repair succeeds (the auction matching
# is already optimal) on 60 of 100 seeded batches with these values; _THETA in [4, 16] and
# _EPS_FINAL_REL in [3e-4, 1e-2] were flat within noise in total time (docs/couplings.md).
_THETA = 8.0
_EPS_FINAL_REL = 1e-3
# Row scans allowed to the label-correcting repair, in units of n, before falling back to
# shortest augmenting paths (a non-optimal auction matching makes it cycle).
_TIGHTEN_BUDGET = 8


@njit(cache=True, nogil=True)
def _reduce(cost: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Subtract row then column minima: same optimal matchings, entries >= 0 of size ~range.

    Without this, costs with a large offset (|c| >> range) make price increments fall below
    the rounding unit of ``c + price`` and the auction would crawl.
    """
    n = cost.shape[0]
    out = np.empty_like(cost)
    for i in range(n):
        m = _INF
        for j in range(n):
            m = min(m, cost[i, j])
        for j in range(n):
            out[i, j] = cost[i, j] - m
    for j in range(n):
        m = _INF
        for i in range(n):
            m = min(m, out[i, j])
        for i in range(n):
            out[i, j] -= m
    return out


@njit(cache=True, nogil=True)
def _auction_phase(
    cost: np.ndarray,
    prices: np.ndarray,
    col4row: np.ndarray,
    row4col: np.ndarray,
    eps: float,
    stack: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """One Gauss-Seidel forward-auction phase (Bertsekas 1988) for a minimisation problem.

    An unmatched row ``i`` takes the object ``j*`` minimising ``cost[i, j] + prices[j]`` and
    raises its price by ``second_best - best + eps``; the previous owner becomes unmatched.
    On exit every row is matched and eps-complementary slackness holds:
    ``cost[i, col4row[i]] + prices[col4row[i]] <= min_j (cost[i, j] + prices[j]) + eps``.
    """
    n = cost.shape[0]
    for i in range(n):
        col4row[i] = -1
        row4col[i] = -1
        stack[i] = i
    top = n
    while top > 0:
        top -= 1
        bidder = stack[top]
        best = _INF
        second = _INF
        jbest = 0
        for j in range(n):
            val = cost[bidder, j] + prices[j]
            if val < second:
                if val < best:
                    second = best
                    best = val
                    jbest = j
                else:
                    second = val
        prices[jbest] += second - best + eps
        old = row4col[jbest]
        row4col[jbest] = bidder
        col4row[bidder] = jbest
        if old >= 0:
            col4row[old] = -1
            stack[top] = old
            top += 1


@njit(cache=True, nogil=True)
def _augment(
    cost: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    col4row: np.ndarray,
    row4col: np.ndarray,
    cur: int,
    work_i: np.ndarray,
    work_f: np.ndarray,
    seen_rows: np.ndarray,
    seen_cols: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Match the free row ``cur`` along a shortest augmenting path (Dijkstra on reduced costs).

    The Jonker-Volgenant / Crouse (2016, Algorithm 1) augmentation step: grow a shortest-path
    tree from ``cur`` over reduced costs ``cost - u - v`` (non-negative by dual feasibility)
    until it reaches an unmatched column, update the duals so the tree becomes tight, then
    flip the path. Feasibility and tightness of all matched pairs are preserved.
    """
    n = cost.shape[0]
    path = work_i[:n]
    remaining = work_i[n:]
    dist = work_f
    for j in range(n):
        dist[j] = _INF
        seen_cols[j] = False
        remaining[j] = n - 1 - j
    for i in range(n):
        seen_rows[i] = False
    num_remaining = n
    min_val = 0.0
    i = cur
    sink = -1
    while sink == -1:
        index = -1
        lowest = _INF
        seen_rows[i] = True
        ui = u[i]
        for it in range(num_remaining):
            j = remaining[it]
            r = min_val + cost[i, j] - ui - v[j]
            if r < dist[j]:
                path[j] = i
                dist[j] = r
            # Prefer an unmatched column on ties: it ends the search earlier.
            if dist[j] < lowest or (dist[j] == lowest and row4col[j] == -1):
                lowest = dist[j]
                index = it
        min_val = lowest
        j = remaining[index]
        if row4col[j] == -1:
            sink = j
        else:
            i = row4col[j]
        seen_cols[j] = True
        num_remaining -= 1
        remaining[index] = remaining[num_remaining]
    # Dual update: make every edge of the shortest-path tree tight.
    u[cur] += min_val
    for i in range(n):
        if seen_rows[i] and i != cur:
            u[i] += min_val - dist[col4row[i]]
    for j in range(n):
        if seen_cols[j]:
            v[j] -= min_val - dist[j]
    # Flip the augmenting path.
    j = sink
    while True:
        i = path[j]
        row4col[j] = i
        nxt = col4row[i]
        col4row[i] = j
        j = nxt
        if i == cur:
            break


@njit(cache=True, nogil=True)
def _complete(
    cost: np.ndarray, u: np.ndarray, v: np.ndarray, col4row: np.ndarray, row4col: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Augment every unmatched row (duals feasible, matched pairs tight on entry)."""
    n = cost.shape[0]
    work_i = np.empty(2 * n, np.int64)
    work_f = np.empty(n)
    seen_rows = np.empty(n, np.bool_)
    seen_cols = np.empty(n, np.bool_)
    for i in range(n):
        if col4row[i] == -1:
            _augment(cost, u, v, col4row, row4col, i, work_i, work_f, seen_rows, seen_cols)


@njit(cache=True, nogil=True)
def _tighten(
    cost: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    col4row: np.ndarray,
    row4col: np.ndarray,
    budget: int,
) -> bool:  # pragma: no cover - compiled
    """Label-correcting (Bellman-Ford, FIFO) repair of the duals of a complete matching.

    Keeps every matched pair tight (``u_i = c_{i, sigma(i)} - v_{sigma(i)}``) and removes each
    violation ``c_ij - u_i - v_j < 0`` by lowering ``v_j``, which raises the dual of column
    ``j``'s owner, whose row is then re-scanned. Lowering ``v`` only increases reduced costs,
    so when the queue empties every row was scanned after its last change: the duals are
    feasible and the matching is optimal. That happens iff the matching has no negative
    cycle; otherwise the row scans exceed ``budget`` and this returns ``False``.
    """
    n = cost.shape[0]
    queue = np.empty(n, np.int64)
    queued = np.ones(n, np.bool_)
    for i in range(n):
        queue[i] = i
    head = 0
    size = n
    scans = 0
    while size > 0:
        i = queue[head]
        head = head + 1 if head + 1 < n else 0
        size -= 1
        queued[i] = False
        scans += 1
        if scans > budget:
            return False
        own = col4row[i]
        ui = u[i]
        for j in range(n):
            # The matched pair is tight by construction; skipping it avoids chasing rounding.
            if j != own and cost[i, j] - ui - v[j] < 0.0:
                v[j] = cost[i, j] - ui
                owner = row4col[j]
                u[owner] = cost[owner, j] - v[j]
                if not queued[owner]:
                    queued[owner] = True
                    tail = head + size
                    queue[tail - n if tail >= n else tail] = owner
                    size += 1
    return True


@njit(cache=True, nogil=True)
def _repair_by_augmenting(
    cost: np.ndarray, v: np.ndarray, col4row: np.ndarray, row4col: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Exact completion from column duals ``v``: unmatch non-tight rows, re-insert them.

    ``u_i = min_j (c_ij - v_j)`` makes the duals feasible for any ``v``; matched pairs that are
    not exactly tight are unmatched, a free row whose tight column is free takes it, and every
    remaining free row is matched by a shortest augmenting path (``_augment``).
    """
    n = cost.shape[0]
    u = np.empty(n)
    argmin = np.zeros(n, np.int64)
    for i in range(n):
        m = _INF
        for j in range(n):
            r = cost[i, j] - v[j]
            if r < m:
                m = r
                argmin[i] = j
        u[i] = m
        j = col4row[i]
        if j >= 0 and cost[i, j] - v[j] != m:
            row4col[j] = -1
            col4row[i] = -1
    for i in range(n):
        j = argmin[i]
        if col4row[i] == -1 and row4col[j] == -1:
            col4row[i] = j
            row4col[j] = i
    _complete(cost, u, v, col4row, row4col)


@njit(cache=True, nogil=True)
def auction_assignment(
    cost: np.ndarray, tighten_budget: int = _TIGHTEN_BUDGET
) -> np.ndarray:  # pragma: no cover - compiled
    """Exact min-cost perfect matching: eps-scaling auction, then an exact repair.

    1. An eps-scaling forward auction gives prices ``p`` and an eps-optimal complete matching.
    2. With ``v = -p`` and ``u`` tight on the matching, ``_tighten`` tries to make the duals
       feasible (succeeds iff the matching is already optimal).
    3. Otherwise ``_repair_by_augmenting`` re-inserts the non-tight rows by shortest
       augmenting paths from the (feasible) duals ``u_i = min_j (c_ij - v_j)``.
    Either way the duals end feasible and the matching tight: an LP optimality certificate,
    exact up to float64 rounding, like scipy's solver. ``tighten_budget = 0`` skips step 2.

    Returns ``col4row`` (int64, ``(n,)``).
    """
    c = _reduce(cost)
    n = c.shape[0]
    col4row = np.full(n, -1, np.int64)
    row4col = np.full(n, -1, np.int64)
    prices = np.zeros(n)
    stack = np.empty(n, np.int64)
    top = 0.0
    for i in range(n):
        for j in range(n):
            top = max(top, c[i, j])
    if top == 0.0:  # all costs equal: every matching is optimal
        return np.arange(n)
    eps = top / _THETA
    eps_final = top * _EPS_FINAL_REL / n
    while True:
        _auction_phase(c, prices, col4row, row4col, eps, stack)
        if eps <= eps_final:
            break
        eps = max(eps / _THETA, eps_final)
    v = -prices
    u = np.empty(n)
    for i in range(n):
        u[i] = c[i, col4row[i]] - v[col4row[i]]
    if not _tighten(c, u, v, col4row, row4col, tighten_budget * n):
        # _tighten only lowered entries of v: they are still good starting duals.
        _repair_by_augmenting(c, v, col4row, row4col)
    return col4row
