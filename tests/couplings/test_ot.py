"""Exact, class-conditional and entropic OT couplings: optimality, marginals, errors."""

import itertools
import math

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from flowmatch.couplings import (
    COUPLINGS,
    ClassConditionalOTCoupling,
    ExactOTCoupling,
    IndependentCoupling,
    SinkhornCoupling,
    linear_assignment,
)

SOLVERS = ["auction", "scipy"]


def sq_cost(a: torch.Tensor, b: torch.Tensor) -> float:
    """Total squared-Euclidean cost of the pairs (a_i, b_i), samples flattened."""
    return float((a - b).reshape(a.shape[0], -1).pow(2).sum())


def is_row_permutation(y: torch.Tensor, x: torch.Tensor) -> bool:
    """Rows of y are exactly the rows of x, each used once."""
    if y.shape != x.shape:
        return False
    flat_x, flat_y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    match = (flat_y[:, None, :] == flat_x[None, :, :]).all(-1)
    return bool((match.sum(0) == 1).all() and (match.sum(1) == 1).all())


def is_permutation(perm: torch.Tensor, n: int) -> bool:
    return (
        perm.shape == (n,)
        and perm.dtype == torch.long
        and bool((perm.sort().values == torch.arange(n)).all())
    )


def brute_force(x0: torch.Tensor, x1: torch.Tensor) -> float:
    n = x0.shape[0]
    return min(sq_cost(x0[list(p)], x1) for p in itertools.permutations(range(n)))


# --------------------------------------------------------------------------- exact OT


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("n", [2, 3, 5, 7])
def test_exact_ot_is_optimal(n, solver):
    g = torch.Generator().manual_seed(n)
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x0c, x1c = ExactOTCoupling(solver=solver)(x0, x1, generator=g)
    assert x0c.shape == x1c.shape == (n, 2)
    assert x1c is x1  # data keep their order (and identity)
    # <= 7 terms in float64: the optimum is reproduced to rounding of the sum.
    assert sq_cost(x0c, x1c) == pytest.approx(brute_force(x0, x1), rel=1e-12)
    assert is_row_permutation(x0c, x0)  # a permutation: no duplicated pairs


def test_exact_ot_1d_is_sorted_matching():
    # In 1-D the monotone (sorted) matching is optimal for any convex cost; with continuous
    # samples it is unique, so the ranks must agree exactly.
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1000, 1, generator=g, dtype=torch.float64)
    x1 = 3.0 * torch.rand(1000, 1, generator=g, dtype=torch.float64) - 1.0
    perm = ExactOTCoupling().permutation(x0, x1)
    assert is_permutation(perm, 1000)
    rank = lambda v: v[:, 0].argsort().argsort()  # noqa: E731
    assert torch.equal(rank(x0[perm]), rank(x1))


def test_exact_ot_images_any_shape():
    # (B, C, H, W) samples are flattened; brute force over 6! permutations.
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    x1 = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    x0c, x1c = ExactOTCoupling()(x0, x1)
    assert x0c.shape == x1c.shape == (6, 3, 4, 4)
    assert sq_cost(x0c, x1) == pytest.approx(brute_force(x0, x1), rel=1e-12)
    assert is_row_permutation(x0c, x0)


def test_exact_ot_batch_equals_features_matches_scipy():
    # B == D: where broadcasting mistakes between samples and features would hide.
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(16, 16, generator=g, dtype=torch.float64)
    x1 = torch.randn(16, 16, generator=g, dtype=torch.float64)
    perm = ExactOTCoupling().permutation(x0, x1)
    assert is_permutation(perm, 16)
    rows, cols = linear_sum_assignment(torch.cdist(x0, x1).pow(2).numpy())
    # The scipy oracle on the plain squared-distance matrix; sums of 16 terms agree to 1e-12.
    assert sq_cost(x0[perm], x1) == pytest.approx(sq_cost(x0[rows], x1[cols]), rel=1e-12)


def test_exact_ot_float32_same_permutation_as_float64():
    # The cost is always built in float64, so float32 inputs (exactly representable in
    # float64) give the identical permutation.
    g = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    p32 = ExactOTCoupling().permutation(x0, x1)
    p64 = ExactOTCoupling().permutation(x0.double(), x1.double())
    assert torch.equal(p32, p64)


