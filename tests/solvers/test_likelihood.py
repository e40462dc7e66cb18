"""Likelihoods by the instantaneous change of variables, checked against closed forms.

Oracles (tests/oracles.py): the Gaussian oracle N(0, I) -> N(mu, s^2 I) (exact log p_1 and
score), and the linear field v = g(t) A y, whose flow x1 = expm(G A) x0 maps N(0, I) to a
Gaussian with log p_1(x1) = log N(expm(-G A) x1; 0, I) - G tr(A) (G = int_0^1 g). The linear
field has a non-diagonal Jacobian, so Hutchinson's estimate has non-zero variance on it,
with the closed form Var(z^T A z) = sum_{i<j} (A_ij + A_ji)^2 for Rademacher z.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from flowmatch.solvers import RK4, Dopri5, Euler
from flowmatch.solvers.likelihood import (
    LikelihoodResult,
    bits_per_dim,
    divergence,
    log_likelihood,
)
from flowmatch.sources import GaussianSource
from flowmatch.times import make_grid
from oracles import GaussianOracle, linear_system

F64 = torch.float64


def backward_grid(n: int) -> torch.Tensor:
    return make_grid("uniform", n, dtype=F64).flip(0)


def oracle(s: float, dim: int = 3) -> GaussianOracle:
    mu = torch.linspace(-1.0, 2.0, dim, dtype=F64)
    return GaussianOracle(mu, s)


def linear_log_prob(field, x1: torch.Tensor) -> torch.Tensor:
    """Exact log p_1 of the linear flow from N(0, I): change of variables through expm."""
    big_g = 1.5 if field.time_dependent else 1.0
    x0 = x1 @ torch.linalg.matrix_exp(-big_g * field.A).T
    return GaussianSource().log_prob(x0) - big_g * torch.trace(field.A)


def nonlinear_field(x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
    """A generic smooth field on (B, 2, 3) with a dense, non-symmetric Jacobian."""
    g = torch.Generator().manual_seed(3)
    w = 0.7 * torch.randn(6, 6, generator=g, dtype=x.dtype)
    flat = x.reshape(x.shape[0], 6)
    out = torch.tanh(flat @ w.T + t[:, None]) + 0.3 * flat.roll(1, dims=1) ** 2
    return out.reshape(x.shape)


# ----------------------------------------------------------------------------- divergence
def test_exact_divergence_is_the_jacobian_trace():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, 3, generator=g, dtype=F64)  # B == D = 6 features
    t = torch.rand(6, generator=g, dtype=F64)
    v, div = divergence(nonlinear_field, x, t)
    assert v.shape == x.shape and div.shape == (6,)
    assert torch.equal(v, nonlinear_field(x, t))
    # Independent reference: the full Jacobian of each sample, then its trace.
    for b in range(6):
        jac = torch.autograd.functional.jacobian(
            lambda xb, b=b: nonlinear_field(xb[None], t[b : b + 1])[0], x[b]
        ).reshape(6, 6)
        assert div[b].item() == pytest.approx(torch.trace(jac).item(), abs=1e-12)


def test_hutchinson_over_all_sign_vectors_is_exact():
    # Averaging z^T J z over all 2^D sign vectors uses E[z_i z_j] = delta_ij exactly, so the
    # "estimate" equals the trace up to float64 round-off (~1e-15 relative).
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 2, 3, generator=g, dtype=F64)
    t = torch.rand(4, generator=g, dtype=F64)
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=6)), dtype=F64)
    probes = signs.reshape(64, 1, 2, 3).expand(64, 4, 2, 3)
    v_h, div_h = divergence(nonlinear_field, x, t, method="hutchinson", probes=probes)
    v_e, div_e = divergence(nonlinear_field, x, t)
    assert div_h.shape == (4,)
    assert torch.equal(v_h, v_e)
    torch.testing.assert_close(div_h, div_e, rtol=0, atol=1e-12)


def test_divergence_graph_only_with_create_graph():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, 3, generator=g, dtype=F64, requires_grad=True)
    t = torch.rand(3, generator=g, dtype=F64)
    v, div = divergence(nonlinear_field, x, t)
    assert not v.requires_grad and not div.requires_grad
    _, div = divergence(nonlinear_field, x, t, create_graph=True)
    (grad,) = torch.autograd.grad(div.sum(), x)
    # Central finite difference of the divergence (float64, step 1e-6: error ~ 1e-12/1e-6).
    eps, e = 1e-6, torch.zeros_like(x)
    e[:, 1, 2] = eps
    xd = x.detach()
    fd = (divergence(nonlinear_field, xd + e, t)[1] - divergence(nonlinear_field, xd - e, t)[1]) / (
        2 * eps
    )
    torch.testing.assert_close(grad[:, 1, 2], fd, rtol=0, atol=1e-7)


def test_field_ignoring_x_has_zero_divergence():
    param = nn.Parameter(torch.ones(3, dtype=F64))  # v depends on a parameter, not on x
    x, t = torch.zeros(3, 3, dtype=F64), torch.zeros(3, dtype=F64)
    for field in (lambda x, t, c=None: torch.ones_like(x), lambda x, t, c=None: param.expand(3, 3)):
        assert torch.equal(divergence(field, x, t)[1], torch.zeros(3, dtype=F64))
        probes = torch.ones(2, 3, 3, dtype=F64)
        _, div = divergence(field, x, t, method="hutchinson", probes=probes)
        assert torch.equal(div, torch.zeros(3, dtype=F64))


# ----------------------------------------------------------------------------- log-likelihood
@pytest.mark.parametrize("s", [0.5, 2.0])
def test_dopri5_matches_gaussian_log_density(s):
    o = oracle(s)
    x1 = o.sample_x1(5, torch.Generator().manual_seed(0))
    res = log_likelihood(o, x1, solver=Dopri5(atol=1e-8, rtol=1e-8))
    assert isinstance(res, LikelihoodResult)
    assert res.log_prob.shape == (5,) and res.x0.shape == (5, 3) and res.nfe > 0
    # dopri5 keeps each of its ~20 local errors below atol + rtol |x| ~ 5e-8, so L(0) and x0
    # are off by <= ~1e-6; |grad log p0(x0)| = |x0| <= ~5, so the total error is <= ~1e-5 nats.
    # (Measured: ~7e-9.) A sign or factor error in the divergence term would give O(1) nats.
    torch.testing.assert_close(res.log_prob, o.log_prob_data(x1), rtol=0, atol=1e-5)
    torch.testing.assert_close(res.x0, (x1 - o.mu) / s, rtol=0, atol=1e-6)


@pytest.mark.parametrize("s", [0.5, 2.0])
def test_rk4_fixed_grid_matches_gaussian_log_density(s):
    o = oracle(s)
    x1 = o.sample_x1(4, torch.Generator().manual_seed(1))
    res = log_likelihood(o, x1, solver=RK4(), grid=backward_grid(40))
    assert res.nfe == 160  # 40 steps x 4 stages
    # RK4 global error O(h^4) = O(4e-7) at h = 1/40 times derivatives of sigma'/sigma that are
    # O(1) for s in [0.5, 2] (measured 7e-8 and 1.3e-8); 1e-5 leaves > 100x margin.
    torch.testing.assert_close(res.log_prob, o.log_prob_data(x1), rtol=0, atol=1e-5)


def test_identity_flow_returns_source_log_density():
    x1 = torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    res = log_likelihood(lambda x, t, c=None: torch.zeros_like(x), x1)
    assert torch.equal(res.x0, x1)
    torch.testing.assert_close(res.log_prob, GaussianSource().log_prob(x1), rtol=0, atol=1e-14)


@pytest.mark.parametrize("time_dependent", [False, True])
def test_exact_divergence_on_linear_flow(time_dependent):
    field, _, _ = linear_system(4, seed=5, time_dependent=time_dependent)
    x1 = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)  # B == D
    res = log_likelihood(field, x1, solver=Dopri5(atol=1e-9, rtol=1e-9))
    # Tolerance argument as for the Gaussian oracle (1e-9 solves, |x0| <= ~5).
    torch.testing.assert_close(res.log_prob, linear_log_prob(field, x1), rtol=0, atol=1e-6)


def test_multi_dim_features():
    # (B, *D) = (4, 2, 2): the augmented state flattens and restores the feature shape.
    o = oracle(0.7, dim=4)

    def field(x, t, cond=None):
        return o(x.reshape(x.shape[0], 4), t).reshape(x.shape)

    x1 = o.sample_x1(4, torch.Generator().manual_seed(2))
    res = log_likelihood(field, x1.reshape(4, 2, 2), solver=Dopri5(atol=1e-8, rtol=1e-8))
    assert res.log_prob.shape == (4,) and res.x0.shape == (4, 2, 2)
    torch.testing.assert_close(res.log_prob, o.log_prob_data(x1), rtol=0, atol=1e-5)
    gen = torch.Generator().manual_seed(0)
    res_h = log_likelihood(
        field,
        x1.reshape(4, 2, 2),
        solver=RK4(),
        grid=backward_grid(10),
        divergence="hutchinson",
        num_probes=3,
        generator=gen,
    )
    assert res_h.log_prob.shape == (4,) and res_h.x0.shape == (4, 2, 2)


def test_conditioning_is_forwarded():
    seen = []

    def field(x, t, cond=None):
        seen.append(cond)
        return torch.zeros_like(x)

    labels = torch.arange(3)
    log_likelihood(field, torch.zeros(3, 2, dtype=F64), solver=Euler(), cond=labels)
    assert len(seen) == 1 and seen[0] is labels


# ----------------------------------------------------------------------------- Hutchinson
def hutchinson_noise(num_probes: int, rows: int, seed: int) -> torch.Tensor:
    """Hutchinson minus exact log-likelihood on the linear flow, one estimate per row."""
    field, _, _ = linear_system(4, seed=5, time_dependent=True)
    x1 = torch.randn(rows, 4, generator=torch.Generator().manual_seed(seed), dtype=F64)
    grid = backward_grid(8)  # same grid for both: the solver error cancels in the difference
    exact = log_likelihood(field, x1, solver=RK4(), grid=grid)
    est = log_likelihood(
        field,
        x1,
        solver=RK4(),
        grid=grid,
        divergence="hutchinson",
        num_probes=num_probes,
        generator=torch.Generator().manual_seed(seed + 100),
    )
    assert est.log_prob.shape == (rows,)
    torch.testing.assert_close(est.x0, exact.x0, rtol=0, atol=0)  # probes do not move x
    return est.log_prob - exact.log_prob


def test_hutchinson_is_unbiased_with_analytic_variance():
    field, _, _ = linear_system(4, seed=5, time_dependent=True)
    a, big_g = field.A, 1.5  # dL/dt = -(1 + t) z^T A z  =>  noise = -G (z^T A z - tr A)
    var_one = big_g**2 * sum((a[i, j] + a[j, i]) ** 2 for i in range(4) for j in range(i + 1, 4))
    rows = 4000
    for p in (1, 4, 16):
        noise = hutchinson_noise(p, rows, seed=p)
        # Unbiased: the mean is within 4 standard errors of 0.
        se_mean = noise.std() / math.sqrt(rows)
        assert abs(noise.mean().item()) < 4 * se_mean.item(), (p, noise.mean(), se_mean)
        # Variance = Var(one probe) / P; SE of a sample variance = sqrt((m4 - var^2) / n).
        var_hat = noise.var()
        centred = noise - noise.mean()
        se_var = ((centred**4).mean() - var_hat**2).clamp_min(0).sqrt() / math.sqrt(rows)
        assert abs(var_hat.item() - var_one.item() / p) < 4 * se_var.item(), (p, var_hat)


def test_hutchinson_probes_fixed_and_reproducible():
    field, _, _ = linear_system(3, seed=1)
    x1 = torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=F64)

    def run(seed):
        return log_likelihood(
            field,
            x1,
            solver=RK4(),
            grid=backward_grid(4),
            divergence="hutchinson",
            generator=torch.Generator().manual_seed(seed),
        ).log_prob

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


# ----------------------------------------------------------------------------- gradients
def test_gradient_wrt_data_is_the_score():
    o = oracle(0.5)
    x1 = o.sample_x1(3, torch.Generator().manual_seed(3)).requires_grad_(True)
    res = log_likelihood(o, x1, solver=Dopri5(atol=1e-8, rtol=1e-8), enable_grad=True)
    assert res.log_prob.requires_grad
    (grad,) = torch.autograd.grad(res.log_prob.sum(), x1)
    # d log p_1 / d x1 = -(x1 - mu) / s^2. Backpropagating through the 1e-8 solve
    # differentiates the discrete scheme: the error is of the order of the solve's (measured
    # 1e-8); 1e-5 as in the value test.
    torch.testing.assert_close(grad, o.score(x1.detach(), 1.0), rtol=0, atol=1e-5)


def test_no_graph_without_enable_grad():
    o = oracle(0.5)
    x1 = o.sample_x1(3, torch.Generator().manual_seed(3)).requires_grad_(True)
    res = log_likelihood(o, x1, solver=RK4(), grid=backward_grid(4))
    assert not res.log_prob.requires_grad and not res.x0.requires_grad


class ScaledIdentity(nn.Module):
    """v(x, t) = a x: x0 = e^{-a} x1, div = a D, so d log p_1 / da = |x0|^2 - D."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.7, dtype=F64))

    def forward(self, x, t, cond=None):
        return self.a * x


