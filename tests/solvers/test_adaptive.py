"""Adaptive Dopri5: accuracy vs tolerance, NFE accounting, step control, errors, torchdiffeq."""

from __future__ import annotations

import math

import pytest
import torch

from flowmatch.solvers import Dopri5, solve
from flowmatch.times import custom_grid, make_grid
from oracles import GaussianOracle, linear_system

F64 = torch.float64


class Counting:
    """Wraps a field; records every evaluation time (first entry of t) and the t shapes."""

    def __init__(self, field):
        self.field, self.times, self.shapes = field, [], set()

    def __call__(self, x, t, cond=None):
        self.times.append(t[0].item())
        self.shapes.add(tuple(t.shape))
        return self.field(x, t, cond)


def _oracle(s: float = 0.5) -> GaussianOracle:
    return GaussianOracle(torch.tensor([1.0, -2.0, 0.5], dtype=F64), s)


def _scaled_rms(err: torch.Tensor, tol: float, y: torch.Tensor) -> float:
    """The controller's norm of a global error: rms over the batch of err / (atol + rtol |y|)."""
    return (err / (tol * (1 + y.abs()))).pow(2).mean().sqrt().item()


@pytest.mark.parametrize("tol", [1e-5, 1e-7, 1e-9])
@pytest.mark.parametrize("time_dependent", [False, True], ids=["autonomous", "g(t)=1+t"])
def test_linear_system_error_below_tolerance_scale(time_dependent, tol):
    # The controller keeps each step's local error below 1 in its norm (rms of
    # err / (atol + rtol |y|)); the global error is the sum of ~5-30 damped local errors, so
    # it stays within a small factor of the scale: bound 2, measured 0.23-0.93 here and
    # 0.02-1.15 on the Gaussian oracle below.
    field, y0, exact = linear_system(10, 0, batch=4, time_dependent=time_dependent)
    sol = solve(field, y0, make_grid("uniform", 1, dtype=F64), Dopri5(atol=tol, rtol=tol))
    assert _scaled_rms(sol.x - exact, tol, exact) < 2


@pytest.mark.parametrize("s", [0.2, 0.5, 2.0])
@pytest.mark.parametrize("tol", [1e-6, 1e-8])
def test_gaussian_oracle_error_below_tolerance_scale(s, tol):
    oracle = _oracle(s)
    x0 = oracle.sample_x0(16, torch.Generator().manual_seed(0))
    exact = oracle.flow(x0, 1.0)
    sol = solve(oracle, x0, make_grid("uniform", 1, dtype=F64), Dopri5(atol=tol, rtol=tol))
    assert _scaled_rms(sol.x - exact, tol, exact) < 2


def test_error_decreases_with_tolerance():
    field, y0, exact = linear_system(10, 2, batch=3, time_dependent=True)
    errors = [
        (solve(field, y0, make_grid("uniform", 1, dtype=F64), Dopri5(tol, tol)).x - exact)
        .abs()
        .max()
        for tol in (1e-4, 1e-6, 1e-8, 1e-10)
    ]
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors


@pytest.mark.parametrize("num_intervals", [1, 5])
def test_nfe_accounting(num_intervals):
    # One evaluation at the start of each output interval (k1), one for the starting-step
    # probe, then 6 per attempted step (7 stages, first-same-as-last).
    field = Counting(_oracle(0.3))
    x0 = _oracle().sample_x0(8, torch.Generator().manual_seed(1))
    sol = solve(field, x0, make_grid("uniform", num_intervals, dtype=F64), Dopri5(1e-7, 1e-7))
    assert sol.num_rejected > 0  # this problem exercises rejections (s = 0.3)
    assert sol.nfe == num_intervals + 1 + 6 * (sol.num_steps + sol.num_rejected)
    assert sol.nfe == len(field.times)
    assert field.shapes == {(8,)}


def test_nfe_with_given_first_step():
    field = Counting(_oracle())
    x0 = _oracle().sample_x0(4, torch.Generator().manual_seed(1))
    sol = solve(field, x0, make_grid("uniform", 1, dtype=F64), Dopri5(1e-6, 1e-6, first_step=0.05))
    assert sol.nfe == 1 + 6 * (sol.num_steps + sol.num_rejected) == len(field.times)


def test_field_is_only_evaluated_inside_the_interval_and_lands_on_grid_times():
    # The starting-step probe and the clipped last step never leave [t0, t1]; every output
    # time is hit exactly (the next interval starts with an evaluation at that exact time).
    field = Counting(_oracle())
    x0 = _oracle().sample_x0(4, torch.Generator().manual_seed(2))
    grid = custom_grid([0.0, 0.3, 0.93, 1.0], dtype=F64)
    solve(field, x0, grid, Dopri5(1e-4, 1e-4))
    assert min(field.times) == 0.0 and max(field.times) == 1.0
    assert 0.3 in field.times and 0.93 in field.times
    # A short first interval: the starting-step probe (0.01 |x| / |f| ~ 0.01 here) would
    # overshoot t = 1 unless clipped to the interval.
    field = Counting(_oracle())
    solve(field, x0, torch.tensor([0.995, 1.0], dtype=F64), Dopri5(1e-4, 1e-4))
    assert min(field.times) == 0.995 and max(field.times) == 1.0


