"""Schedules: endpoints, derivatives (against torch.func.jvp), monotonicity, errors."""

from __future__ import annotations

import pytest
import torch
from torch.func import jvp

from flowmatch.paths import (
    SCHEDULES,
    CosineSchedule,
    LinearSchedule,
    PolynomialSchedule,
    Schedule,
    VPSchedule,
)

# Every registered schedule at its defaults, plus non-default parameters.
CASES: list[Schedule] = [cls() for cls in SCHEDULES.values()] + [
    PolynomialSchedule(1.0),
    PolynomialSchedule(3.5),
    VPSchedule(beta_min=0.5, beta_max=5.0),
]
IDS = [repr(s) for s in CASES]
EXACT = [s for s in CASES if s.exact_endpoints]


def test_registry_names_match_classes():
    assert set(SCHEDULES) == {"linear", "cosine", "polynomial", "vp"}
    for name, cls in SCHEDULES.items():
        assert cls.name == name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("schedule", EXACT, ids=[repr(s) for s in EXACT])
def test_exact_endpoints_hold_bitwise(schedule, dtype):
    # Exact, not approximate: conversions divide by sigma_1 = 0 and alpha_0 = 0, so a
    # round-off residue (float32 cos(pi/2) = -4.4e-8) would flip a sign or skip the clamp.
    c = schedule(torch.tensor([0.0, 1.0], dtype=dtype))
    assert c.alpha.tolist() == [0.0, 1.0]
    assert c.sigma.tolist() == [1.0, 0.0]


@pytest.mark.parametrize("schedule", [s for s in CASES if not s.exact_endpoints])
def test_vp_has_documented_inexact_start(schedule):
    # VP by design never reaches pure noise: alpha_0 > 0, but it does end at the data.
    c = schedule(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert 0 < c.alpha[0] < 1
    assert c.alpha[1] == 1.0 and c.sigma[1] == 0.0


@pytest.mark.parametrize("schedule", [CosineSchedule(), VPSchedule(), VPSchedule(0.5, 5.0)])
def test_variance_preserving(schedule):
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    c = schedule(t)
    torch.testing.assert_close(c.alpha**2 + c.sigma**2, torch.ones_like(t), rtol=0, atol=1e-14)


def _times(schedule: Schedule) -> torch.Tensor:
    # VP's d_sigma is computed with sigma clamped at 1e-6 (documented), so its derivative is
    # checked off the last 1e-3; every other schedule is checked including both endpoints.
    hi = 0.999 if isinstance(schedule, VPSchedule) else 1.0
    return torch.linspace(0.0, hi, 201, dtype=torch.float64)


@pytest.mark.parametrize("schedule", CASES, ids=IDS)
def test_derivatives_equal_jvp(schedule):
    t = _times(schedule)
    c = schedule(t)
    ones = torch.ones_like(t)
    _, d_alpha = jvp(lambda u: schedule(u).alpha, (t,), (ones,))
    _, d_sigma = jvp(lambda u: schedule(u).sigma, (t,), (ones,))
    # float64 forward-mode AD of the same expression: agreement to round-off (1e-12 relative).
    torch.testing.assert_close(c.d_alpha, d_alpha, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c.d_sigma, d_sigma, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule", CASES, ids=IDS)
def test_derivatives_match_central_difference(schedule):
    # Independent of autograd: (f(t + h) - f(t - h)) / 2h has error O(h^2 f''') ~ 1e-12 plus
    # round-off ~ 1e-16 / h = 1e-10 at h = 1e-6; interior points only.
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    h = 1e-6
    hi, lo, c = schedule(t + h), schedule(t - h), schedule(t)
    torch.testing.assert_close(c.d_alpha, (hi.alpha - lo.alpha) / (2 * h), rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(c.d_sigma, (hi.sigma - lo.sigma) / (2 * h), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("schedule", CASES, ids=IDS)
def test_monotone_and_positive_determinant(schedule):
    # alpha increases, sigma decreases, so D_t = alpha' sigma - sigma' alpha > 0 on (0, 1):
    # the conversions of AffinePath rely on it.
    t = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    c = schedule(t)
    assert (c.alpha.diff() > 0).all() and (c.sigma.diff() < 0).all()
    assert (c.d_alpha * c.sigma - c.d_sigma * c.alpha > 0).all()


@pytest.mark.parametrize("shape", [(5,), (5, 1, 1), (3, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("schedule", CASES, ids=IDS)
def test_output_shape_and_dtype_follow_t(schedule, shape, dtype):
    t = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    c = schedule(t)
    for value in (c.alpha, c.sigma, c.d_alpha, c.d_sigma):
        assert value.shape == shape and value.dtype == dtype
        assert torch.isfinite(value).all()


def test_vp_velocity_stays_finite_at_data_end():
    # d sigma/dt -> -inf at t = 1 for VP; the documented clamp keeps it finite.
    c = VPSchedule()(torch.tensor([1.0], dtype=torch.float64))
    assert torch.isfinite(c.d_sigma).all() and c.d_sigma.item() < -1e3


def test_polynomial_one_is_linear():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    a, b = PolynomialSchedule(1.0)(t), LinearSchedule()(t)
    for name in ("alpha", "sigma", "d_alpha", "d_sigma"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)


def test_repr_names_parameters():
    assert repr(PolynomialSchedule(3.0)) == "PolynomialSchedule(exponent=3.0)"
    assert repr(VPSchedule(0.2, 10.0)) == "VPSchedule(beta_min=0.2, beta_max=10.0)"
    assert repr(LinearSchedule()) == "LinearSchedule()"


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: PolynomialSchedule(0.5), ValueError, r"exponent must be >= 1.*0\.5"),
        (lambda: PolynomialSchedule(0.0), ValueError, r"exponent must be a finite number > 0"),
        (lambda: PolynomialSchedule(float("inf")), ValueError, r"exponent must be a finite"),
        (lambda: PolynomialSchedule("2"), TypeError, r"exponent must be a number, got '2'"),
        (lambda: VPSchedule(beta_min=-1.0), ValueError, r"beta_min must be a finite number > 0"),
        (lambda: VPSchedule(beta_max=0.0), ValueError, r"beta_max must be a finite number > 0"),
        (lambda: VPSchedule(5.0, 1.0), ValueError, r"beta_max must be >= beta_min, got 1.0 < 5.0"),
    ],
)
def test_invalid_parameters_raise(make, exc, match):
    with pytest.raises(exc, match=match):
        make()
