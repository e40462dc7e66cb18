"""Two-time networks (``time_inputs=2``) and the flow maps built from networks."""

import pytest
import torch

from flowmatch.config.build import build_model
from flowmatch.models import MLP, MODELS, AverageVelocityMap, EulerJumpMap, UNet
from flowmatch.solvers import FlowMapSampler, solve
from flowmatch.times import make_grid


def _pair(cls, seed=0, **kw):
    torch.manual_seed(seed)
    one = cls(**kw)
    two = cls(**kw, time_inputs=2)
    missing = two.load_state_dict(one.state_dict(), strict=False).missing_keys
    return one, two, missing


@pytest.mark.parametrize(
    ("cls", "kw", "shape"),
    [
        (MLP, {"dim": 3, "hidden": 16, "depth": 2}, (5, 3)),
        (UNet, {"in_channels": 1, "image_size": 8, "base_channels": 8}, (2, 1, 8, 8)),
    ],
)
def test_two_time_net_starts_as_its_one_time_teacher(cls, kw, shape):
    one, two, missing = _pair(cls, **kw)
    assert missing and all(k.startswith("interval_embed.") for k in missing)
    x, s, t = torch.randn(shape), torch.rand(shape[0]), torch.rand(shape[0])
    torch.testing.assert_close(two(x, s, None, t_end=t), one(x, s))
    torch.testing.assert_close(two(x, s), one(x, s))  # no t_end: the diagonal


def test_two_time_net_depends_on_the_interval_after_a_step():
    _, two, _ = _pair(MLP, dim=2, hidden=16, depth=2)
    opt = torch.optim.SGD(two.parameters(), lr=0.1)
    x, s = torch.randn(8, 2), torch.rand(8)
    two(x, s, None, t_end=torch.ones(8)).sum().backward()
    opt.step()
    a, b = two(x, s, None, t_end=torch.ones(8)), two(x, s, None, t_end=s)
    assert not torch.allclose(a, b)


def test_t_end_on_a_one_time_net_is_refused():
    with pytest.raises(ValueError, match="time_inputs=1"):
        MLP(2, hidden=8, depth=1)(torch.randn(2, 2), torch.rand(2), None, t_end=torch.rand(2))


def test_bad_time_inputs_and_t_end_shape():
    with pytest.raises(ValueError, match="time_inputs must be 1 or 2"):
        MLP(2, hidden=8, depth=1, time_inputs=3)
    with pytest.raises(ValueError, match="time_inputs must be 1 or 2"):
        UNet(1, image_size=8, time_inputs=0)
    net = MLP(2, hidden=8, depth=1, time_inputs=2)
    with pytest.raises(ValueError, match=r"t_end must have shape \(B,\)"):
        net(torch.randn(2, 2), torch.rand(2), None, t_end=torch.rand(3))


def test_registry_option_builds_a_two_time_model():
    cfg = MODELS.config("mlp", hidden=8, depth=1, time_inputs=2)
    assert build_model(cfg, (2,)).time_inputs == 2
    with pytest.raises(ValueError, match="time_inputs"):
        MODELS.config("mlp", time_inputs=3)


def test_average_velocity_map_identity_and_one_step_sampling():
    net = MLP(2, hidden=16, depth=2, time_inputs=2)
    fmap = AverageVelocityMap(net)
    x, s, t = torch.randn(4, 2), torch.rand(4), torch.rand(4)
    assert torch.equal(fmap(x, s, s), x)
    torch.testing.assert_close(fmap(x, s, t), x + (t - s)[:, None] * net(x, s, None, t_end=t))
    torch.testing.assert_close(fmap.velocity(x, s), net(x, s))
    sol = solve(fmap, x, make_grid("uniform", 2), FlowMapSampler())
    assert sol.nfe == 2 and sol.x.shape == x.shape


def test_flow_maps_refuse_bad_inputs():
    with pytest.raises(ValueError, match="two-time network"):
        AverageVelocityMap(MLP(2, hidden=8, depth=1))
    with pytest.raises(TypeError, match="callable"):
        EulerJumpMap(3)
    fmap = EulerJumpMap(MLP(2, hidden=8, depth=1))
    with pytest.raises(ValueError, match=r"s must be a tensor of shape \(B,\)"):
        fmap(torch.randn(3, 2), torch.rand(2), torch.rand(3))


def test_euler_jump_map_is_the_euler_step():
    net = MLP(2, hidden=8, depth=1)
    x, s, t = torch.randn(3, 2), torch.rand(3), torch.rand(3)
    torch.testing.assert_close(EulerJumpMap(net)(x, s, t), x + (t - s)[:, None] * net(x, s))
