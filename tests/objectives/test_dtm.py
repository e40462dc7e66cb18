"""Difference Transition Matching: the Gaussian covariance check, the loss, sampling end to end."""

from __future__ import annotations

import math

import pytest
import torch

from flowmatch import api
from flowmatch.couplings.base import IndependentCoupling
from flowmatch.data.batch import Batch
from flowmatch.interfaces import CondSpec
from flowmatch.models.dtm import DTMNet
from flowmatch.objectives import OBJECTIVES, TrainingParts
from flowmatch.objectives.dtm import DTMField
from flowmatch.paths import PATHS
from flowmatch.solvers import Euler, solve
from flowmatch.solvers.transition import TransitionSampler
from flowmatch.sources import GaussianSource
from flowmatch.times import UniformTime, make_grid
from flowmatch.utils.options import OptionError
from oracles import GaussianOracle

F64 = torch.float64


class _OracleDTM:
    """The exact DTM of N(0, I) -> N(mu, s^2 I): law of Y = x1 - x0 given X_t, and its head.

    Per coordinate (X, Y) are jointly Gaussian: Var X = (1-t)^2 + t^2 s^2,
    Cov(X, Y) = t s^2 - (1 - t), Var Y = 1 + s^2, so Y | X ~ N(m(X), c) with
    m = mu + Cov / Var X (X - t mu), c = Var Y - Cov^2 / Var X. The backbone returns (m, c);
    the head is the exact flow-matching velocity from N(0, I) to N(m, c I) (the Gaussian
    oracle with mean m and std sqrt(c)), integrated by the library's DTM field.
    """

    def __init__(self, mu: torch.Tensor, s: float) -> None:
        self.mu, self.s = mu, s

    def backbone(self, x, t, cond=None):
        t = t[:, None]
        var_x = (1 - t) ** 2 + t**2 * self.s**2
        cov = t * self.s**2 - (1 - t)
        m = self.mu + cov / var_x * (x - t * self.mu)
        c = (1 + self.s**2) - cov**2 / var_x
        return torch.cat([m, c.expand_as(m)], dim=1)

    def head(self, y, s, h):
        d = y.shape[1]
        m, c = h[:, :d], h[:, d:]
        s = s[:, None]
        v = (1 - s) ** 2 + s**2 * c  # GaussianOracle's v_s with per-sample target variance
        dv = 2 * (s * c - (1 - s))
        return m + dv / (2 * v) * (y - s * m)


def test_dtm_keeps_the_data_covariance_at_two_steps_where_euler_fm_shrinks_it():
    mu, s, n = torch.tensor([1.0, -2.0], dtype=F64), 0.5, 40_000
    o = _OracleDTM(mu, s)
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    grid = make_grid("uniform", 2, dtype=F64)
    field = DTMField(o.backbone, o.head, steps=2, head_steps=256)
    dtm = solve(field, x0, grid, TransitionSampler(), generator=torch.Generator().manual_seed(1)).x
    fm = solve(GaussianOracle(mu, s), x0, grid, Euler()).x
    # Data variance 0.25: DTM within Monte Carlo error (SE of a variance ~ sqrt(2/n) v) plus the
    # head's Euler error O(1/256); 2-step Euler FM ends at 0.2^2 = 0.04 (0.2 x0 + mu, exactly).
    se = math.sqrt(2 / n) * s**2
    assert (dtm.var(0) - s**2).abs().max() < 5 * se + 2e-3, dtm.var(0)
    assert (dtm.mean(0) - mu).abs().max() < 5 * s / math.sqrt(n) + 2e-3
    torch.testing.assert_close(fm.var(0), torch.full((2,), 0.04, dtype=F64), rtol=0.05, atol=0)
    # Deterministic DTM (the head's mean only, y0 = 0) is not the same as the stochastic one.
    det = solve(field, x0, grid, TransitionSampler(), noise=torch.zeros(2, n, 2, dtype=F64)).x
    assert det.var(0).max() < 0.5 * s**2


def _parts(path="linear", prediction="velocity", cond=None):
    return TrainingParts(
        PATHS.build(PATHS.config(path, prediction=prediction)),
        IndependentCoupling(),
        UniformTime(),
        GaussianSource(),
        prediction,
        cond or CondSpec(),
    )


def test_dtm_step_trains_backbone_and_head_on_the_discrete_grid():
    torch.manual_seed(0)
    net = DTMNet(2, hidden=16, depth=1, features=8, head_hidden=16, head_depth=1)
    step = OBJECTIVES.build(OBJECTIVES.config("dtm", steps=4), parts=_parts())
    seen = []
    net.register_forward_hook(lambda m, args, out: seen.append(args[1].clone()))
    out = step({"model": net}, Batch(x1=torch.randn(64, 2)), torch.Generator().manual_seed(0))
    assert out.loss.shape == (64,)
    t = seen[0]
    assert set((t * 4).round().tolist()) <= {0.0, 1.0, 2.0, 3.0} and torch.equal(
        t * 4, (t * 4).round()
    )
    out.loss.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    field = step.field({"model": net})
    with pytest.raises(ValueError, match="trained on T = 4"):
        solve(field, torch.zeros(3, 2), make_grid("uniform", 8), TransitionSampler())
    with pytest.raises(TypeError, match="transition"):
        solve(field, torch.zeros(3, 2), make_grid("uniform", 4), Euler())


def test_dtm_refuses_other_paths_and_predictions():
    with pytest.raises(OptionError, match="linear"):
        OBJECTIVES.build(OBJECTIVES.config("dtm"), parts=_parts(path="cosine"))
    with pytest.raises(OptionError, match="velocity"):
        OBJECTIVES.build(OBJECTIVES.config("dtm"), parts=_parts(prediction="x1"))


def test_dtm_run_end_to_end(tmp_path):
    overrides = ["model.kind=dtm", "model.hidden=16", "model.depth=1", "model.features=8"]
    overrides += ["model.head_hidden=16", "model.head_depth=1", "objective.kind=dtm"]
    overrides += ["objective.steps=2", "sample.solver=transition", "sample.solver.nfe=2"]
    overrides += ["train.log_every=5", "train.checkpoint_every=0", "sample.num_samples=16"]
    overrides += ["train.batch_size=64", "data.n_train=256", "data.n_test=64"]
    cfg, train, test = api.resolve_config(data="moons", steps=5, overrides=overrides)
    api.train_run(cfg, train, out_dir=tmp_path, test_ds=test)
    run = api.load_run(tmp_path)
    a = api.generate(run, 10, seed=3, batch_size=4)
    b = api.generate(run, 10, seed=3)
    # Per-sample seeded step noise: the batch size changes nothing but float rounding.
    torch.testing.assert_close(a.samples, b.samples, rtol=1e-5, atol=1e-6)
    assert a.nfe == 2
    c = api.generate(run, 10, seed=4)
    assert not torch.allclose(c.samples, b.samples)
    report = api.evaluate(run, test, num_samples=32, train_ds=train)
    assert [(r["solver"], r["nfe"]) for r in report["rows"]] == [("transition", 2)]