def test_exact_ot_lowers_cost_vs_independent():
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(128, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(128, 2, generator=g, dtype=torch.float64) + 3.0
    x0c, _ = ExactOTCoupling()(x0, x1)
    assert sq_cost(x0c, x1) < sq_cost(x0, x1)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_exact_ot_rejects_non_finite(bad):
    x0 = torch.randn(4, 2, dtype=torch.float64)
    x1 = torch.randn(4, 2, dtype=torch.float64)
    x1[2, 1] = bad
    with pytest.raises(FloatingPointError, match=r"OT cost matrix has \d+ non-finite.*NaN/inf"):
        ExactOTCoupling().permutation(x0, x1)


def test_exact_ot_rejects_overflowing_cost():
    x0 = torch.full((3, 2), 1e200, dtype=torch.float64)
    x1 = torch.full((3, 2), 1e200, dtype=torch.float64)
    with pytest.raises(FloatingPointError, match=r"non-finite.*overflow"):
        ExactOTCoupling()(x0, x1)


def test_exact_ot_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"x0 and x1 must have the same shape"):
        ExactOTCoupling().permutation(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(TypeError, match=r"x0 must be a floating-point tensor"):
        ExactOTCoupling().permutation(torch.ones(4, 2, dtype=torch.long), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"x1 must have shape \(B, \*D\)"):
        ExactOTCoupling().permutation(torch.randn(4, 1), torch.randn(4))
    with pytest.raises(ValueError, match=r"unknown solver 'lapjv'"):
        ExactOTCoupling(solver="lapjv")  # type: ignore[arg-type]


# --------------------------------------------------------------------- class-conditional


@pytest.mark.parametrize("solver", SOLVERS)
def test_class_ot_optimal_within_each_class(solver):
    g = torch.Generator().manual_seed(5)
    labels = torch.tensor([2, 0, 1, 0, 2, 1, 0, 2, 2, 5, 1, 0])
    n = labels.shape[0]
    x0 = torch.randn(n, 3, generator=g, dtype=torch.float64)
    x1 = torch.randn(n, 3, generator=g, dtype=torch.float64)
    perm = ClassConditionalOTCoupling(solver=solver).permutation(x0, x1, labels=labels)
    assert is_permutation(perm, n)  # marginals of x0 and x1 preserved exactly
    assert torch.equal(labels[perm], labels)  # pairs never cross labels
    for k in labels.unique():
        idx = (labels == k).nonzero().squeeze(1)
        # Sub-batches of <= 4 points: brute force is the oracle, rounding only.
        got = sq_cost(x0[perm][idx], x1[idx])
        assert got == pytest.approx(brute_force(x0[idx], x1[idx]), rel=1e-12)


def test_class_ot_single_class_equals_exact_ot_and_call_contract():
    g = torch.Generator().manual_seed(6)
    x0, x1 = torch.randn(32, 2, generator=g), torch.randn(32, 2, generator=g)
    labels = torch.full((32,), 3)
    coupling = ClassConditionalOTCoupling()
    assert coupling.uses_labels
    assert torch.equal(
        coupling.permutation(x0, x1, labels=labels), ExactOTCoupling().permutation(x0, x1)
    )
    x0c, x1c = coupling(x0, x1, labels=labels)
    assert x0c.shape == (32, 2) and x1c is x1
    assert is_row_permutation(x0c, x0)


def test_class_ot_errors():
    x0, x1 = torch.randn(4, 2), torch.randn(4, 2)
    coupling = ClassConditionalOTCoupling()
    with pytest.raises(ValueError, match=r"needs labels \(B,\).*got None"):
        coupling.permutation(x0, x1)
    with pytest.raises(
        ValueError, match=r"labels must be a tensor of shape \(B,\) = \(4,\), got \(3,\)"
    ):
        coupling.permutation(x0, x1, labels=torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match=r"labels must be a tensor of shape.*got list"):
        coupling.permutation(x0, x1, labels=[0, 1, 0, 1])  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"labels must be an integer tensor, got dtype torch.float32"
    ):
        coupling.permutation(x0, x1, labels=torch.zeros(4))
    with pytest.raises(ValueError, match=r"unknown solver 'x'"):
        ClassConditionalOTCoupling(solver="x")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ Sinkhorn


def _pair(n: int, seed: int, d: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, d, generator=g, dtype=torch.float64)
    x1 = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.5 + 1.0
    return x0, x1


@pytest.mark.parametrize("reg", [0.05, 1.0])
def test_sinkhorn_plan_marginals_and_gibbs_form(reg):
    x0, x1 = _pair(24, 0)
    coupling = SinkhornCoupling(reg, tol=1e-10, num_iters=20000)
    plan = coupling.plan(x0, x1)
    n = x0.shape[0]
    assert plan.shape == (n, n) and plan.dtype == torch.float64
    assert bool((plan >= 0).all())
    # Stopping rule: max_i |B * row_i - 1| < tol; columns are exact after the last update.
    assert torch.allclose(plan.sum(1), torch.full((n,), 1 / n, dtype=torch.float64), atol=1e-10 / n)
    assert torch.allclose(plan.sum(0), torch.full((n,), 1 / n, dtype=torch.float64), atol=1e-12)
    # First-order optimality of the entropic problem: log P + C / eps = f_i + g_j, i.e. the
    # double-centred matrix vanishes (up to float64 rounding of logs of O(1) numbers).
    cost = torch.cdist(x0, x1).pow(2)
    eps = reg * float(cost.mean())
    m = plan.log() + cost / eps
    centred = m - m.mean(0, keepdim=True) - m.mean(1, keepdim=True) + m.mean()
    assert float(centred.abs().max()) < 1e-8


