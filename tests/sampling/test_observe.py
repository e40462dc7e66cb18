"""Observation-conditioned sampling: operators, exact conditionals on the oracle, DPS."""

import pytest
import torch

from flowmatch.paths import AffinePath, CosineSchedule
from flowmatch.sampling.observe import AvgPool, Mask, ObservedField, sample_observed
from flowmatch.solvers import RK4, Euler, Heun, solve
from flowmatch.times import make_grid
from oracles import GaussianOracle

D = 8
MU = torch.linspace(-1, 1, D, dtype=torch.float64)


@pytest.mark.parametrize(
    "op",
    [
        Mask(torch.tensor([1, 0, 0, 1, 1, 0, 1, 0])),
        AvgPool(2),
        AvgPool(4),
        AvgPool(2, weights=torch.linspace(0.5, 2.0, D, dtype=torch.float64)),
    ],
    ids=["mask", "pool2", "pool4", "pool2_weighted"],
)
def test_operator_algebra(op, gen):
    x = torch.randn(5, D, generator=gen, dtype=torch.float64)
    z = torch.randn(5, D, generator=gen, dtype=torch.float64)
    y = op.forward(torch.randn(5, D, generator=gen, dtype=torch.float64))
    p = op.project(x, y)
    torch.testing.assert_close(op.forward(p), y)  # A P(x) = y
    torch.testing.assert_close(op.project(p, y), p)  # idempotent
    torch.testing.assert_close(op.forward(op.lift(y)), y)  # A A^+ = I
    # A^+ A is an orthogonal projection: symmetric, so <P0 x, z> = <x, P0 z>
    p0 = lambda v: op.lift(op.forward(v))  # noqa: E731
    torch.testing.assert_close((p0(x) * z).sum(), (x * p0(z)).sum())


def test_pool_on_images_and_errors():
    op = AvgPool(2, dims=2)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert op.forward(x).shape == (1, 1, 2, 2) and op.forward(x)[0, 0, 0, 0] == 2.5
    with pytest.raises(ValueError, match="divisible by factor 3"):
        AvgPool(3).forward(torch.zeros(2, 8))
    with pytest.raises(ValueError, match="dims must be 1 or 2"):
        AvgPool(2, dims=3)
    with pytest.raises(ValueError, match="only 0 and 1"):
        Mask(torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="method"):
        ObservedField(
            lambda x, t, c=None: x,
            AffinePath(),
            Mask(torch.ones(2)),
            torch.zeros(1, 2),
            method="gd",
        )


def _oracle_case(gen, op, n=64):
    oracle = GaussianOracle(MU, 0.6)
    truth = oracle.sample_x1(n, gen)
    y = op.forward(truth)
    x0 = oracle.sample_x0(n, gen)
    return oracle, y, x0


@pytest.mark.parametrize(
    "op", [Mask(torch.tensor([1, 0, 0, 1, 1, 0, 1, 0])), AvgPool(2)], ids=["mask", "pool"]
)
def test_projection_gives_the_exact_conditional_on_the_oracle(op, gen):
    # Isotropic Gaussian data: the unobserved component (I - A^+ A) x is independent of the
    # observed one, so with the exact field it must follow the exact flow from x0, and the
    # observed part must equal y.
    oracle, y, x0 = _oracle_case(gen, op)
    grid = make_grid("uniform", 40, dtype=torch.float64)
    x = sample_observed(oracle, AffinePath(), op, y, x0, grid, RK4()).x
    free = lambda v: v - op.lift(op.forward(v))  # noqa: E731
    torch.testing.assert_close(free(x), free(oracle.flow(x0, 1.0)), atol=1e-6, rtol=0)
    torch.testing.assert_close(op.forward(x), y, atol=1e-12, rtol=0)


def test_euler_lands_on_the_observation_without_final_projection(gen):
    op = Mask(torch.tensor([1, 0, 0, 1, 1, 0, 1, 0]))
    oracle, y, x0 = _oracle_case(gen, op)
    x = sample_observed(
        oracle,
        AffinePath(),
        op,
        y,
        x0,
        make_grid("uniform", 16, dtype=torch.float64),
        Euler(),
        final_projection=False,
    ).x
    assert (op.forward(x) - y).abs().max() < 1e-5  # the last Euler step lands on P(x1_hat)


def test_heun_reaches_t_one_finitely(gen):
    op = AvgPool(4)
    oracle, y, x0 = _oracle_case(gen, op)
    path = AffinePath(CosineSchedule())
    field = GaussianOracle(MU, 0.6, schedule=CosineSchedule())
    x = sample_observed(
        field,
        path,
        op,
        y,
        x0,
        make_grid("uniform", 10, dtype=torch.float64),
        Heun(),
        final_projection=False,
    ).x
    assert torch.isfinite(x).all() and (op.forward(x) - y).abs().max() < 0.2  # 0.11 measured


def test_dps_moves_the_observed_part_only(gen):
    op = Mask(torch.tensor([1, 0, 0, 1, 1, 0, 1, 0]))
    oracle, y, x0 = _oracle_case(gen, op)
    grid = make_grid("uniform", 50, dtype=torch.float64)
    free = solve(oracle, x0, grid, Euler()).x
    x = sample_observed(
        oracle,
        AffinePath(),
        op,
        y,
        x0,
        grid,
        Euler(),
        method="dps",
        noise_std=0.5,
        final_projection=False,
    ).x
    m = op.mask
    # DPS is approximate (b_t -> 0 at t = 1): measured 0.35 of the unguided distance
    assert (x[:, m] - y[:, m]).abs().mean() < 0.5 * (free[:, m] - y[:, m]).abs().mean()
    torch.testing.assert_close(x[:, ~m], free[:, ~m], atol=1e-10, rtol=0)
