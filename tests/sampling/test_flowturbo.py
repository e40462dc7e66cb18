"""FlowTurbo: schedule NFE, perfect-refiner identity, refiner training, api/CLI."""

import pytest
import torch

from flowmatch import api
from flowmatch.cli.main import main
from flowmatch.data.batch import Batch
from flowmatch.paths import AffinePath
from flowmatch.sampling.flowturbo import FlowTurboSampler, RefinerStep, VelocityRefiner
from flowmatch.solvers import Heun, solve
from flowmatch.sources import GaussianSource
from flowmatch.times import make_grid
from oracles import GaussianOracle

ORACLE = GaussianOracle(torch.tensor([1.0, -0.5], dtype=torch.float64), 0.4)


def _perfect(x, t, v):  # the refiner that returns the exact velocity change
    return ORACLE(x, t) - v


@pytest.mark.parametrize(
    "nh,np_,nr,nfe", [(3, 0, 0, 6), (1, 4, 0, 2 + 5), (0, 3, 2, 4), (0, 0, 4, 1)]
)
def test_schedule_nfe(nh, np_, nr, nfe, gen):
    x0 = ORACLE.sample_x0(4, gen)
    sampler = FlowTurboSampler(nh, np_, nr, refiner=_perfect)
    sol = solve(ORACLE, x0, make_grid("uniform", nh + np_ + nr, dtype=torch.float64), sampler)
    assert sol.nfe == nfe


def test_perfect_refiner_steps_are_heun_steps(gen):
    x0 = ORACLE.sample_x0(8, gen)
    grid = make_grid("uniform", 6, dtype=torch.float64)
    turbo = solve(ORACLE, x0, grid, FlowTurboSampler(0, 0, 6, refiner=_perfect)).x
    torch.testing.assert_close(turbo, solve(ORACLE, x0, grid, Heun()).x)
    heun = solve(ORACLE, x0, grid, FlowTurboSampler(6, 0, 0)).x
    torch.testing.assert_close(heun, solve(ORACLE, x0, grid, Heun()).x)
    # the pseudo corrector is second order too: close to the exact flow at 40 steps
    grid = make_grid("uniform", 40, dtype=torch.float64)
    pc = solve(ORACLE, x0, grid, FlowTurboSampler(1, 39, 0)).x
    assert (pc - ORACLE.flow(x0, 1.0)).abs().max() < 1e-3


def test_untrained_refiner_returns_the_velocity_unchanged(gen):
    r = VelocityRefiner((2,), hidden=16).double()
    x = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    assert torch.equal(r(x, torch.rand(3, dtype=torch.float64), x), torch.zeros_like(x))


def test_refiner_step_learns_the_velocity_change(gen):
    step = RefinerStep(lambda m: ORACLE, AffinePath(), GaussianSource(), max_dt=0.12)
    refiner = VelocityRefiner((2,), hidden=32).double()
    opt = torch.optim.Adam(refiner.parameters(), lr=3e-3)
    batch = Batch(ORACLE.sample_x1(512, gen))
    first = None
    for _ in range(200):
        loss = step({"refiner": refiner}, batch, gen).loss.mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_refine_cli_and_flowturbo_sampling(tiny_run, capsys):
    with pytest.raises(ValueError, match="needs a trained refiner"):
        api.sampling_plan(tiny_run, "flowturbo")
    assert (
        main(["refine", str(tiny_run.directory), "--steps", "20", "--batch-size", "64", "--quiet"])
        == 0
    )
    sampler, grid, cfg = api.sampling_plan(tiny_run, "flowturbo")
    assert sampler.refiner is not None and len(grid) == 10
    res = api.generate(
        tiny_run, 32, solver="flowturbo", solver_options={"n_heun": 1, "n_pseudo": 2, "n_refine": 2}
    )
    assert res.nfe == 2 + 3 and torch.isfinite(res.samples).all()