def test_trajectory_at_output_times():
    oracle = _oracle(2.0)
    x0 = oracle.sample_x0(5, torch.Generator().manual_seed(3))
    grid = make_grid("uniform", 10, dtype=F64)
    sol = solve(oracle, x0, grid, Dopri5(1e-9, 1e-9), save_trajectory=True)
    assert sol.trajectory is not None and sol.trajectory.shape == (11, 5, 3)
    exact = torch.stack([oracle.flow(x0, t) for t in grid.tolist()])
    torch.testing.assert_close(sol.trajectory, exact, rtol=0, atol=1e-8)


def test_tiny_output_interval_does_not_reset_the_step_size():
    # A clipped last step is not evidence that the step must be small: after the interval
    # [0.5, 0.5 + 1e-6] the solver continues with its previous step size (measured: the same
    # number of accepted steps as without the extra output time, plus the tiny one).
    oracle = _oracle(2.0)
    x0 = oracle.sample_x0(4, torch.Generator().manual_seed(4))
    plain = solve(oracle, x0, custom_grid([0.0, 0.5, 1.0], dtype=F64), Dopri5(1e-8, 1e-8))
    tiny = solve(
        oracle, x0, custom_grid([0.0, 0.5, 0.5 + 1e-6, 1.0], dtype=F64), Dopri5(1e-8, 1e-8)
    )
    assert tiny.num_steps <= plain.num_steps + 2, (tiny.num_steps, plain.num_steps)


def test_backward_solve_inverts_forward():
    field, y0, _ = linear_system(6, 3, batch=6, time_dependent=True)  # B == D
    grid = make_grid("uniform", 1, dtype=F64)
    fwd = solve(field, y0, grid, Dopri5(1e-10, 1e-10))
    back = solve(field, fwd.x, grid.flip(0), Dopri5(1e-10, 1e-10))
    assert back.x.shape == y0.shape
    torch.testing.assert_close(back.x, y0, rtol=0, atol=1e-8)
    torch.testing.assert_close(fwd.x, field.exact(y0, 1.0), rtol=0, atol=1e-8)


def test_float32_is_supported():
    field, y0, exact = linear_system(4, 0, batch=2, dtype=torch.float32)
    sol = solve(field, y0, make_grid("uniform", 1), Dopri5(1e-5, 1e-5))
    assert sol.x.dtype == torch.float32
    assert _scaled_rms(sol.x - exact, 1e-5, exact) < 2


def test_max_steps_raises():
    field, y0, _ = linear_system(10, 0)
    with pytest.raises(
        RuntimeError, match=r"dopri5 exceeded max_steps=2 at t=.*loosen the tolerances"
    ):
        solve(field, y0, make_grid("uniform", 1, dtype=F64), Dopri5(1e-10, 1e-10, max_steps=2))


def test_max_steps_counts_the_whole_solve():
    # max_steps bounds the whole solve, not each output interval: 10 intervals need >= 10
    # steps, so max_steps=5 must raise even though each interval alone needs only 1.
    field, y0, _ = linear_system(4, 0)
    with pytest.raises(RuntimeError, match="max_steps=5"):
        solve(field, y0, make_grid("uniform", 10, dtype=F64), Dopri5(1e-3, 1e-3, max_steps=5))


def test_non_finite_field_raises():
    def field(x, t, cond=None):
        return torch.where(t[:, None] > 0.2, x.new_full(x.shape, math.nan), -x)

    with pytest.raises(FloatingPointError, match="dopri5: the field returned NaN/inf in the step"):
        solve(field, torch.ones(2, 2, dtype=F64), make_grid("uniform", 1, dtype=F64), Dopri5())


def test_repr():
    assert repr(Dopri5(1e-4, 1e-6)) == (
        "Dopri5(atol=0.0001, rtol=1e-06, max_steps=10000, estimator='shampine')"
    )


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"atol": 0.0}, ValueError, "atol must be a finite number > 0, got 0.0"),
        ({"rtol": -1e-3}, ValueError, "rtol must be a finite number > 0"),
        ({"atol": "1e-5"}, TypeError, "atol must be a number, got '1e-5'"),
        ({"max_steps": 0}, ValueError, "max_steps must be >= 1, got 0"),
        ({"max_steps": 10.0}, TypeError, "max_steps must be an int"),
        ({"first_step": 0.0}, ValueError, "first_step must be a finite number > 0"),
        ({"safety": 0.0}, ValueError, "safety must be a finite number > 0"),
        ({"dfactor": 1.5}, ValueError, "need dfactor < 1 < ifactor, got dfactor=1.5, ifactor=10.0"),
        ({"ifactor": 0.5}, ValueError, "need dfactor < 1 < ifactor, got dfactor=0.2, ifactor=0.5"),
    ],
)
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Dopri5(**kwargs)


