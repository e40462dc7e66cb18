"""W-CFM pair weights and PAFM posterior targets: their defining properties, no training."""

from __future__ import annotations

import math

import pytest
import torch

from flowmatch import api
from flowmatch.couplings import ExactOTCoupling
from flowmatch.models import MLP
from flowmatch.objectives import OBJECTIVES, FlowMatchingObjective
from flowmatch.objectives.pafm import PAFMObjective, choose_candidates, posterior_endpoints
from flowmatch.objectives.wcfm import WeightedCFMObjective, gibbs_weights
from flowmatch.paths import AffinePath
from flowmatch.sources import GaussianSource
from flowmatch.utils.options import OptionError
from oracles import GaussianOracle

F64 = torch.float64
TINY = ["model.hidden=16", "model.depth=1", "data.n_train=256", "data.n_test=64"]


def _pairs(n=256, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64), 2 + torch.randn(n, d, generator=g, dtype=F64)


def test_gibbs_weights_sum_to_one_and_follow_the_median_cost():
    x0, x1 = _pairs()
    w, eps, ess = gibbs_weights(x0, x1, 0.3)
    assert w.shape == (256,) and (w > 0).all()
    assert w.sum().item() == pytest.approx(1.0, abs=1e-12)
    median = torch.cdist(x0, x1).square().median()
    assert eps.item() == pytest.approx(0.3 * median.item(), rel=1e-12)
    assert 0 < ess.item() <= 1
    # Shorter pairs weigh more: the weighted mean cost is below the uniform mean.
    cost = (x0 - x1).square().sum(1)
    assert (w * cost).sum() < cost.mean()
    # Absolute temperature and the one-hot limit eps -> 0: all weight on the shortest pair.
    w0, eps0, ess0 = gibbs_weights(x0, x1, 1e-6, relative=False)
    assert eps0.item() == pytest.approx(1e-6)
    assert w0.argmax() == cost.argmin() and w0.max().item() == pytest.approx(1.0)
    assert ess0.item() == pytest.approx(1 / 256)


