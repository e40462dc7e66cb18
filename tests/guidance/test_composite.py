"""Composite fields: RL guidance identities, time switching, cost-gradient control."""

import pytest
import torch

from flowmatch.guidance import CostGradientField, SwitchedField, WeightedFields, control_weight
from flowmatch.paths import AffinePath, CosineSchedule
from flowmatch.sampling.switch import choose_switch
from flowmatch.solvers import Euler, Midpoint, solve
from flowmatch.times import make_grid
from oracles import GaussianOracle

MU = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)


def _fields():
    a = GaussianOracle(MU, 0.5)
    b = GaussianOracle(-MU, 1.5)
    return a, b


def test_weighted_fields_identities_and_affinity(gen):
    a, b = _fields()
    x = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    t = torch.rand(3, generator=gen, dtype=torch.float64)
    assert torch.equal(WeightedFields(a, b, 0.0)(x, t), a(x, t))
    assert torch.equal(WeightedFields(a, b, 1.0)(x, t), b(x, t))
    w2, w3 = WeightedFields(a, b, 2.0)(x, t), WeightedFields(a, b, 3.0)(x, t)
    torch.testing.assert_close(w3 - w2, b(x, t) - a(x, t))  # affine in w
    with pytest.raises(ValueError, match="finite"):
        WeightedFields(a, b, float("inf"))
    with pytest.raises(TypeError, match="reference must be a callable"):
        WeightedFields(1, b, 1.0)


def test_switched_field_uses_each_side_on_its_interval(gen):
    a, b = _fields()
    f = SwitchedField(a, b, 0.5)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.1, 0.49, 0.5, 0.9], dtype=torch.float64)
    out = f(x, t)
    torch.testing.assert_close(out[:2], a(x[:2], t[:2]))
    torch.testing.assert_close(out[2:], b(x[2:], t[2:]))
    grid = make_grid("uniform", 10, dtype=torch.float64)
    f = SwitchedField(a, b, 0.3)
    solve(f, torch.zeros(2, 3, dtype=torch.float64), grid, Euler())
    assert f.calls == {"early": 3, "late": 7}
    with pytest.raises(ValueError, match="switch must be a number in"):
        SwitchedField(a, b, 1.5)


def test_choose_switch_takes_the_latest_time_within_tolerance(gen):
    exact = GaussianOracle(MU, 0.5)
    x0 = exact.sample_x0(256, gen)
    grid = make_grid("uniform", 10, dtype=torch.float64)
    target = exact.flow(x0, 1.0)

    def score(x):
        return float((x - target).square().sum(1).mean().sqrt()) + 1e-3

    # an identical early model: every switch is as good; the latest is chosen
    same = choose_switch(exact, exact, x0, grid, Midpoint(), score)
    assert same.switch == pytest.approx(0.9) and same.early_steps == 9
    # a useless early model (zero velocity): switching costs quality everywhere but t -> 0
    zero = lambda x, t, c=None: torch.zeros_like(x)  # noqa: E731
    bad = choose_switch(zero, exact, x0, grid, Midpoint(), score, candidates=[0.0, 0.5, 0.9])
    assert bad.switch == 0.0 and bad.scores[0.9] > bad.scores[0.5] > bad.reference


def test_cost_gradient_field_is_the_analytic_control(gen):
    # Oracle on the cosine path, cost C(x1) = |x1 - c|^2 / 2: x1_hat(x) = mu + k (x - alpha mu)
    # with k = alpha s^2 / v, so grad_x C = k (x1_hat - c).
    s, path = 0.5, AffinePath(CosineSchedule())
    oracle = GaussianOracle(MU, s, schedule=CosineSchedule())
    c = torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
    cost = lambda x1, t: 0.5 * (x1 - c).square().sum(1)  # noqa: E731
    x = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    for weighting in ("focus", "dps", "constant"):
        f = CostGradientField(oracle, path, cost, scale=0.7, weighting=weighting)
        k = oracle.coefficients(t, x).alpha * s**2 / oracle.variance(t, x)
        grad = k * (oracle.expected_x1(x, t) - c)
        ref = oracle(x, t) - 0.7 * control_weight(weighting, path, t, x) * grad
        torch.testing.assert_close(f(x, t), ref)
    assert torch.equal(CostGradientField(oracle, path, cost, scale=0.0)(x, t), oracle(x, t))
    # steering lowers the cost of the samples
    x0 = oracle.sample_x0(128, gen)
    grid = make_grid("uniform", 20, dtype=torch.float64)
    free = solve(oracle, x0, grid, Euler()).x
    costs = [float(cost(free, None).mean())]
    for scale in (0.5, 2.0):
        steered = solve(CostGradientField(oracle, path, cost, scale=scale), x0, grid, Euler()).x
        costs.append(float(cost(steered, None).mean()))
    assert costs[0] > costs[1] > costs[2], costs
    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        CostGradientField(oracle, path, cost, scale=-1.0)
