"""Euler-Maruyama and mixed ODE/SDE sampling: marginals, transitions, log-probs, windows."""

import math

import pytest
import torch

from flowmatch.paths import AffinePath, CosineSchedule, LinearSchedule
from flowmatch.solvers import SAMPLERS, Euler, Heun, solve
from flowmatch.solvers.context import SamplingContext, bind_sampler
from flowmatch.solvers.sde import EulerMaruyama, MixedSampler, window_times
from flowmatch.times import make_grid
from flowmatch.utils.options import OptionError
from oracles import GaussianOracle

MU = torch.tensor([1.0, -2.0], dtype=torch.float64)
S = 0.5
STEPS = [10, 20, 40, 80, 160, 320]


def _oracle(schedule):
    return GaussianOracle(MU, S, schedule=schedule)


def _exact_moments(oracle, sampler, num_steps):
    """Mean and variance of the Euler-Maruyama chain from N(0, I), propagated exactly.

    With the oracle's affine velocity every step is ``x' = a x + b + std z`` (a, b per
    coordinate), so the moments follow ``m' = a m + b``, ``V' = a^2 V + std^2`` without Monte
    Carlo noise; ``a`` and ``b`` are read off the sampler's own transition mean at x = 0, 1.
    """
    grid = make_grid("uniform", num_steps, dtype=torch.float64).tolist()
    m = torch.zeros(1, oracle.dim, dtype=torch.float64)
    var = torch.ones_like(m)
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):

        def mean_at(x, t=t, t_next=t_next):
            return sampler.transition(x, oracle(x, x.new_full((1,), t)), t, t_next)

        b, std = mean_at(torch.zeros_like(m))
        a = mean_at(torch.ones_like(m))[0] - b
        m, var = a * m + b, a * a * var + std**2
    return m, var


def _slope(errors):
    h = torch.tensor([1.0 / n for n in STEPS], dtype=torch.float64)
    e = torch.tensor(errors, dtype=torch.float64)
    design = torch.stack([h.log(), torch.ones_like(h)], 1)
    return torch.linalg.lstsq(design, e.log()[:, None]).solution[0].item()


@pytest.mark.parametrize("schedule", [LinearSchedule(), CosineSchedule()], ids=["linear", "cosine"])
@pytest.mark.parametrize("diffusion,scale", [("constant", 0.8), ("memoryless", 1.0)])
def test_marginal_errors_are_first_order(schedule, diffusion, scale):
    oracle = _oracle(schedule)
    em = EulerMaruyama(diffusion, scale, path=AffinePath(schedule))
    mean_err, var_err = [], []
    for n in STEPS:
        m, var = _exact_moments(oracle, em, n)
        mean_err.append((m - MU).abs().max().item())
        var_err.append((var - S**2).abs().max().item())
    # Weak order 1 of Euler-Maruyama (the memoryless linear case is even O(h^2): the chain
    # forgets the start, where the diffusion is singular). Fitted log-log slope of the errors.
    assert _slope(var_err) > 0.7, var_err
    assert var_err[-1] < 2e-3, var_err
    if max(mean_err) > 1e-12:  # on the linear path the mean is exact (Euler on m_t = t mu)
        assert _slope(mean_err) == pytest.approx(1.0, abs=0.2), mean_err


def test_constant_diffusion_slope_is_one():
    oracle = _oracle(LinearSchedule())
    em = EulerMaruyama("constant", 0.8, path=AffinePath())
    errs = [(_exact_moments(oracle, em, n)[1] - S**2).abs().max().item() for n in STEPS]
    assert _slope(errs) == pytest.approx(1.0, abs=0.1), errs


def test_flow_grpo_marginal_error_is_small_and_shrinks():
    # The singular start (g^2 h = a^2 / k at step k) makes the variance error decay only like
    # h^(a^2/2) once the O(h) part is gone: it changes sign near 80 steps, so assert the
    # documented magnitude rather than a slope.
    oracle = _oracle(LinearSchedule())
    em = EulerMaruyama("flow_grpo", 0.7, path=AffinePath())
    errs = [(_exact_moments(oracle, em, n)[1] - S**2).abs().max().item() for n in STEPS]
    assert errs[0] < 0.03 and max(errs[2:]) < 0.004, errs