def test_against_torchdiffeq():
    # Same method, same atol = rtol, on the Gaussian oracle over a sweep of data scales and
    # tolerances. Ours lands exactly on t = 1 (torchdiffeq steps past it and interpolates).
    # Measured (torchdiffeq 0.2.5): total NFE ours 1118 vs torchdiffeq 1130; mean
    # log10(max error / tol) ours 0.56 vs torchdiffeq 0.99 (ours is also more accurate).
    torchdiffeq = pytest.importorskip("torchdiffeq")
    total = {"ours": 0, "torchdiffeq": 0}
    log_ratio = {"ours": 0.0, "torchdiffeq": 0.0}
    rows = []
    for s in (0.2, 0.5, 1.0, 2.0, 3.0):
        oracle = _oracle(s)
        x0 = oracle.sample_x0(64, torch.Generator().manual_seed(0))
        exact = oracle.flow(x0, 1.0)
        for tol in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7):
            sol = solve(oracle, x0, make_grid("uniform", 1, dtype=F64), Dopri5(atol=tol, rtol=tol))
            counted = Counting(oracle)
            y1 = torchdiffeq.odeint(
                lambda t, y, f=counted: f(y, t.expand(y.shape[0])),
                x0,
                torch.tensor([0.0, 1.0], dtype=F64),
                method="dopri5",
                atol=tol,
                rtol=tol,
            )[-1]
            err = {"ours": (sol.x - exact).abs().max(), "torchdiffeq": (y1 - exact).abs().max()}
            nfe = {"ours": sol.nfe, "torchdiffeq": len(counted.times)}
            for k in total:
                total[k] += nfe[k]
                log_ratio[k] += math.log10(err[k].item() / tol) / 25
            rows.append(
                (
                    s,
                    tol,
                    nfe["ours"],
                    nfe["torchdiffeq"],
                    err["ours"].item(),
                    err["torchdiffeq"].item(),
                )
            )
    print("\n(s, tol, nfe ours, nfe torchdiffeq, err ours, err torchdiffeq)")
    for row in rows:
        print(row)
    print("total NFE", total, "mean log10(err/tol)", log_ratio)
    assert total["ours"] <= total["torchdiffeq"], total
    assert log_ratio["ours"] <= log_ratio["torchdiffeq"], log_ratio


@pytest.mark.parametrize("estimator", ["shampine", "dormand_prince"])
def test_both_error_estimators_meet_the_tolerance(estimator):
    from flowmatch.solvers import Dopri5, solve
    from flowmatch.times import make_grid
    from oracles import linear_system

    field, y0, exact = linear_system(dim=6, seed=3)
    tol = 1e-7
    sol = solve(
        field, y0, make_grid("uniform", 1, dtype=y0.dtype), Dopri5(tol, tol, estimator=estimator)
    )
    # Global error of a tolerance-controlled solve stays within a small multiple of the
    # tolerance scale atol + rtol * |y| (here |y| = O(1): bound 100 * 2 * tol).
    assert float((sol.x - exact).abs().max()) < 100 * 2 * tol
    assert sol.nfe > 0


def test_unknown_estimator_is_rejected():
    from flowmatch.solvers import Dopri5

    with pytest.raises(ValueError, match="unknown estimator 'rk45'"):
        Dopri5(estimator="rk45")  # type: ignore[arg-type]


def _nan_at(times):
    """A field (ignoring x, so a NaN cannot travel through the state) NaN at given times."""

    def field(x, t, cond=None):
        hit = any(abs(t[0].item() - s) < 1e-12 for s in times)
        return torch.full_like(x, math.nan) if hit else torch.ones_like(x)

    return field


@pytest.mark.parametrize("estimator", ["shampine", "dormand_prince"])
def test_nan_in_a_stage_with_zero_weight_is_not_a_success(estimator):
    # Stage 2 (c2 = 1/5) has weight 0 in the solution (b2 = 0) and in both error estimates
    # (b2 - b2_hat = 0): without a check its NaN would vanish and the solve "succeed".
    solver = Dopri5(first_step=0.1, estimator=estimator)
    with pytest.raises(FloatingPointError, match=r"field returned NaN/inf in the step from t=0"):
        solve(
            _nan_at([0.02]),
            torch.zeros(2, 2, dtype=F64),
            make_grid("uniform", 1, dtype=F64),
            solver,
        )


def test_nan_in_the_first_step_probe_is_not_a_success():
    # Hairer's starting-step algorithm evaluates the field once at t0 + h0 (h0 = 1e-6 here).
    with pytest.raises(FloatingPointError, match=r"NaN/inf while choosing the first step"):
        solve(
            _nan_at([1e-6]),
            torch.zeros(2, 2, dtype=F64),
            make_grid("uniform", 1, dtype=F64),
            Dopri5(),
        )


def test_nan_in_a_rejected_step_is_not_a_success():
    # A field that is NaN only where a too-large first step probes it (then rejected).
    def field(x, t, cond=None):
        return torch.full_like(x, math.nan) if t[0].item() > 0.9 else -50 * x

    with pytest.raises(FloatingPointError, match="field returned NaN/inf in the step"):
        solve(
            field,
            torch.ones(2, 2, dtype=F64),
            make_grid("uniform", 1, dtype=F64),
            Dopri5(first_step=1.0),
        )
