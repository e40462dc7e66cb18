"""Reflective flow sampling: identities, NFE accounting, binding."""

import pytest
import torch

from flowmatch import api
from flowmatch.guidance import ClassifierFreeGuidance
from flowmatch.models import MLP
from flowmatch.sampling.reflective import ReflectiveSampler
from flowmatch.solvers import Euler, solve
from flowmatch.times import make_grid


def _net():
    torch.manual_seed(0)
    return MLP(dim=2, hidden=32, depth=2, num_classes=3).double()


def test_without_reflection_it_is_euler_with_cfg(gen):
    net = _net()
    x0 = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    labels = torch.arange(6) % 3
    grid = make_grid("uniform", 5, dtype=torch.float64)
    rfs = ReflectiveSampler(scale=2.0, until=0.0, null_label=3)
    with torch.no_grad():
        got = solve(net, x0, grid, rfs, cond=labels)
        ref = solve(ClassifierFreeGuidance(net, 2.0, 3), x0, grid, Euler(), cond=labels).x
    torch.testing.assert_close(got.x, ref)
    assert got.nfe == 5 * 2


def test_equal_weak_and_strong_reflections_are_the_euler_round_trip(gen):
    # with beta_hi = beta_lo the reflection is x -> x + h u(x) -> x_f - h u(x_f, t+h): a forward
    # and backward Euler pair, O(h^2) away from x
    net = _net()
    x0 = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    labels = torch.arange(6) % 3
    with torch.no_grad():
        for n in (10, 40):
            grid = make_grid("uniform", n, dtype=torch.float64)
            plain = solve(net, x0, grid, Euler(), cond=labels).x
            rfs = ReflectiveSampler(1.0, 1.0, 1.0, until=1.0, null_label=3)
            out = solve(net, x0, grid, rfs, cond=labels)
            err = (out.x - plain).abs().max().item()
            assert out.nfe == n * 3
            if n == 10:
                first = err
    assert err < first / 2  # the reflections' drift shrinks with the step


def test_nfe_and_binding(tiny_run, tiny_digits):
    rfs = ReflectiveSampler(
        beta_hi=3.0, beta_lo=0.0, scale=1.0, until=0.5, repeats=2, null_label=10
    )
    assert rfs.nfe_per_step(0.1) == 1 + 2 * (2 + 1) and rfs.nfe_per_step(0.6) == 1
    with pytest.raises(ValueError, match="label-conditional model"):
        api.sampling_plan(tiny_run, "reflective")
    res = api.generate(
        tiny_digits, 10, solver="reflective", solver_options={"steps": 4, "until": 0.5}
    )
    assert res.nfe == 2 * (1 + 3) + 2 * 1 and torch.isfinite(res.samples).all()