def test_monte_carlo_moments_match_the_propagated_ones(gen):
    # The noise path (solve draws the noise) agrees with the exact propagation within 5 SE.
    oracle, n = _oracle(CosineSchedule()), 20_000
    em = EulerMaruyama("flow_grpo", 0.7, path=AffinePath(CosineSchedule()))
    x = solve(
        oracle,
        oracle.sample_x0(n, gen),
        make_grid("uniform", 20, dtype=torch.float64),
        em,
        generator=gen,
    ).x
    m, var = _exact_moments(oracle, em, 20)
    se_mean = (var / n).sqrt()
    se_var = var * math.sqrt(2 / (n - 1))
    assert ((x.mean(0) - m[0]).abs() < 5 * se_mean[0]).all()
    assert ((x.var(0) - var[0]).abs() < 5 * se_var[0]).all()


@pytest.mark.parametrize("diffusion", ["constant", "flow_grpo", "memoryless"])
def test_log_probs_equal_torch_normal(diffusion, gen):
    oracle = _oracle(LinearSchedule())
    em = EulerMaruyama(diffusion, 0.7, path=AffinePath())
    grid = make_grid("uniform", 8, dtype=torch.float64)
    x0 = oracle.sample_x0(2, gen)  # B == D: broadcasting bugs would show
    sol = solve(oracle, x0, grid, em, generator=gen, return_log_probs=True, save_trajectory=True)
    assert sol.log_probs.shape == (8, 2) and sol.nfe == 8
    times = grid.tolist()
    for k in range(8):
        x = sol.trajectory[k]
        mean, std = em.transition(x, oracle(x, x.new_full((2,), times[k])), times[k], times[k + 1])
        ref = torch.distributions.Normal(mean, std.expand_as(mean)).log_prob(sol.trajectory[k + 1])
        torch.testing.assert_close(sol.log_probs[k], ref.sum(1), atol=1e-6, rtol=0)
        assert torch.isfinite(std).all() and (std > 0).all()


def test_explicit_noise_and_generator_reproduce(gen):
    oracle = _oracle(LinearSchedule())
    em = EulerMaruyama("memoryless", 1.0, path=AffinePath())
    grid = make_grid("uniform", 5, dtype=torch.float64)
    x0 = oracle.sample_x0(3, gen)
    noise = torch.randn(5, 3, 2, generator=gen, dtype=torch.float64)
    a = solve(oracle, x0, grid, em, noise=noise).x
    b = solve(oracle, x0, grid, em, noise=noise.clone()).x
    assert torch.equal(a, b)
    c = solve(oracle, x0, grid, em, generator=torch.Generator().manual_seed(3)).x
    d = solve(oracle, x0, grid, em, generator=torch.Generator().manual_seed(3)).x
    assert torch.equal(c, d) and not torch.equal(a, c)


def test_endpoint_rule_keeps_every_step_finite(gen):
    # Singular schedules at t = 0 use g(t_next) for the first step; no inf/NaN anywhere.
    oracle = _oracle(LinearSchedule())
    for diffusion in ("flow_grpo", "memoryless"):
        em = EulerMaruyama(diffusion, 1.0, path=AffinePath())
        x = oracle.sample_x0(4, gen)
        mean, std = em.transition(x, oracle(x, x.new_zeros(4)), 0.0, 0.1)
        g_next = em.transition(x, oracle(x, x.new_zeros(4)), 0.1, 0.2)[1] / math.sqrt(0.1)
        assert torch.isfinite(mean).all() and torch.isfinite(std).all()
        # the first step's g is g(0.1): the same g the second step uses at its start
        torch.testing.assert_close(std / math.sqrt(0.1), g_next)


def test_small_scale_approaches_euler(gen):
    oracle = _oracle(CosineSchedule())
    x0 = oracle.sample_x0(4, gen)
    grid = make_grid("uniform", 10, dtype=torch.float64)
    em = EulerMaruyama("constant", 1e-6, path=AffinePath(CosineSchedule()))
    x_sde = solve(oracle, x0, grid, em, generator=gen).x
    torch.testing.assert_close(x_sde, solve(oracle, x0, grid, Euler()).x, atol=1e-5, rtol=0)


