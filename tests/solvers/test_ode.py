"""Fixed-step Runge-Kutta solvers: measured order, tableau consistency, backward integration.

Orders are measured on the generic linear system of tests/oracles.py (DESIGN 1.8(b)), never
on the Gaussian oracle, which is too symmetric (midpoint shows order ~3 there).
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from flowmatch.solvers import (
    SOLVERS,
    TABLEAUS,
    ButcherTableau,
    ExplicitRK,
    ODESolver,
    integrate,
    solve,
)
from flowmatch.times import make_grid
from oracles import GaussianOracle, linear_system

F64 = torch.float64
FIXED = {name: cls for name, cls in SOLVERS.items() if issubclass(cls, ODESolver)}
STEPS = [8, 16, 32, 64, 128, 256]


def _embedded(tab: ButcherTableau) -> ButcherTableau:
    """The embedded lower-order method of a pair: weights b_hat = b - b_err, order - 1."""
    assert tab.b_err is not None
    b_hat = tuple(b - e for b, e in zip(tab.b, tab.b_err, strict=True))
    return ButcherTableau(f"{tab.name}_embedded", tab.order - 1, tab.c, tab.a, b_hat)


ALL_TABLEAUS = list(TABLEAUS.values()) + [
    _embedded(t) for t in TABLEAUS.values() if t.b_err is not None
]


def _fixed_step(tab: ButcherTableau) -> ODESolver:
    """Any tableau as a fixed-step solver (a dynamic ExplicitRK subclass)."""
    return type(f"Fixed_{tab.name}", (ExplicitRK,), {"tableau": tab})()


def _measured_order(solver: ODESolver, *, time_dependent: bool) -> tuple[float, list[float]]:
    """Least-squares slope of log(error) vs log(h) (DESIGN 1.8(b))."""
    field, y0, exact = linear_system(10, 0, time_dependent=time_dependent)
    errors = []
    for n in STEPS:
        y1 = integrate(field, y0, make_grid("uniform", n, dtype=F64), solver)
        errors.append((y1 - exact).abs().max().item())
    err = torch.tensor(errors, dtype=F64)
    keep = err > 1e-12  # stay above float64 round-off
    h = 1.0 / torch.tensor(STEPS, dtype=F64)
    design = torch.stack([h.log(), torch.ones_like(h)], 1)[keep]
    slope = torch.linalg.lstsq(design, err.log()[keep, None]).solution[0].item()
    return slope, errors


@pytest.mark.parametrize("time_dependent", [False, True], ids=["autonomous", "g(t)=1+t"])
@pytest.mark.parametrize("name", list(FIXED))
def test_registered_solver_order(name, time_dependent):
    # |slope - order| < 0.3 (DESIGN 1.8(b)); the non-autonomous system also checks that the
    # stage times t + c_i h are right. Measured: 0.94-0.98 / 1.97-2.00 / 1.97-2.00 / 3.91-3.97.
    solver = FIXED[name]()
    slope, errors = _measured_order(solver, time_dependent=time_dependent)
    assert abs(slope - solver.order) < 0.3, (slope, errors)


@pytest.mark.parametrize("time_dependent", [False, True], ids=["autonomous", "g(t)=1+t"])
@pytest.mark.parametrize("tab", ALL_TABLEAUS, ids=lambda t: t.name)
def test_every_tableau_has_its_declared_order(tab, time_dependent):
    # Every tableau (dopri5's 5th-order weights and its embedded 4th-order weights too) used
    # as a fixed-step method converges at its declared order: this checks the digits.
    slope, errors = _measured_order(_fixed_step(tab), time_dependent=time_dependent)
    assert abs(slope - tab.order) < 0.3, (slope, errors)


def _order_conditions(tab: ButcherTableau, b: tuple[float, ...]) -> dict[int, list[Fraction]]:
    """Residuals of the Butcher order conditions up to order 4 (one per rooted tree).

    sum_i b_i phi_i(tree) = 1 / gamma(tree) (Hairer, Norsett & Wanner I, Thm. II.2.13).
    """
    s = len(b)
    a = [[Fraction(v) for v in row] + [Fraction(0)] * (s - len(row)) for row in tab.a]
    c = [Fraction(v) for v in tab.c]
    bb = [Fraction(v) for v in b]

    def dot(u, v):
        return sum(x * y for x, y in zip(u, v, strict=True))

    def mat(v):
        return [dot(row, v) for row in a]

    ones = [Fraction(1)] * s
    c2, c3 = [x * x for x in c], [x * x * x for x in c]
    ac = mat(c)
    return {
        1: [dot(bb, ones) - 1],
        2: [dot(bb, c) - Fraction(1, 2)],
        3: [dot(bb, c2) - Fraction(1, 3), dot(bb, ac) - Fraction(1, 6)],
        4: [
            dot(bb, c3) - Fraction(1, 4),
            dot(bb, [x * y for x, y in zip(c, ac, strict=True)]) - Fraction(1, 8),
            dot(bb, mat(c2)) - Fraction(1, 12),
            dot(bb, mat(ac)) - Fraction(1, 24),
        ],
    }


@pytest.mark.parametrize("tab", ALL_TABLEAUS, ids=lambda t: t.name)
def test_tableau_consistency(tab):
    s = tab.stages
    assert len(tab.c) == s and len(tab.a) == s
    # Explicit: row i has exactly i entries (strictly lower triangular).
    assert [len(row) for row in tab.a] == list(range(s))
    # c_i = sum_j a_ij (row-sum condition) and sum b = 1 (consistency), to 1e-15.
    for c_i, row in zip(tab.c, tab.a, strict=True):
        assert c_i == pytest.approx(sum(row), abs=1e-15)
    assert sum(tab.b) == pytest.approx(1.0, abs=1e-15)
    if tab.b_err is not None:
        # Error weights b - b_hat: both solutions are consistent, so they sum to 0.
        assert len(tab.b_err) == s
        assert sum(tab.b_err) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("tab", ALL_TABLEAUS, ids=lambda t: t.name)
def test_tableau_order_conditions(tab):
    # The weights satisfy every order condition up to min(order, 4) (to float round-off,
    # evaluated in exact rational arithmetic on the float entries), and a method of order
    # p < 4 violates some condition of order p + 1, so the declared order is not too low.
    residuals = _order_conditions(tab, tab.b)
    for p in range(1, min(tab.order, 4) + 1):
        assert all(abs(r) < 1e-14 for r in residuals[p]), (p, residuals[p])
    if tab.order < 4:
        assert any(abs(r) > 1e-3 for r in residuals[tab.order + 1])


def test_dopri5_is_first_same_as_last():
    # The last stage is evaluated at the new solution: a[-1] == b[:-1], b[-1] == 0, c[-1] == 1.
    tab = TABLEAUS["dopri5"]
    assert tab.a[-1] == tab.b[:-1] and tab.b[-1] == 0.0 and tab.c[-1] == 1.0


@pytest.mark.parametrize("name", list(FIXED))
def test_solver_attributes_follow_tableau(name):
    cls = FIXED[name]
    assert cls.name == name == cls.tableau.name
    assert cls.order == cls.tableau.order and cls.stages == cls.tableau.stages
    assert repr(cls()) == f"{cls.__name__}()"


@pytest.mark.parametrize("name", list(FIXED))
def test_step_calls_field_stages_times_with_batch_times(name):
    solver, calls = FIXED[name](), []

    def field(x, t, cond=None):
        calls.append((t.shape, t.dtype, cond))
        return -x

    x = torch.randn(4, 4, dtype=F64)
    x_before = x.clone()
    out = solver.step(field, x, 0.25, 0.5, cond="c")
    assert out.shape == x.shape and out.dtype == F64
    assert torch.equal(x, x_before)  # pure: the input is not modified
    assert len(calls) == solver.stages
    assert all(c == ((4,), F64, "c") for c in calls)


@pytest.mark.parametrize("name", list(FIXED))
def test_backward_integration_has_the_same_order(name):
    # Integrating from the exact y(1) over the decreasing grid recovers y0 at order p.
    solver = FIXED[name]()
    field, y0, exact = linear_system(10, 0, time_dependent=True)
    errors = []
    for n in STEPS:
        grid = make_grid("uniform", n, dtype=F64).flip(0)
        errors.append((integrate(field, exact, grid, solver) - y0).abs().max().item())
    err = torch.tensor(errors, dtype=F64)
    keep = err > 1e-12
    h = 1.0 / torch.tensor(STEPS, dtype=F64)
    design = torch.stack([h.log(), torch.ones_like(h)], 1)[keep]
    slope = torch.linalg.lstsq(design, err.log()[keep, None]).solution[0].item()
    assert abs(slope - solver.order) < 0.3, (slope, errors)


@pytest.mark.parametrize("name", list(FIXED))
def test_backward_inverts_forward(name):
    # Forward then backward returns to y0 up to O(h^p): the round-trip error falls at least
    # as fast as h^p (for even p the leading terms cancel and it falls faster).
    solver = FIXED[name]()
    field, y0, _ = linear_system(6, 1, batch=6, time_dependent=True)  # B == D
    errors = []
    for n in (16, 32, 64):
        grid = make_grid("uniform", n, dtype=F64)
        y1 = integrate(field, y0, grid, solver)
        errors.append((integrate(field, y1, grid.flip(0), solver) - y0).abs().max().item())
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert fine < coarse * 2.0 ** -(solver.order - 0.3), errors


@pytest.mark.parametrize("s", [0.5, 2.0])
@pytest.mark.parametrize("name", list(FIXED))
def test_gaussian_oracle_end_to_end(name, s):
    # Integrating the exact marginal velocity from x0 lands on mu + s x0. Bound: global error
    # <= 10 h^p, a loose constant for a field whose derivatives are O(1) for s in [0.5, 2]
    # (measured constants: Euler 7, Heun 2, RK4 1.2, midpoint < 0.01 at h = 1/128).
    solver = FIXED[name]()
    oracle = GaussianOracle(torch.tensor([1.0, -2.0, 0.5], dtype=F64), s)
    x0 = oracle.sample_x0(8, torch.Generator().manual_seed(0))
    for n in (32, 128):
        x1 = integrate(oracle, x0, make_grid("uniform", n, dtype=F64), solver)
        assert x1.shape == x0.shape
        err = (x1 - (oracle.mu + s * x0)).abs().max().item()
        assert err <= 10 * (1 / n) ** solver.order, (n, err)


def test_gaussian_oracle_trajectory_follows_exact_flow():
    oracle = GaussianOracle(torch.tensor([0.5, 1.0], dtype=F64), 0.3)
    x0 = oracle.sample_x0(2, torch.Generator().manual_seed(1))  # B == D
    grid = make_grid("shifted", 64, dtype=F64)
    sol = solve(oracle, x0, grid, SOLVERS["rk4"](), save_trajectory=True)
    exact = torch.stack([oracle.flow(x0, t) for t in grid.tolist()])
    assert sol.trajectory is not None and sol.trajectory.shape == (65, 2, 2)
    # RK4 with 64 steps: error ~ h^4 ~ 1e-7 on this grid.
    torch.testing.assert_close(sol.trajectory, exact, rtol=0, atol=1e-6)


def test_shampine_embedded_weights_are_fourth_order():
    # b_hat = b - b_err for Shampine's estimator satisfies all conditions up to order 4 and
    # differs from the Dormand-Prince embedded solution (else it would be no alternative).
    from flowmatch.solvers.tableaus import DOPRI5, DOPRI5_SHAMPINE_ERR

    b_hat = tuple(b - e for b, e in zip(DOPRI5.b, DOPRI5_SHAMPINE_ERR, strict=True))
    residuals = _order_conditions(DOPRI5, b_hat)
    for p in range(1, 5):
        assert all(abs(r) < 1e-14 for r in residuals[p]), (p, residuals[p])
    assert sum(DOPRI5_SHAMPINE_ERR) == pytest.approx(0.0, abs=1e-15)
    assert max(abs(a - b) for a, b in zip(DOPRI5_SHAMPINE_ERR, DOPRI5.b_err, strict=True)) > 1e-3
