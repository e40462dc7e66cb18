"""CSFM and CrossFlow steps: the loss terms, gradients into the source, condition routing."""

from __future__ import annotations

import math

import pytest
import torch

from flowmatch.couplings import ExactOTCoupling
from flowmatch.couplings.base import IndependentCoupling
from flowmatch.data.batch import Batch
from flowmatch.interfaces import Condition, CondSpec
from flowmatch.models import MLP
from flowmatch.objectives import OBJECTIVES, TrainingParts
from flowmatch.objectives.learned_source import CrossFlowStep, CSFMStep, UnconditionalField
from flowmatch.paths import AffinePath
from flowmatch.sources_learned import ConditionalGaussianSource
from flowmatch.times import UniformTime
from flowmatch.utils.options import OptionError

SPEC = CondSpec(values_dim=1)


def _parts(source, coupling=None, spec=SPEC):
    return TrainingParts(
        AffinePath(), coupling or IndependentCoupling(), UniformTime(), source, "velocity", spec
    )


def _modules():
    torch.manual_seed(0)
    return {
        "model": MLP(2, hidden=16, depth=1, values_dim=1),
        "source": ConditionalGaussianSource((2,), SPEC, hidden=16),
    }


def _batch(n=32):
    g = torch.Generator().manual_seed(0)
    return Batch(x1=torch.randn(n, 2, generator=g), values=torch.randn(n, 1, generator=g))


def test_csfm_terms_and_gradients_reach_the_source():
    mods = _modules()
    step = OBJECTIVES.build(OBJECTIVES.config("csfm"), parts=_parts(mods["source"]))
    assert isinstance(step, CSFMStep) and step.trains == ("model", "source")
    out = step(mods, _batch(), torch.Generator().manual_seed(1))
    # At initialisation log sigma^2 = 0: the variance-only KL is exactly 0, sigma is 1.
    assert out.logs["kl"].item() == pytest.approx(0.0, abs=1e-7)
    assert out.logs["sigma"].item() == pytest.approx(1.0)
    assert 0 <= out.logs["align"].item() <= 4  # |a - b|^2 of unit vectors
    out.loss.mean().backward()
    grads = [p.grad for p in mods["source"].net[-1].parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    # The KL penalises only the variance: moving mu leaves it at 0.
    with torch.no_grad():
        mods["source"].net[-1].bias[:2].fill_(3.0)
    out2 = step(mods, _batch(), torch.Generator().manual_seed(1))
    assert out2.logs["kl"].item() == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        mods["source"].net[-1].bias[2:].fill_(math.log(4.0))
    out3 = step(mods, _batch(), torch.Generator().manual_seed(1))
    want = -0.5 * (1 + math.log(4.0) - 4.0)
    assert out3.logs["kl"].item() == pytest.approx(want, rel=1e-6)


def test_crossflow_field_ignores_the_condition():
    mods = _modules()
    step = OBJECTIVES.build(OBJECTIVES.config("crossflow"), parts=_parts(mods["source"]))
    assert isinstance(step, CrossFlowStep)
    out = step(mods, _batch(), torch.Generator().manual_seed(1))
    assert out.loss.shape == (32,) and out.logs["align"].item() > 0
    field = step.field(mods)
    assert isinstance(field, UnconditionalField)
    x, t = torch.randn(4, 2), torch.rand(4)
    a = field(x, t, Condition(values=torch.zeros(4, 1)))
    b = field(x, t, Condition(values=torch.ones(4, 1)))
    assert torch.equal(a, b)


def test_deterministic_source_has_no_noise():
    mods = _modules()
    step = OBJECTIVES.build(
        OBJECTIVES.config("csfm", deterministic=True), parts=_parts(mods["source"])
    )
    # The path starts at mu(c) exactly: with mu = 0 the first point of the path is 0.
    seen = {}

    def model(x, t, cond):
        seen["x"], seen["t"] = x, t
        return torch.zeros_like(x)

    step({"model": model, "source": mods["source"]}, _batch(), torch.Generator().manual_seed(1))
    x1 = _batch().x1
    torch.testing.assert_close(seen["x"], seen["t"][:, None] * x1)


def test_learned_source_steps_refuse_couplings_and_other_sources():
    mods = _modules()
    with pytest.raises(OptionError, match="independent coupling"):
        OBJECTIVES.build(OBJECTIVES.config("csfm"), parts=_parts(mods["source"], ExactOTCoupling()))
    from flowmatch.sources import GaussianSource

    with pytest.raises(OptionError, match="learned_gaussian"):
        OBJECTIVES.build(OBJECTIVES.config("csfm"), parts=_parts(GaussianSource()))
    with pytest.raises(OptionError, match="has no labels or conditions"):
        OBJECTIVES.build(
            OBJECTIVES.config("crossflow"), parts=_parts(mods["source"], spec=CondSpec())
        )
