"""EMA of weights: geometric convergence (closed form), buffers, state round-trip."""

import pytest
import torch
from torch import nn

from flowmatch.train import EMA


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).double()


def test_geometric_convergence_to_fixed_weights():
    # With the weights held at theta, e_n - theta = decay^n (e_0 - theta) exactly (a geometric
    # sequence); float64 lerp is accurate to a few ulp per step, hence 1e-12.
    model, decay, n = _net(0), 0.9, 25
    ema = EMA(model, decay)
    start = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for _ in range(n):
        ema.update()
    for e0, e, theta in zip(start, ema.module.parameters(), model.parameters(), strict=True):
        assert e.shape == theta.shape
        torch.testing.assert_close(e - theta, decay**n * (e0 - theta), rtol=0, atol=1e-12)


def test_ema_is_frozen_copy_and_model_is_untouched():
    model = _net(1)
    before = [p.detach().clone() for p in model.parameters()]
    ema = EMA(model, 0.5)
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert not ema.module.training
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    ema.update()
    for b, p, e in zip(before, model.parameters(), ema.module.parameters(), strict=True):
        torch.testing.assert_close(p, 2 * b, rtol=0, atol=0)
        torch.testing.assert_close(e, 1.5 * b, rtol=1e-15, atol=1e-15)  # lerp halfway


def test_buffers_are_copied_when_read():
    model = _net(2)
    ema = EMA(model, 0.99)
    model.train()
    model(torch.randn(8, 3, dtype=torch.float64))  # updates BatchNorm running statistics
    synced = ema.module_synced()
    assert torch.equal(synced[1].running_mean, model[1].running_mean)
    assert torch.equal(ema.state_dict()["1.running_var"], model[1].running_var)


def test_state_dict_round_trip():
    a, b = EMA(_net(3), 0.9), EMA(_net(4), 0.9)
    b.load_state_dict(a.state_dict())
    for x, y in zip(a.module.parameters(), b.module.parameters(), strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_bad_decay(decay):
    with pytest.raises(ValueError, match=r"ema decay must be in \(0, 1\)"):
        EMA(_net(0), decay)
