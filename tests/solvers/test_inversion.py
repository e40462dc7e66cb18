"""Inversion (data -> source): round trips, the exact Euler inverse and the O(h) naive error."""

from __future__ import annotations

import pytest
import torch

from flowmatch.solvers import RK4, Dopri5, Euler, integrate
from flowmatch.solvers.inversion import invert, invert_euler_fixed_point
from flowmatch.times import make_grid
from oracles import GaussianOracle

F64 = torch.float64
D = 4


def make_field():
    """A generic smooth non-autonomous field on (B, 4) and a bound on its Lipschitz constant.

    v(x, t) = (1 + t) tanh(A x + b) + sin(3t) flip(x):  Lip <= 2 ||A||_2 + 1 (tanh' <= 1 and
    flipping the features is an isometry).
    """
    g = torch.Generator().manual_seed(0)
    a = 0.5 * torch.randn(D, D, generator=g, dtype=F64)
    b = torch.randn(D, generator=g, dtype=F64)

    def field(x, t, cond=None):
        return torch.tanh(x @ a.T + b) * (1 + t[:, None]) + torch.sin(3 * t)[:, None] * x.flip(1)

    return field, 2 * torch.linalg.matrix_norm(a, ord=2).item() + 1


def data(batch: int = D, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, D, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_fixed_point_inverts_forward_euler_exactly():
    field, lip = make_field()
    grid = make_grid("uniform", 32, dtype=F64)
    x1 = data()  # B == D
    x0 = invert_euler_fixed_point(field, x1, grid, iterations=20)
    assert x0.shape == x1.shape
    # Each step's fixed-point error contracts by h Lip <= (1/32) * lip ~ 0.13 per iteration, so
    # after 20 iterations it is ~1e-18; what is left is float64 round-off of 32 Euler steps
    # (~32 * 1e-16 * |x| ~ 1e-14). 1e-10 has a wide margin yet is far below Euler's O(h) error.
    assert 32**-1 * lip < 0.2
    torch.testing.assert_close(integrate(field, x0, grid, Euler()), x1, rtol=0, atol=1e-10)


def test_fixed_point_residual_contracts_geometrically():
    field, lip = make_field()
    grid = make_grid("uniform", 32, dtype=F64)
    x1 = data()
    errors = []
    for iterations in range(1, 7):
        x0 = invert_euler_fixed_point(field, x1, grid, iterations=iterations)
        errors.append((integrate(field, x0, grid, Euler()) - x1).abs().max().item())
    # Each extra iteration multiplies the residual by at most the contraction factor h Lip
    # (to first order; 1.5x slack for the propagation through later Euler steps).
    bound = 1.5 * lip / 32
    for prev, nxt in zip(errors[:-1], errors[1:], strict=True):
        assert nxt < bound * prev, errors


def test_naive_backward_euler_error_is_first_order():
    field, _ = make_field()
    x1 = data()
    num_steps = [8, 16, 32, 64, 128]
    errors = []
    for n in num_steps:
        grid = make_grid("uniform", n, dtype=F64)
        x0 = invert(field, x1, grid, Euler())
        errors.append((integrate(field, x0, grid, Euler()) - x1).abs().max().item())
    # Reversed Euler evaluates v at x_{k+1}, forward Euler at x_k: an O(h^2) mismatch per step,
    # O(h) after 1/h steps. Least-squares slope of log error vs log h (measured 0.99).
    h = torch.tensor([1.0 / n for n in num_steps], dtype=F64)
    design = torch.stack([h.log(), torch.ones_like(h)], 1)
    slope = torch.linalg.lstsq(design, torch.tensor(errors, dtype=F64).log()[:, None]).solution[0]
    assert abs(slope.item() - 1.0) < 0.1, errors


def test_dopri5_round_trip_within_tolerance():
    field, _ = make_field()
    grid = make_grid("uniform", 1, dtype=F64)
    x1 = data(batch=6)
    solver = Dopri5(atol=1e-10, rtol=1e-10)
    x0 = invert(field, x1, grid, solver)
    assert x0.shape == (6, D)
    # Each adaptive solve has a global error of a modest multiple of its tolerance (the field
    # is mildly expanding, Lip <= ~4); measured 1.7e-10 for the round trip, 1e-8 = 100x tol.
    torch.testing.assert_close(integrate(field, x0, grid, solver), x1, rtol=0, atol=1e-8)


def test_invert_recovers_the_exact_source_point():
    # Gaussian oracle: the exact flow is x1 = mu + s x0, so inversion must return (x1 - mu) / s.
    # Tolerance as in the round trip (measured 4e-11).
    mu = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=F64)
    oracle = GaussianOracle(mu, 0.5)
    x1 = data()
    x0 = invert(oracle, x1, make_grid("uniform", 1, dtype=F64), Dopri5(atol=1e-10, rtol=1e-10))
    torch.testing.assert_close(x0, (x1 - mu) / 0.5, rtol=0, atol=1e-8)


