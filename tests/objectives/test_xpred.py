"""x-prediction with a velocity loss (JiT): the endpoint clamp rule and the dimension shift."""

from __future__ import annotations

import math

import pytest
import torch

from flowmatch.models.adapters import PredictionAdapter
from flowmatch.objectives import FlowMatchingObjective
from flowmatch.paths import AffinePath
from flowmatch.times.shifted import ShiftedLogitNormalTime, dimension_shift, shift_time

F64 = torch.float64


def test_x1_prediction_velocity_loss_is_the_clamped_weighted_x_loss():
    # Linear path: an x1-prediction is a velocity through x0_hat = (x_t - t x1_hat) / sigma_t,
    # v = x1_hat - x0_hat, with the endpoint rule sigma_t -> max(1 - t, eps). The velocity
    # loss is then |x1_hat - x1|^2 (1 + t / max(1 - t, eps))^2: 1 / (1 - t)^2 away from the
    # clamp, at most (1 + 1 / eps)^2 = 441 (eps = 0.05, as JiT/RiT's t_eps), finite at t = 1
    # itself, and 0 for a correct prediction at every t (both sides are converted).
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(6, 3, generator=g, dtype=F64), torch.randn(6, 3, generator=g, dtype=F64)
    t = torch.tensor([0.0, 0.3, 0.9, 0.95, 0.99, 1.0], dtype=F64)
    err = 0.1 * torch.randn(6, 3, generator=g, dtype=F64)
    path = AffinePath(eps=0.05)
    obj = FlowMatchingObjective(path, prediction="x1", loss_space="velocity")
    out = obj(lambda x, t, c: x1 + err, x1, x0=x0, x0_paired=True, t=t)
    weight = (1 + t / (1 - t).clamp_min(0.05)).square()
    torch.testing.assert_close(out.loss, err.square().mean(1) * weight, rtol=1e-12, atol=0)
    torch.testing.assert_close(weight[1:4], 1 / (1 - t[1:4]).square())  # unclamped
    assert weight[-1] == pytest.approx(441.0)
    exact = obj(lambda x, t, c: x1, x1, x0=x0, x0_paired=True, t=t)
    assert exact.loss.abs().max() < 1e-20
    plain = FlowMatchingObjective(path, prediction="x1")(
        lambda x, t, c: x1 + err, x1, x0=x0, x0_paired=True, t=t
    )
    torch.testing.assert_close(plain.loss, err.square().mean(1))


def test_x1_prediction_sampled_as_a_velocity_is_finite_at_t_1():
    path = AffinePath(eps=0.05)
    field = PredictionAdapter(lambda x, t, c=None: torch.zeros_like(x), path, "x1")
    x = torch.ones(2, 2, dtype=F64)
    v = field(x, torch.ones(2, dtype=F64))
    torch.testing.assert_close(v, -x / 0.05)  # x1_hat - (x - t x1_hat) / eps at t = 1


def test_dimension_shift_and_shift_map():
    assert dimension_shift(4096) == 1.0 and dimension_shift(16384) == 2.0
    assert dimension_shift(64, base_dim=16) == 2.0
    t = torch.linspace(0, 1, 11, dtype=F64)
    torch.testing.assert_close(shift_time(t, 1.0), t)
    s = shift_time(t, 3.0)
    assert s[0] == 0 and s[-1] == 1 and (s[1:] - s[:-1] > 0).all() and (s[1:-1] < t[1:-1]).all()
    # The same map as the inference grid "shifted" (noise convention s' = a s / (1 + (a-1) s)).
    from flowmatch.times import make_grid

    torch.testing.assert_close(
        make_grid("shifted", 10, dtype=F64, shift=3.0), shift_time(t, 3.0), rtol=1e-12, atol=1e-12
    )
    sampler = ShiftedLogitNormalTime(0.0, 1.0, shift=3.0)
    u = sampler.sample_t(20_000, torch.Generator().manual_seed(0), dtype=F64)
    base = ShiftedLogitNormalTime(0.0, 1.0, shift=1.0).sample_t(
        20_000, torch.Generator().manual_seed(0), dtype=F64
    )
    torch.testing.assert_close(u, shift_time(base, 3.0))
    assert u.mean() < 0.5 - 5 * u.std() / math.sqrt(len(u))  # shifted towards the noise
    with pytest.raises(ValueError, match="shift must be"):
        ShiftedLogitNormalTime(shift=0.0)
    with pytest.raises(ValueError, match="dim must be"):
        dimension_shift(0)
