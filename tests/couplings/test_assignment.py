"""The exact assignment solvers against brute force and scipy (the reference oracle)."""

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from flowmatch.couplings.assignment import ASSIGNMENT_SOLVERS, linear_assignment

SOLVERS = list(ASSIGNMENT_SOLVERS)


def total(cost: np.ndarray, sigma: np.ndarray) -> float:
    # Shifted by the minimum (exact in float64 for the "offset" kind, by Sterbenz's lemma) so
    # a relative tolerance measures the matching, not the constant offset.
    shifted = cost - cost.min()
    return float(shifted[np.arange(len(sigma)), sigma].sum())


def is_permutation(sigma: np.ndarray, n: int) -> bool:
    return sigma.shape == (n,) and sorted(sigma.tolist()) == list(range(n))


def make_cost(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        return rng.random((n, n))
    if kind == "ties":  # few distinct values: many optimal matchings, degenerate duals
        return rng.integers(0, 3, (n, n)).astype(np.float64)
    if kind == "inner2d":  # the OT couplings' cost: -<a_i, b_j> in 2-D (rank 2)
        return -(rng.normal(size=(n, 2)) @ rng.normal(size=(n, 2)).T)
    if kind == "offset":  # tiny range on a huge offset: prices below the offset's ulp
        return 1e6 + 1e-3 * rng.random((n, n))
    if kind == "constant":
        return np.full((n, n), 7.0)
    raise AssertionError(kind)


KINDS = ["uniform", "ties", "inner2d", "offset", "constant"]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_matches_brute_force(solver, kind, n):
    rng = np.random.default_rng(100 * n + KINDS.index(kind))
    cost = make_cost(kind, n, rng)
    sigma = linear_assignment(cost, solver=solver)
    assert sigma.dtype == np.int64
    assert is_permutation(sigma, n)
    best = min(total(cost, np.array(p)) for p in itertools.permutations(range(n)))
    # Sums of n <= 7 float64 terms: any two orderings agree to a few ulps of the total.
    assert total(cost, sigma) == pytest.approx(best, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [16, 64, 257])
def test_auction_matches_scipy(kind, n):
    rng = np.random.default_rng(n + 7 * KINDS.index(kind))
    for _ in range(3):
        cost = make_cost(kind, n, rng)
        sigma = linear_assignment(cost, solver="auction")
        assert is_permutation(sigma, n)
        rows, cols = linear_sum_assignment(cost)
        # Both solvers certify optimality with float64 duals; the optimal values may differ
        # only by summation rounding (~n ulps of the total).
        ref = total(cost, cols)
        assert total(cost, sigma) == pytest.approx(ref, rel=1e-12, abs=1e-12)


def test_accepts_float32_and_lists():
    cost = np.array([[4.0, 1.0], [2.0, 8.0]], dtype=np.float32)
    assert linear_assignment(cost).tolist() == [1, 0]
    assert linear_assignment([[4.0, 1.0], [2.0, 8.0]], solver="scipy").tolist() == [1, 0]


@pytest.mark.parametrize(
    "cost, match",
    [
        (np.zeros((2, 3)), r"square \(n, n\) matrix, got shape \(2, 3\)"),
        (np.zeros(4), r"got shape \(4,\)"),
        (np.zeros((0, 0)), r"non-empty square"),
    ],
)
def test_rejects_bad_shapes(cost, match):
    with pytest.raises(ValueError, match=match):
        linear_assignment(cost)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_non_finite(bad):
    cost = np.ones((3, 3))
    cost[1, 2] = bad
    with pytest.raises(FloatingPointError, match=r"cost has 1 non-finite value\(s\).*overflow"):
        linear_assignment(cost)


def test_rejects_unknown_solver():
    with pytest.raises(ValueError, match=r"unknown solver 'hungarian'; choose one of"):
        linear_assignment(np.eye(2), solver="hungarian")  # type: ignore[arg-type]


@pytest.mark.parametrize("budget", [0, 8, 1000])
@pytest.mark.parametrize("kind", ["uniform", "ties", "inner2d"])
def test_auction_repair_paths_are_exact(kind, budget):
    # budget 0 forces the shortest-augmenting-path repair; a large budget lets the
    # label-correcting repair finish whenever the auction matching is optimal. Both must
    # give the optimum.
    from flowmatch.couplings._lap_kernels import auction_assignment

    rng = np.random.default_rng(budget + 3 * KINDS.index(kind))
    for _ in range(5):
        cost = make_cost(kind, 48, rng)
        sigma = auction_assignment(cost, budget)
        assert is_permutation(sigma, 48)
        _, cols = linear_sum_assignment(cost)
        assert total(cost, sigma) == pytest.approx(total(cost, cols), rel=1e-12, abs=1e-12)
