"""FlowOpt on the oracle: converges below the step bound, diverges above, steers a reward."""

import pytest
import torch

from flowmatch.sampling.flowopt import flowopt, flowopt_reward, step_bound
from flowmatch.solvers import Euler, solve
from flowmatch.solvers.inversion import invert
from flowmatch.times import make_grid
from oracles import GaussianOracle

S = 0.4
ORACLE = GaussianOracle(torch.tensor([1.0, -1.0], dtype=torch.float64), S)
GRID = make_grid("uniform", 8, dtype=torch.float64)


def test_step_bound_is_two_over_the_jacobian(gen):
    # Euler on the oracle is affine in z with Jacobian c I; the bound is 2 / c
    z = ORACLE.sample_x0(4, gen)
    x0 = solve(ORACLE, torch.zeros_like(z), GRID, Euler()).x
    c = (solve(ORACLE, torch.ones_like(z), GRID, Euler()).x - x0)[0, 0].item()
    assert step_bound(ORACLE, z, GRID, Euler(), generator=gen) == pytest.approx(2 / c, rel=1e-6)


def test_reconstruction_converges_below_and_diverges_above_the_bound(gen):
    target = ORACLE.sample_x1(16, gen)
    z0 = invert(ORACLE, target, GRID, Euler())  # naive inversion: O(h) reconstruction error
    bound = step_bound(ORACLE, z0, GRID, Euler(), generator=gen)
    # error factor |1 - eta c| = 0.4 per iteration at eta = 0.3 * (2 / c)
    good = flowopt(ORACLE, target, z0, GRID, Euler(), eta=0.3 * bound, iterations=20)
    assert good.history[-1] < 1e-8 < good.history[0]
    ratios = [b / a for a, b in zip(good.history[:-1], good.history[1:], strict=True)]
    assert max(ratios) == pytest.approx(0.4, rel=1e-3)
    bad = flowopt(ORACLE, target, z0, GRID, Euler(), eta=1.2 * bound, iterations=10)
    assert bad.history[-1] > bad.history[0]
    assert good.nfe == 21 * 8


def test_reward_steering_raises_the_reward(gen):
    point = torch.tensor([2.0, 0.0], dtype=torch.float64)
    reward = lambda x: -(x - point).square().sum(1)  # noqa: E731
    res = flowopt_reward(
        ORACLE, reward, ORACLE.sample_x0(32, gen), GRID, Euler(), eta=0.2, iterations=10
    )
    assert res.history[-1] > res.history[0] + 1.0


def test_reconstruct_a_run_and_cli(tiny_run, tmp_path):
    import numpy as np

    from flowmatch import api
    from flowmatch.cli.main import main

    targets = api.generate(tiny_run, 16, solver="euler", nfe=8, seed=5).samples
    res = api.reconstruct(tiny_run, targets, nfe=8, iterations=5)
    assert res.history[-1] < res.history[0] and res.samples.shape == targets.shape
    # every pass counts: the inversion, the step bound (1 + 10 power iterations), 1 + 5 FlowOpt
    assert res.nfe == 8 + 11 * 8 + 6 * 8
    given = api.reconstruct(tiny_run, targets, nfe=8, iterations=5, eta=res.eta)
    assert given.nfe == 8 + 6 * 8 and given.history == res.history
    np.savez(tmp_path / "t.npz", samples=targets.numpy())
    out = tmp_path / "r.npz"
    assert (
        main(
            [
                "reconstruct",
                str(tiny_run.directory),
                "--target",
                str(tmp_path / "t.npz"),
                "--iterations",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert np.load(out)["history"].shape == (4,)
