"""Straightness: zero for straight flows, closed forms for linear fields, quadrature order."""

from __future__ import annotations

import math

import pytest
import torch

from flowmatch.metrics import straightness

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def skew(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=gen(seed), dtype=F64)
    return a - a.T


def rotation_straightness(a: torch.Tensor, x0: torch.Tensor) -> float:
    """Closed form for dx/dt = A x with A skew-symmetric.

    X_t = e^{tA} x0 and e^{tA} is orthogonal, so |v(X_t)|^2 = |A x0|^2 = -x0^T A^2 x0 for all
    t. Along an exact trajectory int_0^1 v dt = X_1 - X_0, hence
    S = E[int_0^1 |v|^2 dt - |X_1 - X_0|^2] = E x0^T M x0 with
    M = -A^2 - (e^A - I)^T (e^A - I) = -A^2 - 2 I + e^A + e^{-A}   (e^{A^T} = e^{-A}).
    """
    e = torch.linalg.matrix_exp(a)
    m = -a @ a - 2 * torch.eye(a.shape[0], dtype=F64) + e + e.T
    return float(torch.einsum("bi,ij,bj->b", x0, m, x0).mean())


def test_constant_field_is_perfectly_straight() -> None:
    x0 = torch.randn(4, 4, generator=gen(0), dtype=F64)  # B == D
    c = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)
    for solver in ("euler", "rk4"):
        # Every step adds h c exactly up to float64 round-off (~1e-16 |x|), squared ~1e-32.
        s = straightness(lambda x, t, cond=None: c.expand_as(x), x0, num_steps=20, solver=solver)
        assert 0.0 <= s < 1e-24


def test_rotation_matches_the_closed_form_with_second_order_quadrature() -> None:
    a, x0 = skew(4, seed=1), torch.randn(4, 4, generator=gen(2), dtype=F64)  # B == D
    field = lambda x, t, cond=None: x @ a.T  # noqa: E731
    exact = rotation_straightness(a, x0)
    assert exact > 0.5  # a genuinely curved flow, far from 0
    errors = [abs(straightness(field, x0, num_steps=n) - exact) for n in (25, 50, 100)]
    # RK4 trajectories are accurate to O(h^4); the trapezoid rule has error O(h^2): halving h
    # divides the error by ~4 (3.5-4.5 allows the O(h^4) terms at these step counts).
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert 3.5 < coarse / fine < 4.5
    assert errors[-1] < 1e-3 * exact


def test_euler_trajectories_converge_at_first_order() -> None:
    a, x0 = skew(3, seed=3), torch.randn(6, 3, generator=gen(4), dtype=F64)
    field = lambda x, t, cond=None: x @ a.T  # noqa: E731
    exact = rotation_straightness(a, x0)
    errors = [
        abs(straightness(field, x0, num_steps=n, solver="euler") - exact) for n in (100, 200, 400)
    ]
    # Euler's global error O(h) dominates the O(h^2) quadrature: ratio ~2 per halving.
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert 1.7 < coarse / fine < 2.3


def test_cond_is_passed_to_the_field() -> None:
    # dx/dt = c x with a per-sample rate c = cond: X_t = e^{ct} x0, v = c e^{ct} x0. Straight
    # in space but not at constant speed, so S = E[(c (e^{2c} - 1) / 2 - (e^c - 1)^2) |x0|^2]
    # (int_0^1 c^2 e^{2ct} dt = c (e^{2c} - 1) / 2 minus |X_1 - X_0|^2 / |x0|^2 = (e^c - 1)^2).
    x0 = torch.randn(3, 2, 2, generator=gen(5), dtype=F64)  # image-like (B, *D)
    rate = torch.tensor([0.5, -1.0, 2.0], dtype=F64)

    def field(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        assert cond is not None and t.shape == (x.shape[0],)
        return cond.reshape(-1, 1, 1) * x

    per_sample = [
        (c * (math.exp(2 * c) - 1) / 2 - (math.exp(c) - 1) ** 2) * float(x.square().sum())
        for c, x in zip(rate.tolist(), x0, strict=True)
    ]
    expected = sum(per_sample) / 3
    # Trapezoid error O(h^2) with h = 1/400 and |f''| ~ c^4 e^{2c} |x0|^2: below 1e-4 relative.
    assert straightness(field, x0, num_steps=400, cond=rate) == pytest.approx(expected, rel=1e-4)


def test_float32_input_gives_a_float_result() -> None:
    x0 = torch.randn(5, 2, generator=gen(6))
    a = skew(2, seed=7).float()
    s = straightness(lambda x, t, cond=None: x @ a.T, x0, num_steps=50)
    assert isinstance(s, float)
    assert s == pytest.approx(rotation_straightness(a.double(), x0.double()), rel=1e-3)


def test_straightness_errors() -> None:
    x0 = torch.randn(3, 3, generator=gen(0), dtype=F64)
    ok = lambda x, t, cond=None: x  # noqa: E731
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        straightness(ok, x0, num_steps=0)
    with pytest.raises(ValueError, match="unknown solver 'dopri5'"):
        straightness(ok, x0, solver="dopri5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor"):
        straightness(ok, [[0.0]])  # type: ignore[arg-type]
    # (B,) output against (B, D) with B == D would broadcast silently inside a solver.
    with pytest.raises(ValueError, match=r"field must return shape \(3, 3\), got \(3,\)"):
        straightness(lambda x, t, cond=None: t, x0)