def test_invert_on_partial_grid_and_multi_dim_features():
    # Inverting on [0.25, 0.75] with a field on (B, 2, 2) returns the state at t = 0.25.
    field, _ = make_field()

    def field_2d(x, t, cond=None):
        return field(x.reshape(x.shape[0], D), t).reshape(x.shape)

    grid = torch.linspace(0.25, 0.75, 9, dtype=F64)
    x1 = data(batch=3).reshape(3, 2, 2)
    x0 = invert(field_2d, x1, grid, RK4())
    x0_fp = invert_euler_fixed_point(field_2d, x1, grid, iterations=25)
    assert x0.shape == x0_fp.shape == (3, 2, 2)
    torch.testing.assert_close(integrate(field_2d, x0_fp, grid, Euler()), x1, rtol=0, atol=1e-10)
    # RK4 round trip over a half-unit interval with h = 1/16: O(h^4) ~ 1e-5 scale bound.
    assert (integrate(field_2d, x0, grid, RK4()) - x1).abs().max().item() < 1e-5


def test_conditioning_is_forwarded():
    seen = []

    def field(x, t, cond=None):
        seen.append(cond)
        return torch.zeros_like(x)

    labels = torch.arange(2)
    grid = make_grid("uniform", 3, dtype=F64)
    invert(field, torch.zeros(2, 2, dtype=F64), grid, Euler(), cond=labels)
    invert_euler_fixed_point(field, torch.zeros(2, 2, dtype=F64), grid, cond=labels, iterations=2)
    assert len(seen) == 3 + 3 * 2 and all(c is labels for c in seen)


def test_errors():
    field, _ = make_field()
    x1 = data()
    grid = make_grid("uniform", 4, dtype=F64)
    with pytest.raises(ValueError, match=r"grid must be increasing .* first=1.0, last=0.0"):
        invert(field, x1, grid.flip(0), Euler())
    with pytest.raises(ValueError, match=r"grid must be increasing .* first=1.0, last=0.0"):
        invert_euler_fixed_point(field, x1, grid.flip(0))
    with pytest.raises(ValueError, match="grid must be strictly monotone"):
        invert(field, x1, torch.tensor([0.0, 0.5, 0.5, 1.0], dtype=F64), Euler())
    with pytest.raises(TypeError, match="grid must be a 1-D torch.Tensor, got list"):
        invert(field, x1, [0.0, 1.0], Euler())
    with pytest.raises(ValueError, match="iterations must be >= 1, got 0"):
        invert_euler_fixed_point(field, x1, grid, iterations=0)
    with pytest.raises(TypeError, match="iterations must be an int"):
        invert_euler_fixed_point(field, x1, grid, iterations=2.0)
    with pytest.raises(TypeError, match="solver must be an ODESolver or AdaptiveSolver, got str"):
        invert(field, x1, grid, "euler")
    with pytest.raises(TypeError, match="x1 must be a floating-point tensor"):
        invert(field, x1.long(), grid, Euler())
    with pytest.raises(TypeError, match="x1 must be a torch.Tensor"):
        invert_euler_fixed_point(field, x1.tolist(), grid)


def test_divergent_fixed_point_raises():
    # h Lip = 1 * 50 >> 1: the iteration blows up, and the result check reports it.
    def stiff(x, t, cond=None):
        return 50.0 * x**3

    with pytest.raises(FloatingPointError, match=r"inverted x0 has .* h \* Lip\(v\) < 1"):
        invert_euler_fixed_point(
            stiff,
            torch.full((2, 2), 3.0, dtype=F64),
            make_grid("uniform", 1, dtype=F64),
            iterations=10,
        )
