"""The re-noising flow-map sampler (multistep consistency sampling) on the Gaussian oracle."""

import pytest
import torch

from flowmatch.solvers import RenoisingFlowMapSampler, solve
from flowmatch.times import make_grid
from oracles import GaussianOracle


class _ExactMap:
    field_kind = "flow_map"

    def __init__(self, oracle):
        self.oracle = oracle

    def __call__(self, x, s, t, cond=None):
        return self.oracle.flow_map(x, s, t)


def test_renoising_an_exact_map_samples_the_data_distribution_in_any_number_of_steps():
    oracle = GaussianOracle(torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5)
    x0 = oracle.sample_x0(20000, torch.Generator().manual_seed(0))
    for steps in (1, 2, 4):
        sol = solve(
            _ExactMap(oracle),
            x0,
            make_grid("uniform", steps, dtype=torch.float64),
            RenoisingFlowMapSampler(),
            generator=torch.Generator().manual_seed(steps),
        )
        assert sol.nfe == steps
        torch.testing.assert_close(sol.x.mean(0), oracle.mu, atol=0.02, rtol=0)
        torch.testing.assert_close(
            sol.x.std(0), torch.full((2,), 0.5, dtype=torch.float64), atol=0.02, rtol=0
        )


def test_renoising_uses_the_given_noise_and_needs_it():
    oracle = GaussianOracle(torch.tensor([0.0], dtype=torch.float64), 1.0)
    x0, grid = torch.zeros(3, 1, dtype=torch.float64), make_grid("uniform", 2, dtype=torch.float64)
    noise = torch.randn(2, 3, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = solve(_ExactMap(oracle), x0, grid, RenoisingFlowMapSampler(), noise=noise).x
    b = solve(_ExactMap(oracle), x0, grid, RenoisingFlowMapSampler(), noise=noise).x
    assert torch.equal(a, b)
    # step 1: x1_hat = X(0, 0, 1) = 0, re-noised to t = 0.5 with noise[0]; step 2 jumps to 1
    half = 0.5 * oracle.flow_map(x0, 0.0, 1.0) + 0.5 * noise[0]
    torch.testing.assert_close(a, oracle.flow_map(half, 0.5, 1.0))
    with pytest.raises(ValueError, match="one noise tensor per step"):
        RenoisingFlowMapSampler().advance(_ExactMap(oracle), x0, 0.0, 1.0)


def test_bound_to_a_run_it_refuses_another_source_or_path():
    from flowmatch.paths import AffinePath
    from flowmatch.paths.schedules import CosineSchedule
    from flowmatch.solvers.context import SamplingContext, bind_sampler

    ok = SamplingContext(path=AffinePath(), gaussian_source=True, name="run 'a'")
    assert isinstance(bind_sampler(RenoisingFlowMapSampler(), ok), RenoisingFlowMapSampler)
    moons = SamplingContext(path=AffinePath(), gaussian_source=False, name="run 'moons'")
    with pytest.raises(ValueError, match="run 'moons' has another source.*--solver flow_map"):
        bind_sampler(RenoisingFlowMapSampler(), moons)
    vp = SamplingContext(path=AffinePath(CosineSchedule()), name="run 'vp'")
    with pytest.raises(ValueError, match="linear path.*run 'vp' uses"):
        bind_sampler(RenoisingFlowMapSampler(), vp)