@pytest.mark.parametrize("method", ["exact", "hutchinson"])
def test_gradient_wrt_parameters(method):
    model = ScaledIdentity()
    x1 = torch.randn(5, 5, generator=torch.Generator().manual_seed(4), dtype=F64)
    kwargs = {"generator": torch.Generator().manual_seed(0)} if method == "hutchinson" else {}
    res = log_likelihood(
        model,
        x1,
        solver=RK4(),
        grid=backward_grid(20),
        divergence=method,
        enable_grad=True,
        **kwargs,
    )
    res.log_prob.sum().backward()
    x0 = x1 * math.exp(-0.7)
    expected = (x0.pow(2).sum(1) - 5).sum()
    # RK4 on x' = a x with a h = 0.035: relative error of e^{-a} ~ (a h)^4 / 120 per unit time
    # ~ 1e-8 (Hutchinson is exact here: J = a I, z^T J z = a D for Rademacher z).
    assert model.a.grad.item() == pytest.approx(expected.item(), rel=1e-6)


# ----------------------------------------------------------------------------- bits/dim
def test_bits_per_dim_of_uniform_8bit_is_8_in_any_scaling():
    # A uniform model over dequantised 8-bit pixels carries log2(256) = 8 bits per dimension,
    # whether the model sees [0, 1) (density 1, jacobian D log 256) or [-1, 1) (density 2^-D,
    # jacobian D log 128).
    d = 12
    zero_one = bits_per_dim(torch.zeros(3, dtype=F64), d, log_scale=d * math.log(256))
    minus_one_one = bits_per_dim(
        torch.full((3,), -d * math.log(2), dtype=F64), d, log_scale=d * math.log(128)
    )
    assert zero_one.shape == (3,)
    torch.testing.assert_close(zero_one, torch.full((3,), 8.0, dtype=F64))
    torch.testing.assert_close(minus_one_one, torch.full((3,), 8.0, dtype=F64))


