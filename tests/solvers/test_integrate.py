"""solve / integrate / steps_for_nfe: contracts, shapes, NFE counts and errors."""

from __future__ import annotations

import math

import pytest
import torch

from flowmatch.solvers import (
    RK4,
    SOLVERS,
    Dopri5,
    Euler,
    Heun,
    Midpoint,
    ODESolver,
    Solution,
    integrate,
    solve,
    steps_for_nfe,
)
from flowmatch.times import make_grid
from oracles import linear_system

F64 = torch.float64
FIXED = [name for name, cls in SOLVERS.items() if issubclass(cls, ODESolver)]
# Samplers of velocity fields (flow-map samplers integrate two-time maps: tests/solvers/test_flow_map.py).
VELOCITY = [name for name, cls in SOLVERS.items() if cls.field_kind == "velocity"]


def _decay(x, t, cond=None):
    return -x


def test_registry():
    assert set(SOLVERS) >= {"euler", "midpoint", "heun", "rk4", "dopri5"}
    for name, cls in SOLVERS.items():
        assert cls.name == name


@pytest.mark.parametrize("name", VELOCITY)
@pytest.mark.parametrize("shape", [(3, 3), (4, 2, 3), (2, 1, 4, 4)])
def test_solution_and_trajectory_shapes(name, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    grid = make_grid("uniform", 5, dtype=F64)
    sol = solve(_decay, x, grid, SOLVERS[name](), save_trajectory=True)
    assert isinstance(sol, Solution)
    assert sol.x.shape == shape and sol.x.dtype == F64
    assert sol.trajectory is not None and sol.trajectory.shape == (6, *shape)
    assert torch.equal(sol.trajectory[0], x) and torch.equal(sol.trajectory[-1], sol.x)
    assert solve(_decay, x, grid, SOLVERS[name]()).trajectory is None
    torch.testing.assert_close(integrate(_decay, x, grid, SOLVERS[name]()), sol.x)


@pytest.mark.parametrize("name", FIXED)
def test_fixed_step_nfe_and_field_contract(name):
    # The field always receives t of shape (B,) in x's dtype and cond unchanged (B == D = 4).
    calls, cond = [], torch.arange(4)

    def field(x, t, c=None):
        assert t.shape == (4,) and t.dtype == x.dtype and c is cond
        assert (t == t[0]).all()  # one grid shared by the batch
        calls.append(t[0].item())
        return -x

    solver = SOLVERS[name]()
    grid = make_grid("uniform", 7, dtype=F64)
    sol = solve(field, torch.ones(4, 4, dtype=F64), grid, solver, cond=cond)
    assert sol.nfe == 7 * solver.stages == len(calls)
    assert sol.num_steps == 7 and sol.num_rejected == 0
    assert min(calls) >= 0.0 and max(calls) <= 1.0


def test_known_values():
    # Euler on dx/dt = 1 is exact; on dx/dt = -x one step gives 1 - h, Heun gives 1 - h + h^2/2.
    grid = make_grid("uniform", 4, dtype=F64)
    ones = torch.ones(2, 3, dtype=F64)
    out = integrate(
        lambda x, t, cond=None: torch.ones_like(x), torch.zeros(2, 3, dtype=F64), grid, Euler()
    )
    torch.testing.assert_close(out, ones)
    one_step = make_grid("uniform", 1, dtype=F64)
    assert integrate(_decay, ones, one_step, Euler())[0, 0].item() == 0.0
    assert integrate(_decay, ones, one_step, Heun())[0, 0].item() == 0.5
    assert integrate(_decay, ones, one_step, Midpoint())[0, 0].item() == 0.5
    assert integrate(_decay, ones, one_step, RK4())[0, 0].item() == pytest.approx(9 / 24, abs=1e-15)


def test_time_dependent_field_uses_grid_times():
    # dx/dt = 2t has x(1) = x(0) + 1 and is integrated exactly by any order-2 method, on any
    # grid, including a non-uniform one and backwards.
    def field(x, t, cond=None):
        return 2 * t[:, None].expand_as(x)

    x = torch.zeros(3, 3, dtype=F64)
    grid = make_grid("shifted", 9, dtype=F64)
    for solver in (Midpoint(), Heun(), RK4(), Dopri5()):
        torch.testing.assert_close(integrate(field, x, grid, solver), x + 1)
        torch.testing.assert_close(integrate(field, x + 1, grid.flip(0), solver), x)


def test_partial_grid():
    field, y0, _ = linear_system(4, 0, batch=4)
    grid = torch.linspace(0.25, 0.75, 33, dtype=F64)  # h = 1/64: RK4 error ~ 1e-8
    out = integrate(field, field.exact(y0, 0.25), grid, RK4())
    torch.testing.assert_close(out, field.exact(y0, 0.75), rtol=0, atol=1e-6)


def test_float32_grid_with_float64_state():
    field, y0, exact = linear_system(4, 0)
    out = integrate(field, y0, make_grid("uniform", 64), RK4())
    assert out.dtype == F64
    torch.testing.assert_close(out, exact, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", FIXED)
def test_non_finite_result_raises(name):
    def field(x, t, cond=None):
        return x * math.inf

    with pytest.raises(
        FloatingPointError, match=r"solution has \d+ non-finite value\(s\).*check the model"
    ):
        solve(field, torch.ones(2, 2), make_grid("uniform", 2), SOLVERS[name]())


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (
            (_decay, torch.ones(3), make_grid("uniform", 2), Euler()),
            ValueError,
            r"x must have shape \(B, \*D\) with at least 2 dims, got \(3,\)",
        ),
        (
            (_decay, torch.ones(2, 3, dtype=torch.long), make_grid("uniform", 2), Euler()),
            TypeError,
            "x must be a floating-point tensor, got dtype torch.int64",
        ),
        (
            (_decay, [[1.0]], make_grid("uniform", 2), Euler()),
            TypeError,
            "x must be a torch.Tensor, got list",
        ),
        (
            (_decay, torch.ones(2, 3), torch.tensor([0.0, 0.6, 0.3]), Euler()),
            ValueError,
            "grid must be strictly monotone",
        ),
        (
            (_decay, torch.ones(2, 3), torch.tensor([0.0, 1.5]), Euler()),
            ValueError,
            r"grid must lie in \[0, 1\]",
        ),
        (
            (_decay, torch.ones(2, 3), [0.0, 1.0], Euler()),
            TypeError,
            "grid must be a 1-D torch.Tensor, got list",
        ),
        (
            (_decay, torch.ones(2, 3), make_grid("uniform", 2), "euler"),
            TypeError,
            "solver must be an ODESolver or AdaptiveSolver, got str",
        ),
        (
            (_decay, torch.ones(2, 3), make_grid("uniform", 2), Euler),
            TypeError,
            "solver must be an ODESolver or AdaptiveSolver, got ABCMeta",
        ),
        (
            ("field", torch.ones(2, 3), make_grid("uniform", 2), Euler()),
            TypeError,
            r"field must be callable \(x, t, cond\) -> \(B, \*D\), got str",
        ),
    ],
)
def test_solve_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        solve(*args)
    with pytest.raises(exc, match=match):
        integrate(*args)


