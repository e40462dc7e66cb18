"""The trainer's path (``ObjectiveStep`` -> ``compute``) computes each method's own loss.

``ObjectiveStep`` calls an objective's unchecked ``compute``; a method that subclasses
``FlowMatchingObjective`` must override ``compute`` (not only ``__call__``), or the trainer
would silently train plain flow matching.
"""

from __future__ import annotations

import pytest
import torch

from flowmatch.couplings.base import IndependentCoupling
from flowmatch.data.batch import Batch
from flowmatch.interfaces import CondSpec
from flowmatch.objectives import OBJECTIVES, FlowMatchingObjective, TrainingParts
from flowmatch.paths import AffinePath
from flowmatch.sources import GaussianSource
from flowmatch.times.samplers import UniformTime

F64 = torch.float64


def _model(x, t, cond):
    return 0.3 * x + t[:, None]


@pytest.mark.parametrize(
    "kind, opts",
    [("wcfm", {"epsilon": 0.2}), ("pafm", {"num_candidates": 4}), ("vecor", {"weight": 0.5})],
)
def test_step_uses_the_methods_loss_not_plain_fm(kind, opts):
    parts = TrainingParts(
        AffinePath(), IndependentCoupling(), UniformTime(), GaussianSource(), "velocity", CondSpec()
    )
    step = OBJECTIVES.build(OBJECTIVES.config(kind, **opts), parts=parts)
    x1 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    got = step({"model": _model}, Batch(x1=x1), torch.Generator().manual_seed(1)).loss
    # The same objective's checked __call__ with the same randomness: identical.
    direct = step.objective(_model, x1, generator=torch.Generator().manual_seed(1)).loss
    torch.testing.assert_close(got, direct, rtol=0, atol=0)
    plain = FlowMatchingObjective(parts.path, parts.coupling, parts.time_sampler, parts.source)
    base = plain(_model, x1, generator=torch.Generator().manual_seed(1)).loss
    assert not torch.allclose(got, base)  # the method changes the loss
