"""Inference-time search: budgets, better rewards than plain sampling, rewards."""

import pytest
import torch

from flowmatch.paths import AffinePath
from flowmatch.sampling.rewards import REWARDS, DigitReward
from flowmatch.sampling.search import SEARCHES, SearchProblem, best_of_n, flowopt_search, rbf
from flowmatch.solvers import Euler, solve
from flowmatch.times import make_grid
from flowmatch.utils.options import OptionError
from oracles import GaussianOracle

MU = torch.tensor([0.0, 0.0], dtype=torch.float64)


def _problem(reward=None):
    oracle = GaussianOracle(MU, 1.0)
    reward = reward or REWARDS.build(REWARDS.config("distance", point=(2.0, 0.0)))
    return SearchProblem(
        field=oracle,
        path=AffinePath(),
        reward=reward,
        source=lambda n, g: torch.randn(n, 2, generator=g, dtype=torch.float64),
    )


@pytest.mark.parametrize("name", ["best_of_n", "smc", "rbf", "flowopt"])
def test_searches_respect_the_budget_and_beat_plain_sampling(name):
    p = _problem()
    search = SEARCHES.build(SEARCHES.config(name, steps=5))
    res = search(p, 200, 50, torch.Generator().manual_seed(0))
    assert res.x.shape == (200, 2) and res.reward.shape == (200,) and res.nfe <= 50
    torch.testing.assert_close(res.reward, p.reward(res.x, None))
    plain = p.reward(
        solve(
            p.field,
            torch.randn(200, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64),
            make_grid("uniform", 5, dtype=torch.float64),
            Euler(),
        ).x,
        None,
    )
    # E[-|x - (2, 0)|^2] = -(4 + 2) = -6 for x ~ N(0, I); search must do much better
    assert plain.mean() < -4 and res.reward.mean() > plain.mean() + 2, res.reward.mean()


def test_best_of_one_is_plain_sampling():
    p = _problem()
    g = torch.Generator().manual_seed(3)
    res = best_of_n(p, 4, 5, g, steps=5)
    x0 = p.source(4, torch.Generator().manual_seed(3))
    ref = solve(p.field, x0, make_grid("uniform", 5, dtype=torch.float64), Euler()).x
    torch.testing.assert_close(res.x, ref) and None
    assert res.nfe == 5


def test_flowopt_search_is_the_identity_jacobian_ascent():
    # A zero field: the flow map is the identity at any step count, so z_{k+1} = z_k + eta
    # grad r(z_k) with r = -|z - p|^2 gives z_K - p = (1 - 2 eta)^K (z_0 - p) exactly
    # (K = budget / steps - 1 ascent steps)
    from dataclasses import replace

    p = replace(_problem(), field=lambda x, t, cond=None: torch.zeros_like(x))
    point = torch.tensor([2.0, 0.0], dtype=torch.float64)
    res = flowopt_search(p, 6, 5 * 4, torch.Generator().manual_seed(2), steps=5, eta=0.1)
    z0 = p.source(6, torch.Generator().manual_seed(2))
    torch.testing.assert_close(res.x - point, 0.8**3 * (z0 - point))
    assert res.nfe == 4 * 5
    region = REWARDS.build(REWARDS.config("region", center=(2.0, 0.0), radius=1.0))
    with pytest.raises(ValueError, match="has no gradient in x"):
        flowopt_search(_problem(region), 2, 10, torch.Generator(), steps=5)
    with pytest.raises(ValueError, match="buys no 5-step euler pass"):
        flowopt_search(p, 2, 4, torch.Generator(), steps=5)


def test_rbf_spends_its_whole_budget_without_improvements():
    # A constant reward is never beaten: every step spends exactly its share, no rollover.
    p = _problem(lambda x, c=None: torch.zeros(len(x), dtype=x.dtype))
    res = rbf(p, 3, 4 + 5 * 7, torch.Generator().manual_seed(0), steps=5, init=4)
    assert res.nfe == 4 + 5 * 7


def test_search_errors():
    p = _problem()
    with pytest.raises(ValueError, match="buys no"):
        SEARCHES.build(SEARCHES.config("best_of_n", steps=10))(p, 2, 5, torch.Generator())
    with pytest.raises(ValueError, match="must exceed init"):
        SEARCHES.build(SEARCHES.config("rbf", steps=10, init=4))(p, 2, 12, torch.Generator())
    with pytest.raises(OptionError, match="solver must be a fixed-step ODE sampler"):
        SEARCHES.config("best_of_n", solver="euler_maruyama")
    with pytest.raises(ValueError, match="has 2 coordinates but samples have 3"):
        REWARDS.build(REWARDS.config("distance", point=(1.0, 1.0)))(torch.zeros(2, 3))


def test_builtin_rewards():
    x = torch.tensor([[1.0, 1.0], [3.0, 1.0]])
    region = REWARDS.build(REWARDS.config("region", center=(1.0, 1.0), radius=0.5))
    assert region(x).tolist() == [1.0, 0.0] and not region.differentiable
    dist = REWARDS.build(REWARDS.config("distance", point=(1.0, 1.0)))
    assert dist(x).tolist() == [0.0, -4.0]
    from flowmatch.data import load_digits

    images, labels = load_digits("test")
    r = DigitReward(3)(images[labels == 3][:20])
    assert r.shape == (20,) and r.mean() > -0.5  # the classifier is ~95 % accurate
    with pytest.raises(OptionError, match="target"):
        REWARDS.config("digit", target=10)