def test_sinkhorn_map_equals_perturbed_log_plan():
    # The class docstring claims the potentials cancel in the MAP: check it against the
    # actual Sinkhorn log-plan perturbed with the same Gumbel draw.
    x0, x1 = _pair(20, 1)
    coupling = SinkhornCoupling(0.3, tol=1e-12, num_iters=20000)
    perm = coupling.permutation(x0, x1, generator=torch.Generator().manual_seed(7))
    u = torch.rand((20, 20), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    gumbel = -torch.log(-torch.log(u))
    score = coupling.plan(x0, x1).log().T + gumbel  # rows: x1_i, columns: x0_j
    ref = linear_assignment((-score).numpy(), solver="scipy")
    assert torch.equal(perm, torch.from_numpy(ref))


def _excess_costs(reg: float, draws: int, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    coupling = SinkhornCoupling(reg)
    costs = []
    for _ in range(draws):
        perm = coupling.permutation(x0, x1, generator=g)
        assert is_permutation(perm, x0.shape[0])
        costs.append(sq_cost(x0[perm], x1))
    return torch.tensor(costs, dtype=torch.float64)


def test_sinkhorn_small_reg_tends_to_exact_ot():
    x0, x1 = _pair(32, 2)
    exact = sq_cost(x0[ExactOTCoupling().permutation(x0, x1)], x1)
    excess = [float(_excess_costs(r, 10, x0, x1).mean()) - exact for r in (0.3, 0.03, 1e-5)]
    assert all(e >= -1e-9 for e in excess)  # exact OT is a lower bound
    assert excess[0] > excess[1] > excess[2] - 1e-12  # monotone in reg (seeded, 10 draws)
    # Gumbel noise of scale 1e-5 * mean(C) is far below the gaps between matchings here.
    assert excess[2] == pytest.approx(0.0, abs=1e-9 * exact)


def test_sinkhorn_large_reg_tends_to_independent():
    # reg -> inf: a uniformly random permutation, whose expected cost is sum_ij C_ij / B.
    x0, x1 = _pair(16, 3)
    costs = _excess_costs(1e6, 300, x0, x1)
    expected = float(torch.cdist(x0, x1).pow(2).sum()) / 16
    se = float(costs.std()) / math.sqrt(len(costs))
    assert abs(float(costs.mean()) - expected) < 5 * se  # 5 standard errors (seeded)


def test_sinkhorn_generator_determinism():
    x0, x1 = _pair(32, 4)
    coupling = SinkhornCoupling(1.0)
    p1 = coupling.permutation(x0, x1, generator=torch.Generator().manual_seed(0))
    p2 = coupling.permutation(x0, x1, generator=torch.Generator().manual_seed(0))
    p3 = coupling.permutation(x0, x1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(p1, p2)
    assert not torch.equal(p1, p3)
    x0c, x1c = coupling(x0, x1, generator=torch.Generator().manual_seed(0))
    assert x1c is x1 and torch.equal(x0c, x0[p1])


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"reg": 0.0}, ValueError, r"reg must be a finite number > 0, got 0.0"),
        ({"reg": math.inf}, ValueError, r"reg must be a finite number > 0, got inf"),
        ({"reg": "0.1"}, TypeError, r"reg must be a number, got '0.1'"),
        ({"num_iters": 0}, ValueError, r"num_iters must be >= 1, got 0"),
        ({"tol": -1e-3}, ValueError, r"tol must be a finite number > 0"),
        ({"solver": "pot"}, ValueError, r"unknown solver 'pot'"),
    ],
)
def test_sinkhorn_constructor_errors(kwargs, err, match):
    with pytest.raises(err, match=match):
        SinkhornCoupling(**kwargs)


def test_sinkhorn_runtime_errors():
    x0, x1 = _pair(8, 5)
    with pytest.raises(RuntimeError, match=r"did not converge in num_iters=1 iterations"):
        SinkhornCoupling(0.01, num_iters=1, tol=1e-12).plan(x0, x1)
    same = torch.ones(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"not all identical"):
        SinkhornCoupling().permutation(same, same.clone())
    bad = x1.clone()
    bad[0, 0] = math.nan
    with pytest.raises(FloatingPointError, match=r"non-finite|mean nan"):
        SinkhornCoupling().permutation(x0, bad)


# ------------------------------------------------------------------------------ registry


def test_registry_names_and_permutations():
    assert set(COUPLINGS) == {"independent", "exact_ot", "class_ot", "sinkhorn"}
    assert COUPLINGS["independent"] is IndependentCoupling
    x0, x1 = _pair(10, 6)
    labels = torch.arange(10) % 3
    for name, cls in COUPLINGS.items():
        coupling = cls()
        assert cls.name == name
        perm = coupling.permutation(
            x0, x1, labels=labels, generator=torch.Generator().manual_seed(0)
        )
        assert is_permutation(perm, 10), name
