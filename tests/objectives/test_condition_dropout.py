"""Condition dropout for every kind: the null condition, its frequency, and the objective."""

from __future__ import annotations

import math

import pytest
import torch

from flowmatch.data.batch import ArrayDataset, BatchSchedule
from flowmatch.interfaces import Condition
from flowmatch.models import MLP
from flowmatch.objectives.base import ObjectiveStep, drop_condition
from flowmatch.objectives.flow_matching import FlowMatchingObjective


def _cond(n: int, g: torch.Generator) -> Condition:
    return Condition(
        labels=torch.randint(0, 5, (n,), generator=g),
        values=torch.randn(n, 2, generator=g),
        context=torch.randn(n, 3, 4, generator=g),
    )


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_marks_the_right_fraction_and_nulls_labels_on_the_same_rows(p):
    n = 20_000
    g = torch.Generator().manual_seed(0)
    c = _cond(n, g)
    out = drop_condition(c, p, 5, torch.Generator().manual_seed(1))
    assert isinstance(out, Condition) and out.drop.dtype == torch.bool and out.drop.shape == (n,)
    freq = out.drop.double().mean().item()
    assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / n)  # binomial standard error
    # One draw per sample for every kind: the labels are nulled exactly where drop is set.
    assert torch.equal(out.labels == 5, out.drop)
    assert torch.equal(out.labels[~out.drop], c.labels[~out.drop])
    # Values and context are kept as they are (the model ignores them where dropped).
    assert out.values is c.values and out.context is c.context


def test_drop_for_values_only_needs_no_null_label_and_keeps_an_existing_mask():
    g = torch.Generator().manual_seed(0)
    c = Condition(values=torch.randn(1000, 1, generator=g), drop=torch.arange(1000) < 100)
    out = drop_condition(c, 0.2, None, torch.Generator().manual_seed(3))
    assert out.labels is None
    assert out.drop[:100].all()  # already dropped rows stay dropped
    assert 0.2 * 900 - 5 * 12 < int(out.drop[100:].sum()) < 0.2 * 900 + 5 * 12  # sd = 12
    assert drop_condition(c, 0.0, None, g) is c  # p = 0: nothing changes
    with pytest.raises(ValueError, match="label dropout needs null_label"):
        drop_condition(Condition(labels=torch.zeros(3, dtype=torch.long)), 0.5, None, g)


def test_label_tensor_dropout_is_unchanged():
    # A bare label tensor keeps its old path: a tensor back, same draws as a Condition's.
    labels = torch.randint(0, 3, (500,), generator=torch.Generator().manual_seed(0))
    a = drop_condition(labels, 0.3, 3, torch.Generator().manual_seed(7))
    b = drop_condition(Condition(labels=labels), 0.3, 3, torch.Generator().manual_seed(7))
    assert isinstance(a, torch.Tensor) and torch.equal(a, b.labels)


class _Recorder(torch.nn.Module):
    """Records the condition each forward sees; returns zeros."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list = []

    def forward(self, x, t, cond=None):
        self.seen.append(cond)
        return torch.zeros_like(x)


def test_objective_drops_values_and_context_from_a_batch():
    n = 4000
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g)
    ds = ArrayDataset(x, values=x[:, :1].clone(), context=x[:, :, None].clone())
    batch = BatchSchedule(ds, n, seed=0).batch_at(0)
    rec = _Recorder()
    step = ObjectiveStep(FlowMatchingObjective(cond_dropout=0.25))
    out = step({"model": rec}, batch, torch.Generator().manual_seed(1))
    assert out.loss.shape == (n,)
    (seen,) = rec.seen
    assert torch.equal(seen.values, batch.values) and torch.equal(seen.context, batch.context)
    assert abs(seen.drop.double().mean().item() - 0.25) < 5 * math.sqrt(0.25 * 0.75 / n)


def test_objective_trains_a_values_model():
    # A conditional MLP on values gets a finite loss and gradients through its embeddings.
    g = torch.Generator().manual_seed(0)
    net = MLP(2, hidden=16, depth=2, values_dim=1)
    x = torch.randn(64, 2, generator=g)
    obj = FlowMatchingObjective(cond_dropout=0.5)
    out = obj(net, x, cond=Condition(values=x[:, :1]), generator=g)
    out.loss.mean().backward()
    assert net.values_embed.proj.weight.grad.abs().sum() > 0
    assert net.values_embed.null.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="cond must have batch size B = 64"):
        obj(net, x, cond=Condition(values=x[:3, :1]), generator=g)