@pytest.mark.parametrize("name", FIXED)
def test_steps_for_nfe(name):
    solver = SOLVERS[name]()
    for steps in (1, 3, 10):
        nfe = steps * solver.stages
        assert steps_for_nfe(solver, nfe) == steps
        assert solve(_decay, torch.ones(1, 1), make_grid("uniform", steps), solver).nfe == nfe


@pytest.mark.parametrize(
    ("solver", "nfe", "exc", "match"),
    [
        (Euler(), 0, ValueError, "nfe must be >= 1, got 0"),
        (Heun(), -2, ValueError, "nfe must be >= 1, got -2"),
        (
            Heun(),
            3,
            ValueError,
            r"nfe=3 is not a multiple of heun's 2 evaluations per step; use one of \[2, 4, 6, 8\]",
        ),
        (RK4(), 6, ValueError, "nfe=6 is not a multiple of rk4's 4 evaluations per step"),
        (Euler(), 2.0, TypeError, r"nfe must be an int, got 2\.0"),
        (Dopri5(), 12, TypeError, "solver must be a fixed-step ODESolver .* got Dopri5"),
    ],
)
def test_steps_for_nfe_errors(solver, nfe, exc, match):
    with pytest.raises(exc, match=match):
        steps_for_nfe(solver, nfe)


# Outputs that broadcast against x (B, D) = (3, 3) without a shape check (B == D on purpose).
BROADCASTING = {
    "(B, 1)": lambda x, t, cond=None: -x[:, :1],
    "(1, D)": lambda x, t, cond=None: -x[:1],
    "(B,)": lambda x, t, cond=None: -x.sum(1),
    "scalar": lambda x, t, cond=None: -x.sum(),
}


@pytest.mark.parametrize("name", VELOCITY)
@pytest.mark.parametrize("kind", ["(B, 1)", "(1, D)", "(B,)", "scalar"])
def test_outputs_that_would_broadcast_are_refused(name, kind):
    with pytest.raises(ValueError, match=r"field must return a tensor shaped like x \(3, 3\), got"):
        solve(BROADCASTING[kind], torch.ones(3, 3), make_grid("uniform", 2), SOLVERS[name]())


@pytest.mark.parametrize("name", VELOCITY)
def test_a_field_without_cond_is_told_the_expected_signature(name):
    class NoCond(torch.nn.Module):
        def forward(self, x, t):
            return -x

    with pytest.raises(
        TypeError, match=r"define forward\(x, t, cond=None\).*NoCond.forward\(x, t\)"
    ):
        solve(NoCond(), torch.ones(2, 2), make_grid("uniform", 2), SOLVERS[name]())
    with pytest.raises(TypeError, match=r"field must be called as field\(x, t, cond\)"):
        solve(lambda x, t: -x, torch.ones(2, 2), make_grid("uniform", 2), SOLVERS[name]())


@pytest.mark.parametrize("name", VELOCITY)
def test_a_non_finite_initial_state_is_named_as_such(name):
    x = torch.ones(3, 2)
    x[1, 0] = math.nan
    with pytest.raises(FloatingPointError, match=r"x \(the initial state\) has 1 non-finite"):
        solve(_decay, x, make_grid("uniform", 2), SOLVERS[name]())
