"""AffinePath: samples, derivatives, Gaussian marginals, conversions and the endpoint rule.

Also checks the Gaussian oracle of tests/oracles.py against independent derivations
(autograd, finite differences), since other tests rely on it.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.func import jvp

from flowmatch.interfaces import PREDICTIONS
from flowmatch.paths import (
    SCHEDULES,
    AffinePath,
    LinearSchedule,
    PolynomialSchedule,
    Schedule,
    VPSchedule,
)
from oracles import GaussianOracle

SCHEDULE_CASES: list[Schedule] = [cls() for cls in SCHEDULES.values()] + [PolynomialSchedule(3.5)]
IDS = [repr(s) for s in SCHEDULE_CASES]
F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _interior_times(schedule: Schedule, n: int) -> torch.Tensor:
    """``n`` times in [0.05, 0.95] where alpha_t, sigma_t >= eps (no clamp applies there).

    PolynomialSchedule(3.5) has alpha_t < 1e-3 up to t = 0.139, so its times start later.
    """
    t = torch.linspace(0.05, 0.95, 181, dtype=F64)
    c, eps = schedule(t), AffinePath(schedule).eps
    t = t[(c.alpha >= eps) & (c.sigma >= eps)]
    return t[torch.linspace(0, len(t) - 1, n).round().long()]


def _oracle(schedule: Schedule, s: float = 0.7) -> GaussianOracle:
    return GaussianOracle(torch.tensor([1.5, -0.5, 2.0], dtype=F64), s, schedule)


# --------------------------------------------------------------------------- sample
@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (2, 3, 4, 4)])
def test_sample_shapes(shape):
    g = _gen()
    x0, x1 = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    t = torch.rand(shape[0], generator=g)
    s = AffinePath().sample(x0, x1, t)
    assert s.xt.shape == shape and s.v_target.shape == shape
    assert s.t is t and s.x0 is x0 and s.x1 is x1


@pytest.mark.parametrize("schedule", SCHEDULE_CASES, ids=IDS)
def test_v_target_is_time_derivative_of_xt(schedule):
    # B == D = 4 with a different t per row: a t broadcast along the wrong axis changes the
    # result. VP is checked off t = 1 where d sigma/dt is clamped (documented).
    g = _gen(1)
    x0, x1 = torch.randn(4, 4, generator=g, dtype=F64), torch.randn(4, 4, generator=g, dtype=F64)
    t = torch.tensor([0.0, 0.3, 0.71, 0.99 if isinstance(schedule, VPSchedule) else 1.0], dtype=F64)
    path = AffinePath(schedule)
    xt, dxt = jvp(lambda u: path.sample(x0, x1, u).xt, (t,), (torch.ones_like(t),))
    s = path.sample(x0, x1, t)
    torch.testing.assert_close(s.xt, xt, rtol=0, atol=0)
    torch.testing.assert_close(s.v_target, dxt, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule", SCHEDULE_CASES, ids=IDS)
@pytest.mark.parametrize("t_value", [0.1, 0.5, 0.9])
def test_marginals_match_gaussian_oracle(schedule, t_value):
    # x_t ~ N(alpha_t mu, v_t I). Tolerance: 5 standard errors of the empirical mean
    # (sqrt(v_t / n)) and variance (v_t sqrt(2 / (n - 1))), per coordinate (DESIGN 1.8(d)).
    oracle, n = _oracle(schedule), 50_000
    g = _gen(2)
    x0, x1 = oracle.sample_x0(n, g), oracle.sample_x1(n, g)
    xt = AffinePath(schedule).sample(x0, x1, torch.full((n,), t_value, dtype=F64)).xt
    ref = x0[:1]
    mean, var = oracle.mean(t_value, ref)[0], oracle.variance(t_value, ref)[0, 0]
    z_mean = (xt.mean(0) - mean) / (var / n).sqrt()
    z_var = (xt.var(0) - var) / (var * (2 / (n - 1)) ** 0.5)
    assert z_mean.abs().max() < 5, z_mean
    assert z_var.abs().max() < 5, z_var


# --------------------------------------------------------------------------- conversions
PAIRS = list(itertools.permutations(PREDICTIONS, 2))


@pytest.mark.parametrize("schedule", SCHEDULE_CASES, ids=IDS)
@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_convert_round_trips(schedule, src, dst):
    # float64, t in [0.05, 0.95] where no denominator is clamped; the worst amplification is
    # 1/alpha_t ~ 1e3, so round-off stays below 1e-12 relative.
    g = _gen(3)
    b = 6
    xt = torch.randn(b, 6, generator=g, dtype=F64)
    value = torch.randn(b, 6, generator=g, dtype=F64)
    t = _interior_times(schedule, b)
    path = AffinePath(schedule)
    out = path.convert(value, src=src, dst=dst, xt=xt, t=t)
    back = path.convert(out, src=dst, dst=src, xt=xt, t=t)
    assert out.shape == value.shape
    torch.testing.assert_close(back, value, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("schedule", SCHEDULE_CASES, ids=IDS)
@pytest.mark.parametrize("dst", PREDICTIONS)
def test_convert_matches_gaussian_posterior(schedule, dst):
    # Independent check of the formulas: for the Gaussian oracle, converting the exact
    # velocity must give the exact posterior means E[x1|x], E[x0|x] and the exact score,
    # which the oracle computes by Gaussian conditioning, not through the path.
    oracle = _oracle(schedule)
    g = _gen(4)
    t = _interior_times(schedule, 7)
    xt = oracle.mean(t, torch.zeros(7, 3, dtype=F64)) + torch.randn(7, 3, generator=g, dtype=F64)
    expected = {
        "velocity": oracle.velocity(xt, t),
        "x1": oracle.expected_x1(xt, t),
        "x0": oracle.expected_x0(xt, t),
        "score": oracle.score(xt, t),
    }
    out = AffinePath(schedule).convert(expected["velocity"], src="velocity", dst=dst, xt=xt, t=t)
    torch.testing.assert_close(out, expected[dst], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("schedule", SCHEDULE_CASES, ids=IDS)
@pytest.mark.parametrize("src", ["x1", "x0", "velocity"])
def test_true_endpoint_prediction_gives_v_target(schedule, src):
    # Feeding the true x1 (or x0, or v_target itself) reproduces the conditional velocity to
    # float64 round-off: the conversion is consistent with path.sample.
    g = _gen(5)
    x0, x1 = torch.randn(5, 5, generator=g, dtype=F64), torch.randn(5, 5, generator=g, dtype=F64)
    t = _interior_times(schedule, 5)
    path = AffinePath(schedule)
    s = path.sample(x0, x1, t)
    value = {"x1": x1, "x0": x0, "velocity": s.v_target}[src]
    for dst in PREDICTIONS:
        out = path.convert(value, src=src, dst=dst, xt=s.xt, t=t)
        want = s.v_target if dst == "velocity" else path.target(s, dst)
        torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)


def test_convert_uses_each_rows_time():
    # B == D: converting a batch equals converting each row alone with its own time.
    g = _gen(6)
    path = AffinePath(SCHEDULES["cosine"]())
    xt, value = torch.randn(4, 4, generator=g, dtype=F64), torch.randn(4, 4, generator=g, dtype=F64)
    t = torch.tensor([0.1, 0.4, 0.6, 0.9], dtype=F64)
    whole = path.convert(value, src="x1", dst="velocity", xt=xt, t=t)
    rows = [
        path.convert(value[i : i + 1], src="x1", dst="velocity", xt=xt[i : i + 1], t=t[i : i + 1])
        for i in range(4)
    ]
    torch.testing.assert_close(whole, torch.cat(rows), rtol=0, atol=0)


def test_same_type_conversion_is_identity():
    x = torch.randn(3, 2)
    assert AffinePath().convert(x, src="x1", dst="x1", xt=x, t=torch.rand(3)) is x


class _CountingSchedule(PolynomialSchedule):
    """Counts evaluations (convert runs once per NFE when sampling a non-velocity model)."""

    calls = 0

    def __call__(self, t):
        self.calls += 1
        return super().__call__(t)


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_convert_is_the_endpoint_composition_with_one_schedule_call(src, dst):
    # convert == from_endpoints(to_endpoints(.)) exactly, and evaluates the schedule once.
    schedule = _CountingSchedule(2.0)
    path, g = AffinePath(schedule), _gen(9)
    xt, value = torch.randn(3, 3, generator=g, dtype=F64), torch.randn(3, 3, generator=g, dtype=F64)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    x0, x1 = path.to_endpoints(value, src=src, xt=xt, t=t)
    expected = path.from_endpoints(x0, x1, dst=dst, xt=xt, t=t)
    schedule.calls = 0
    out = path.convert(value, src=src, dst=dst, xt=xt, t=t)
    assert schedule.calls == 1
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


# --------------------------------------------------------------------------- endpoint rule
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("schedule", SCHEDULE_CASES, ids=IDS)
@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_conversions_are_finite_at_both_endpoints(schedule, src, dst, dtype):
    # The documented rule: denominators (alpha_t, sigma_t, D_t) are clamped to eps, so no
    # conversion returns inf/NaN at t = 0 or t = 1 (e.g. D_0 = 0 for PolynomialSchedule).
    g = _gen(7)
    xt, value = (
        torch.randn(2, 3, generator=g, dtype=dtype),
        torch.randn(2, 3, generator=g, dtype=dtype),
    )
    out = AffinePath(schedule).convert(
        value, src=src, dst=dst, xt=xt, t=torch.tensor([0.0, 1.0], dtype=dtype)
    )
    assert torch.isfinite(out).all(), out


def test_endpoint_rule_clamps_sigma_to_eps():
    # Pins the rule at t = 1 for the linear path (sigma_1 = 0, alpha = d_alpha = 1,
    # d_sigma = -1): x0_hat = (x - x1_hat) / eps, so v = x1_hat - (x - x1_hat) / eps.
    eps = 0.01
    path = AffinePath(LinearSchedule(), eps=eps)
    xt = torch.tensor([[1.0, 2.0]], dtype=F64)
    x1_hat = torch.tensor([[1.5, 2.0]], dtype=F64)
    v = path.convert(x1_hat, src="x1", dst="velocity", xt=xt, t=torch.ones(1, dtype=F64))
    torch.testing.assert_close(v, torch.tensor([[1.5 + 50.0, 2.0]], dtype=F64))
    # Off the clamp (sigma_t >= eps) the exact formula applies: v = (x1_hat - x) / (1 - t).
    t = torch.full((1,), 0.5, dtype=F64)
    v = path.convert(x1_hat, src="x1", dst="velocity", xt=xt, t=t)
    torch.testing.assert_close(v, (x1_hat - xt) / 0.5)


def test_endpoint_rule_clamps_determinant():
    # PolynomialSchedule(2) has D_0 = 0: the velocity at t = 0 is 0 whatever x1 is, so x1
    # is not identifiable there; the clamp returns a finite value instead of 0/0.
    path = AffinePath(PolynomialSchedule(2.0))
    xt = torch.randn(3, 2, dtype=F64, generator=_gen(8))
    out = path.convert(
        torch.zeros_like(xt), src="velocity", dst="x1", xt=xt, t=torch.zeros(3, dtype=F64)
    )
    assert torch.isfinite(out).all()


# --------------------------------------------------------------------------- errors
def test_constructor_errors():
    with pytest.raises(TypeError, match="schedule must be a Schedule, got str"):
        AffinePath("linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps must be a finite number > 0, got 0"):
        AffinePath(eps=0)
    with pytest.raises(TypeError, match="eps must be a number"):
        AffinePath(eps="small")  # type: ignore[arg-type]


def test_sample_errors():
    path, x = AffinePath(), torch.zeros(4, 2)
    with pytest.raises(
        ValueError, match=r"x0 and x1 must have the same shape, got \(4, 2\) and \(3, 2\)"
    ):
        path.sample(x, torch.zeros(3, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(4,\), got \(1,\)"):
        path.sample(x, x, torch.zeros(1))
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(4,\), got \(4, 1\)"):
        path.sample(x, x, torch.zeros(4, 1))
    with pytest.raises(TypeError, match="t must be a torch.Tensor, got float"):
        path.sample(x, x, 0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor, got list"):
        path.sample([0.0], x, torch.zeros(4))  # type: ignore[arg-type]


def test_convert_errors():
    path, x, t = AffinePath(), torch.zeros(4, 2), torch.zeros(4)
    with pytest.raises(ValueError, match=r"unknown src prediction 'eps'; choose one of"):
        path.convert(x, src="eps", dst="x1", xt=x, t=t)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown dst prediction 'v'"):
        path.convert(x, src="x1", dst="v", xt=x, t=t)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown src prediction 'v'"):
        path.convert(x, src="v", dst="v", xt=x, t=t)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"value must have the shape of xt \(4, 2\), got \(4, 1\)"):
        path.convert(torch.zeros(4, 1), src="x1", dst="velocity", xt=x, t=t)
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(4,\), got \(\)"):
        path.convert(x, src="x1", dst="velocity", xt=x, t=torch.tensor(0.5))
    with pytest.raises(ValueError, match=r"x1 must have the shape of xt"):
        path.from_endpoints(x, torch.zeros(2, 2), dst="velocity", xt=x, t=t)
    with pytest.raises(ValueError, match="unknown prediction 'eps'"):
        path.target(path.sample(x, x, t), "eps")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the oracle itself
@pytest.mark.parametrize("schedule", SCHEDULE_CASES, ids=IDS)
def test_oracle_velocity_is_derivative_of_its_flow(schedule):
    # d/dt flow(x0, t) = u_t(flow(x0, t)): the closed-form flow solves the closed-form ODE.
    oracle = _oracle(schedule, s=1.7)
    x0 = oracle.sample_x0(4, _gen(9))
    t = torch.tensor([0.1, 0.4, 0.6, 0.9], dtype=F64)
    xt, dxt = jvp(lambda u: oracle.flow(x0, u), (t,), (torch.ones_like(t),))
    torch.testing.assert_close(dxt, oracle(xt, t), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("schedule", SCHEDULE_CASES, ids=IDS)
def test_oracle_score_is_gradient_of_log_prob(schedule):
    oracle = _oracle(schedule)
    x = torch.randn(4, 3, generator=_gen(10), dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.3, 0.8, 1.0], dtype=F64)
    (grad,) = torch.autograd.grad(oracle.log_prob(x, t).sum(), x)
    torch.testing.assert_close(oracle.score(x.detach(), t), grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule", SCHEDULE_CASES, ids=IDS)
def test_oracle_divergence_matches_autograd_and_fokker_planck(schedule):
    # div u from autograd (trace of the Jacobian), and the continuity equation
    # d/dt log p_t(x_t) = -div u_t(x_t) along the exact flow (central difference in t).
    oracle = _oracle(schedule)
    x = torch.randn(3, 3, generator=_gen(11), dtype=F64)
    t = torch.tensor([0.2, 0.5, 0.8], dtype=F64)
    jac = torch.func.vmap(torch.func.jacrev(lambda xi, ti: oracle(xi[None], ti[None])[0]))(x, t)
    torch.testing.assert_close(oracle.divergence(x, t), jac.diagonal(dim1=1, dim2=2).sum(1))
    h = 1e-5
    lp = [oracle.log_prob(oracle.flow_map(x, t, t + d), t + d) for d in (-h, h)]
    torch.testing.assert_close(
        (lp[1] - lp[0]) / (2 * h), -oracle.divergence(x, t), rtol=1e-6, atol=1e-6
    )


def test_oracle_linear_case_matches_design_formulas():
    # DESIGN 1.8(a): sigma_t = sqrt((1-t)^2 + t^2 s^2), flow x(t) = t mu + sigma_t x0,
    # int_0^1 div u = D log s.
    mu, s = torch.tensor([1.0, -2.0], dtype=F64), 0.5
    oracle = GaussianOracle(mu, s)
    x0 = torch.randn(5, 2, generator=_gen(12), dtype=F64)
    t = 0.3
    sigma_t = ((1 - t) ** 2 + t**2 * s**2) ** 0.5
    torch.testing.assert_close(oracle.flow(x0, t), t * mu + sigma_t * x0)
    torch.testing.assert_close(oracle.flow(x0, 1.0), mu + s * x0)
    assert oracle.integrated_divergence() == pytest.approx(2 * torch.log(torch.tensor(s)).item())
    d_sigma = (t * s**2 - (1 - t)) / sigma_t
    torch.testing.assert_close(
        oracle(x0, torch.full((5,), t, dtype=F64)), mu + d_sigma / sigma_t * (x0 - t * mu)
    )


@pytest.mark.parametrize("cls", SCHEDULES.values())
def test_default_schedules_need_no_clamp_inside(cls):
    # The round-trip tests above cover the whole [0.05, 0.95] for every default schedule.
    t = _interior_times(cls(), 181)
    assert t.min().item() == pytest.approx(0.05) and t.max().item() == pytest.approx(0.95)
    assert t.unique().numel() == 181