def test_bits_per_dim_is_invariant_to_the_data_scaling():
    # The same data seen at two scales: model space y ~ N(mu, s^2 I), data space x = c y ~
    # N(c mu, (c s)^2 I). Two independent likelihood solves, one bits/dim.
    c, s = 3.0, 0.5
    o_y, o_x = oracle(s), GaussianOracle(oracle(s).mu * c, c * s)
    y = o_y.sample_x1(4, torch.Generator().manual_seed(5))
    solver = Dopri5(atol=1e-8, rtol=1e-8)
    lp_y = log_likelihood(o_y, y, solver=solver).log_prob
    lp_x = log_likelihood(o_x, c * y, solver=solver).log_prob
    torch.testing.assert_close(
        bits_per_dim(lp_y, 3, log_scale=3 * math.log(c)), bits_per_dim(lp_x, 3), rtol=0, atol=1e-5
    )


# ----------------------------------------------------------------------------- errors
def test_divergence_errors():
    x, t = torch.zeros(2, 3, dtype=F64), torch.zeros(2, dtype=F64)
    f = nonlinear_field
    with pytest.raises(ValueError, match="unknown divergence method 'trace'"):
        divergence(f, x, t, method="trace")
    with pytest.raises(ValueError, match="probes are only used by method='hutchinson'"):
        divergence(f, x, t, probes=torch.ones(1, 2, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"needs probes of shape \(P, B, \*D\)"):
        divergence(f, x, t, method="hutchinson")
    with pytest.raises(ValueError, match=r"probes must have shape \(P, B, \*D\) = \(P, 2, 3\)"):
        divergence(f, x, t, method="hutchinson", probes=torch.ones(2, 3, dtype=F64))
    with pytest.raises(TypeError, match="probes must be a floating-point tensor"):
        divergence(f, x, t, method="hutchinson", probes=torch.ones(1, 2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="probes must be a torch.Tensor"):
        divergence(f, x, t, method="hutchinson", probes=[[1.0]])
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(2,\), got \(\)"):
        divergence(f, x, torch.tensor(0.5))
    with pytest.raises(TypeError, match="t must be a torch.Tensor"):
        divergence(f, x, 0.5)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        divergence(f, torch.zeros(2, 3, dtype=torch.long), t)


def test_log_likelihood_errors():
    o = oracle(0.5)
    x1 = torch.zeros(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="grid must run backwards from 1 .* first=0.0, last=1.0"):
        log_likelihood(o, x1, grid=make_grid("uniform", 2, dtype=F64))
    with pytest.raises(ValueError, match="grid must run backwards from 1 .* last=0.5"):
        log_likelihood(o, x1, grid=torch.tensor([1.0, 0.5], dtype=F64))
    with pytest.raises(ValueError, match="grid must be strictly monotone"):
        log_likelihood(o, x1, grid=torch.tensor([1.0, 1.0, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="unknown divergence 'trace'"):
        log_likelihood(o, x1, divergence="trace")
    with pytest.raises(ValueError, match="num_probes must be >= 1, got 0"):
        log_likelihood(o, x1, divergence="hutchinson", num_probes=0)
    with pytest.raises(ValueError, match="num_probes=2 only applies to divergence='hutchinson'"):
        log_likelihood(o, x1, num_probes=2)
    with pytest.raises(ValueError, match="generator is only used by divergence='hutchinson'"):
        log_likelihood(o, x1, generator=torch.Generator())
    with pytest.raises(ValueError, match="needs an explicit torch.Generator .* got NoneType"):
        log_likelihood(o, x1, divergence="hutchinson")
    with pytest.raises(TypeError, match="source must be a Source, got str"):
        log_likelihood(o, x1, source="gaussian")
    with pytest.raises(TypeError, match="solver must be an ODESolver or AdaptiveSolver, got str"):
        log_likelihood(o, x1, solver="dopri5")
    with pytest.raises(TypeError, match="x1 must be a floating-point tensor"):
        log_likelihood(o, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x1 must have shape \(B, \*D\)"):
        log_likelihood(o, torch.zeros(3, dtype=F64))


def test_bits_per_dim_errors():
    lp = torch.zeros(3)
    with pytest.raises(ValueError, match=r"log_prob must have shape \(B,\), got \(3, 1\)"):
        bits_per_dim(lp[:, None], 4)
    with pytest.raises(TypeError, match="log_prob must be a torch.Tensor"):
        bits_per_dim([0.0], 4)
    with pytest.raises(ValueError, match="dim must be >= 1, got 0"):
        bits_per_dim(lp, 0)
    with pytest.raises(TypeError, match="dim must be an int"):
        bits_per_dim(lp, 4.0)
    with pytest.raises(ValueError, match="log_scale must be finite, got inf"):
        bits_per_dim(lp, 4, log_scale=math.inf)
    with pytest.raises(TypeError, match="log_scale must be a number, got Tensor"):
        bits_per_dim(lp, 4, log_scale=torch.tensor(1.0))