def test_wcfm_reduces_to_cfm_as_epsilon_grows():
    x0, x1 = _pairs(64, 2)
    torch.manual_seed(0)
    model = MLP(2, hidden=16, depth=1).double()
    plain = FlowMatchingObjective()(
        model, x1, x0=x0, x0_paired=True, generator=torch.Generator().manual_seed(1)
    )
    big = WeightedCFMObjective(epsilon=1e12, epsilon_mode="absolute")(
        model, x1, x0=x0, x0_paired=True, generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(big.loss, plain.loss, rtol=1e-9, atol=0)
    assert big.logs["wcfm_ess"].item() == pytest.approx(1.0)
    small = WeightedCFMObjective(epsilon=0.05)(
        model, x1, x0=x0, x0_paired=True, generator=torch.Generator().manual_seed(1)
    )
    # The weighted loss is a reweighting of the same per-sample losses (B w_i l_i).
    w, _, _ = gibbs_weights(x0, x1, 0.05)
    torch.testing.assert_close(small.loss, plain.loss * w * 64)


def test_wcfm_errors_and_registration():
    with pytest.raises(ValueError, match="epsilon must be"):
        WeightedCFMObjective(epsilon=0.0)
    with pytest.raises(ValueError, match="epsilon_mode"):
        WeightedCFMObjective(epsilon_mode="median")
    with pytest.raises(OptionError, match="epsilon must be > 0"):
        OBJECTIVES.config("wcfm", epsilon=-1.0)
    cfg, train, _ = api.resolve_config(
        data="checkerboard", overrides=[*TINY, "objective.kind=wcfm", "objective.epsilon=0.5"]
    )
    from flowmatch.config.build import build_parts, build_step, cond_spec

    step = build_step(build_parts(cfg, (2,), cond_spec(cfg.model, train)), cfg)
    assert isinstance(step.objective, WeightedCFMObjective) and step.objective.epsilon == 0.5


# ------------------------------------------------------------------------------------ PAFM


@pytest.mark.parametrize("t_value", [0.2, 0.6])
def test_pafm_target_is_unbiased_on_the_gaussian_oracle(t_value):
    # x1 ~ N(mu, s^2 I), x0 ~ N(0, I); candidates are other batch members (i.i.d. prior
    # draws, independent of x0). The residual r = target - u_t(x_t) has E[r] = 0 and
    # E[r x_t] = 0 (unbiased given x_t). Samples of one batch share candidates, so the test
    # uses the means of 200 independent batches of 200 and their standard error (5 SE).
    # Its variance is below plain flow matching's (the reason for PAFM).
    batches, b, m = 200, 200, 8
    mu = torch.tensor([1.0, -0.5], dtype=F64)
    oracle = GaussianOracle(mu, 0.7)
    g = torch.Generator().manual_seed(int(10 * t_value))
    path = AffinePath(eps=1e-6)
    t = torch.full((b,), t_value, dtype=F64)
    means, var_pafm, var_cfm = [], [], []
    for _ in range(batches):
        x1, x0 = oracle.sample_x1(b, g), oracle.sample_x0(b, g)
        sample = path.sample(x0, x1, t)
        index, valid = choose_candidates(b, m, generator=g)
        x0b, x1b, _ = posterior_endpoints(path, GaussianSource(), sample.xt, t, x1, index, valid)
        target = path.from_endpoints(x0b, x1b, dst="velocity", xt=sample.xt, t=t)
        u = oracle.velocity(sample.xt, t)
        r = target - u
        means.append(torch.cat([r, r * sample.xt], dim=1).mean(0))
        var_pafm.append(r.square().mean(0))
        var_cfm.append((sample.v_target - u).square().mean(0))
    block = torch.stack(means)
    se = block.std(0) / math.sqrt(batches)
    assert (block.mean(0).abs() < 5 * se).all(), (block.mean(0), se)
    assert (torch.stack(var_pafm).mean(0) < 0.7 * torch.stack(var_cfm).mean(0)).all()


def test_pafm_candidates_respect_classes_and_the_dropped_ones():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    g = torch.Generator().manual_seed(0)
    index, valid = choose_candidates(6, 3, labels=labels, generator=g)
    assert index.shape == (6, 3)
    for i in range(6):
        chosen = index[i][valid[i]]
        assert (labels[chosen] == labels[i]).all() and (chosen != i).all()
    assert valid.sum(1).tolist() == [2, 2, 2, 1, 1, 0]
    free = torch.tensor([False, False, False, False, False, True])
    index, valid = choose_candidates(6, 3, labels=labels, unrestricted=free, generator=g)
    assert valid[5].all() and (index[5] != 5).all()


def test_pafm_reduces_to_cfm_without_candidates_and_near_the_data():
    x0, x1 = _pairs(32, 2)
    t = torch.full((32,), 0.5, dtype=F64)
    path = AffinePath()
    sample = path.sample(x0, x1, t)
    index = torch.zeros(32, 4, dtype=torch.long)
    x0b, x1b, ess = posterior_endpoints(
        path, GaussianSource(), sample.xt, t, x1, index, torch.zeros(32, 4, dtype=torch.bool)
    )
    torch.testing.assert_close(x1b, x1)
    torch.testing.assert_close(x0b, x0)
    assert torch.equal(ess, torch.ones(32, dtype=F64))
    # Near t = 1 the posterior is concentrated on the sample's own endpoint.
    t1 = torch.full((32,), 0.999, dtype=F64)
    s1 = path.sample(x0, x1, t1)
    idx, valid = choose_candidates(32, 8, generator=torch.Generator().manual_seed(0))
    _, x1c, ess1 = posterior_endpoints(path, GaussianSource(), s1.xt, t1, x1, idx, valid)
    torch.testing.assert_close(x1c, x1, atol=1e-6, rtol=0)
    assert ess1.max().item() < 1 + 1e-6


def test_pafm_objective_runs_and_refuses_what_it_cannot_do():
    x0, x1 = _pairs(64, 2)
    torch.manual_seed(0)
    model = MLP(2, hidden=16, depth=1, num_classes=3).double()
    labels = torch.arange(64) % 3
    obj = PAFMObjective(num_candidates=4, cond_dropout=0.2, null_label=3)
    out = obj(model, x1, cond=labels, generator=torch.Generator().manual_seed(0))
    assert out.loss.shape == (64,) and 1 <= out.logs["pafm_ess"].item() <= 5
    with pytest.raises(ValueError, match="num_candidates"):
        PAFMObjective(num_candidates=0)
    with pytest.raises(OptionError, match="independent coupling"):
        from flowmatch.interfaces import CondSpec
        from flowmatch.objectives.base import TrainingParts
        from flowmatch.times import UniformTime

        parts = TrainingParts(
            AffinePath(), ExactOTCoupling(), UniformTime(), GaussianSource(), "velocity", CondSpec()
        )
        OBJECTIVES.build(OBJECTIVES.config("pafm"), parts=parts)
    with pytest.raises(OptionError, match="continuous values"):
        cfg, train, _ = api.resolve_config(
            data="8gaussians_angle", overrides=[*TINY, "objective.kind=pafm"]
        )
        from flowmatch.config.build import build_parts, build_step, cond_spec

        build_step(build_parts(cfg, (2,), cond_spec(cfg.model, train)), cfg)