def test_sde_errors(gen):
    oracle = _oracle(LinearSchedule())
    x0 = oracle.sample_x0(2, gen)
    grid = make_grid("uniform", 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="needs the path"):
        solve(oracle, x0, grid, EulerMaruyama(), generator=gen)
    with pytest.raises(ValueError, match="runs forward"):
        solve(oracle, x0, grid.flip(0), EulerMaruyama(path=AffinePath()), generator=gen)
    with pytest.raises(ValueError, match="diffusion"):
        EulerMaruyama("cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale"):
        EulerMaruyama("constant", 0.0)
    with pytest.raises(ValueError, match="standard normal source"):
        bind_sampler(EulerMaruyama(), SamplingContext(path=AffinePath(), gaussian_source=False))
    with pytest.raises(ValueError, match="needs the run's path"):
        bind_sampler(EulerMaruyama(), SamplingContext())
    with pytest.raises(TypeError, match="path must be an AffinePath"):
        EulerMaruyama(path="linear")  # type: ignore[arg-type]


def test_binding_takes_the_context_path():
    em = bind_sampler(
        EulerMaruyama("constant", 0.3), SamplingContext(path=AffinePath(CosineSchedule()))
    )
    assert isinstance(em.path.schedule, CosineSchedule) and em.scale == 0.3
    assert bind_sampler(Euler(), SamplingContext()).__class__ is Euler


# ----------------------------------------------------------------------------- mixed


def test_mixed_is_the_ode_outside_and_the_sde_inside_its_window(gen):
    oracle = _oracle(CosineSchedule())
    path = AffinePath(CosineSchedule())
    grid = make_grid("uniform", 10, dtype=torch.float64)
    lo, hi = window_times(grid, 2, 3)  # steps 2, 3, 4 are stochastic
    assert (lo, hi) == pytest.approx((0.2, 0.5))
    mixed = MixedSampler(Heun(), (lo, hi), "flow_grpo", 0.7, path=path)
    x0 = oracle.sample_x0(3, gen)
    noise = torch.randn(10, 3, 2, generator=gen, dtype=torch.float64)
    sol = solve(oracle, x0, grid, mixed, noise=noise, return_log_probs=True, save_trajectory=True)
    inside = torch.tensor([2 <= k < 5 for k in range(10)])
    assert (sol.log_probs[~inside] == 0).all() and (sol.log_probs[inside] != 0).all()
    assert sol.nfe == 3 * 1 + 7 * 2
    em, heun, times = EulerMaruyama("flow_grpo", 0.7, path=path), Heun(), grid.tolist()
    for k in range(10):
        x = sol.trajectory[k]
        if inside[k]:
            ref = em.advance(oracle, x, times[k], times[k + 1], noise=noise[k]).x
        else:
            ref = heun.step(oracle, x, times[k], times[k + 1])
        torch.testing.assert_close(sol.trajectory[k + 1], ref, atol=0, rtol=0)


def test_mixed_errors_and_config():
    with pytest.raises(ValueError, match="window must satisfy"):
        MixedSampler(Euler(), (0.5, 0.5))
    with pytest.raises(TypeError, match="deterministic fixed-step"):
        MixedSampler(EulerMaruyama(), (0.0, 0.5))
    with pytest.raises(ValueError, match="exceeds the grid"):
        window_times(make_grid("uniform", 4), 3, 2)
    with pytest.raises(OptionError, match="ode must be a fixed-step ODE sampler"):
        SAMPLERS.config("mixed", ode="dopri5")
    with pytest.raises(OptionError, match="window_lo must be < window_hi"):
        SAMPLERS.config("mixed", window_lo=0.6, window_hi=0.2)
    cfg = SAMPLERS.config("mixed", steps=12, ode="midpoint", window_hi=0.3)
    sampler = SAMPLERS.build(cfg)
    assert cfg.num_steps() == 12 and isinstance(sampler.ode, type(SAMPLERS["midpoint"]()))
    em_cfg = SAMPLERS.config("euler_maruyama", nfe=10, diffusion="memoryless", scale=1.0)
    em = SAMPLERS.build(em_cfg)
    assert em_cfg.num_steps() == 10 and em.diffusion == "memoryless" and em.path is None
