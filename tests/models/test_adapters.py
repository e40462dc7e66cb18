"""Tests for the boundary adapters: prediction types and the SD3/diffusers time convention."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from flowmatch.interfaces import Prediction
from flowmatch.models.adapters import (
    NoiseLevelConventionAdapter,
    PredictionAdapter,
    diffusers_timestep_to_t,
    noise_level_to_t,
    t_to_diffusers_timestep,
    t_to_noise_level,
    velocity_from_noise_level_convention,
    velocity_to_noise_level_convention,
)
from flowmatch.models.mlp import MLP
from flowmatch.paths import (
    AffinePath,
    CosineSchedule,
    LinearSchedule,
    PolynomialSchedule,
    VPSchedule,
)
from flowmatch.solvers import Euler, solve
from flowmatch.times import make_grid

F64 = torch.float64
SCHEDULES = [LinearSchedule(), CosineSchedule(), PolynomialSchedule(), VPSchedule()]
B = D = 3  # batch == feature size: broadcasting mistakes between (B,) and (D,) show up here


def _pairs(gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    x0 = torch.randn(B, D, generator=gen, dtype=F64)
    x1 = torch.randn(B, D, generator=gen, dtype=F64)
    # Interior times: the clamp of the endpoint rule is inactive here for every schedule.
    t = torch.tensor([0.05, 0.5, 0.95], dtype=F64)
    return x0, x1, t


def _constant(value: Tensor) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    """A "network" that ignores its inputs and returns ``value``."""

    def net(x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        return value

    return net


def _smooth_velocity(x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
    """An arbitrary nonlinear field (not the field of any path) for round trips."""
    return torch.sin(x + 2.0 * t[:, None]) - 0.3 * x.roll(1, dims=1) * t[:, None]


# ----------------------------------------------------------------- PredictionAdapter


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
@pytest.mark.parametrize("prediction", ["x1", "x0", "score", "velocity"])
def test_oracle_prediction_gives_target_velocity(
    schedule, prediction: Prediction, gen: torch.Generator
) -> None:
    # An oracle that returns the true x1 (x0, score, velocity) for points built from known
    # (x0, x1) must be turned into exactly the conditional velocity v_target.
    path = AffinePath(schedule)
    x0, x1, t = _pairs(gen)
    sample = path.sample(x0, x1, t)

    def oracle(x: Tensor, t_: Tensor, cond: Tensor | None = None) -> Tensor:
        assert x is sample.xt and t_ is t  # the adapter evaluates the net at (x, t) itself
        return path.target(sample, prediction)

    v = PredictionAdapter(oracle, path, prediction)(sample.xt, t)
    assert v.shape == (B, D)
    # float64; a handful of roundings amplified by 1/sigma_t or 1/alpha_t <= ~1/0.08 (VP at
    # t = 0.95) stays far below 1e-10.
    torch.testing.assert_close(v, sample.v_target, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
@pytest.mark.parametrize("prediction", ["x1", "x0", "score"])
def test_round_trip_through_other_prediction(
    schedule, prediction: Prediction, gen: torch.Generator
) -> None:
    # A net that outputs the `prediction` form of a velocity field u is adapted back to u.
    path = AffinePath(schedule)
    x = torch.randn(B, D, generator=gen, dtype=F64)
    t = torch.tensor([0.05, 0.5, 0.95], dtype=F64)

    def net(x_: Tensor, t_: Tensor, cond: Tensor | None = None) -> Tensor:
        return path.convert(_smooth_velocity(x_, t_), src="velocity", dst=prediction, xt=x_, t=t_)

    v = PredictionAdapter(net, path, prediction)(x, t)
    # float64, two conversions with denominators bounded away from 0 on these times.
    torch.testing.assert_close(v, _smooth_velocity(x, t), rtol=1e-10, atol=1e-10)


def test_velocity_prediction_is_passed_through_unchanged(gen: torch.Generator) -> None:
    x = torch.randn(B, D, generator=gen)
    t = torch.rand(B, generator=gen)
    v = PredictionAdapter(_smooth_velocity, AffinePath(), "velocity")(x, t)
    assert torch.equal(v, _smooth_velocity(x, t))


def test_x_prediction_matches_jit_velocity_off_the_clamp_zone(gen: torch.Generator) -> None:
    # A10 (JiT, Li & He 2025): on the linear path the v-space sampler of an x-predicting net
    # uses v = (x_hat - z) / max(1 - t, t_eps) with t_eps = 0.05. For t <= 1 - t_eps this is
    # the same velocity as our x1 -> velocity conversion.
    eps = 0.05
    path = AffinePath(LinearSchedule(), eps=eps)
    z = torch.randn(B, D, generator=gen, dtype=F64)
    x_hat = torch.randn(B, D, generator=gen, dtype=F64)
    t = torch.tensor([0.0, 0.5, 1 - eps], dtype=F64)
    v = PredictionAdapter(_constant(x_hat), path, "x1")(z, t)
    jit = (x_hat - z) / (1 - t).clamp_min(eps)[:, None]
    # float64; both forms are a few operations on O(1) values divided by >= 0.05.
    torch.testing.assert_close(v, jit, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
@pytest.mark.parametrize("prediction", ["x1", "x0", "score"])
def test_endpoints_follow_the_path_clamp_rule(
    schedule, prediction: Prediction, gen: torch.Generator
) -> None:
    # At t = 0 and t = 1 a conversion divides by alpha_t = 0 or sigma_t = 0. The adapter adds
    # no rule of its own: it returns exactly AffinePath.convert, whose clamp keeps it finite.
    path = AffinePath(schedule)
    x = torch.randn(2, D, generator=gen, dtype=F64)
    pred = torch.randn(2, D, generator=gen, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    v = PredictionAdapter(_constant(pred), path, prediction)(x, t)
    assert torch.isfinite(v).all()
    assert torch.equal(v, path.convert(pred, src=prediction, dst="velocity", xt=x, t=t))


def test_module_parameters_and_cond_are_forwarded(gen: torch.Generator) -> None:
    net = MLP(D, hidden=8, depth=1, num_classes=2)
    adapter = PredictionAdapter(net, AffinePath(), "x1")
    assert list(adapter.parameters()) == list(net.parameters())
    assert set(adapter.state_dict()) == {f"net.{k}" for k in net.state_dict()}
    x = torch.randn(B, D, generator=gen)
    t = torch.full((B,), 0.5)
    y = torch.tensor([0, 1, 2])
    expected = AffinePath().convert(net(x, t, y), src="x1", dst="velocity", xt=x, t=t)
    assert torch.equal(adapter(x, t, y), expected)
    assert "prediction='x1'" in repr(adapter)


def test_prediction_adapter_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown prediction 'eps'; choose one of"):
        PredictionAdapter(_smooth_velocity, AffinePath(), "eps")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path must be an AffinePath, got LinearSchedule"):
        PredictionAdapter(_smooth_velocity, LinearSchedule(), "x1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="net must be callable"):
        PredictionAdapter(3, AffinePath(), "x1")  # type: ignore[arg-type]


# ------------------------------------------------------------- noise-level convention


def test_time_conversions_round_trip_and_endpoints() -> None:
    t = torch.linspace(0, 1, 101, dtype=F64)
    s = t_to_noise_level(t)
    # Each map is one subtraction from 1 of a value in [0, 1]: the round trip loses at most
    # one unit of float64 epsilon.
    eps = torch.finfo(F64).eps
    torch.testing.assert_close(noise_level_to_t(s), t, rtol=0, atol=eps)
    torch.testing.assert_close(t_to_noise_level(noise_level_to_t(t)), t, rtol=0, atol=eps)
    # t = 0 is pure noise (s = 1, diffusers timestep 1000); t = 1 is data (s = 0, timestep 0).
    assert (t_to_noise_level(0.0), t_to_noise_level(1.0)) == (1.0, 0.0)
    assert (t_to_diffusers_timestep(0.0), t_to_diffusers_timestep(1.0)) == (1000.0, 0.0)
    assert t_to_diffusers_timestep(0.0, num_train_timesteps=50) == 50.0
    ts = t_to_diffusers_timestep(t)
    assert ts.shape == t.shape and ts.dtype == F64
    # One scaling more: a few epsilons of a value in [0, 1].
    torch.testing.assert_close(diffusers_timestep_to_t(ts), t, rtol=0, atol=4 * eps)
    torch.testing.assert_close(
        diffusers_timestep_to_t(t_to_diffusers_timestep(t, 7.0), 7.0), t, rtol=0, atol=4 * eps
    )


def test_velocity_conventions_round_trip_exactly(gen: torch.Generator) -> None:
    v = torch.randn(B, D, generator=gen)
    assert torch.equal(
        velocity_from_noise_level_convention(velocity_to_noise_level_convention(v)), v
    )
    assert torch.equal(
        velocity_to_noise_level_convention(velocity_from_noise_level_convention(v)), v
    )


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_timestep_scale_errors(bad: float) -> None:
    with pytest.raises(ValueError, match=r"num_train_timesteps must be a finite number > 0"):
        t_to_diffusers_timestep(torch.zeros(2), bad)
    with pytest.raises(ValueError, match=r"num_train_timesteps must be a finite number > 0"):
        diffusers_timestep_to_t(torch.zeros(2), bad)
    with pytest.raises(ValueError, match=r"time_scale must be a finite number > 0"):
        NoiseLevelConventionAdapter(_smooth_velocity, time_scale=bad)


def test_convention_adapter_errors() -> None:
    with pytest.raises(TypeError, match="num_train_timesteps must be a number"):
        t_to_diffusers_timestep(torch.zeros(2), "1000")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="net must be callable"):
        NoiseLevelConventionAdapter(None)  # type: ignore[arg-type]


def test_sd3_oracle_gives_our_target_velocity(gen: torch.Generator) -> None:
    # In the SD3 convention z_s = (1 - s) x + s eps and the regression target is eps - x.
    # An oracle SD3 net returning that target must become our v_target = x1 - x0 (x1 = x,
    # x0 = eps), and must be called with timestep 1000 s.
    x, eps = (
        torch.randn(B, D, generator=gen, dtype=F64),
        torch.randn(B, D, generator=gen, dtype=F64),
    )
    t = torch.tensor([0.0, 0.3, 0.9], dtype=F64)
    s = 1 - t
    z = (1 - s)[:, None] * x + s[:, None] * eps
    seen: dict[str, Tensor | None] = {}

    def sd3_oracle(z_: Tensor, timestep: Tensor, cond: Tensor | None = None) -> Tensor:
        seen["timestep"], seen["cond"] = timestep, cond
        return eps - x

    sample = AffinePath(LinearSchedule()).sample(eps, x, t)
    # float64: the two conventions build the same point with different roundings.
    torch.testing.assert_close(z, sample.xt, rtol=0, atol=1e-15)
    labels = torch.tensor([1, 0, 1])
    v = NoiseLevelConventionAdapter(sd3_oracle)(z, t, labels)
    assert torch.equal(v, sample.v_target)  # -(eps - x) and x - eps are the same floats
    torch.testing.assert_close(seen["timestep"], 1000 * s, rtol=0, atol=0)
    assert seen["cond"] is labels


def test_time_scale_one_passes_the_noise_level(gen: torch.Generator) -> None:
    seen: dict[str, Tensor] = {}

    def net(z: Tensor, s: Tensor, cond: Tensor | None = None) -> Tensor:
        seen["s"] = s
        return z

    t = torch.rand(B, generator=gen, dtype=F64)
    NoiseLevelConventionAdapter(net, time_scale=1)(torch.zeros(B, D, dtype=F64), t)
    assert torch.equal(seen["s"], 1 - t)


def _sd3_net(z: Tensor, timestep: Tensor, cond: Tensor | None = None) -> Tensor:
    """A nonlinear network in the SD3 convention (output = d z / d s)."""
    s = timestep / 1000
    return torch.tanh(z.flip(1)) * (1 + s[:, None]) - s[:, None] ** 2


@pytest.mark.parametrize("num_steps", [1, 7])
def test_euler_steps_agree_across_conventions(num_steps: int, gen: torch.Generator) -> None:
    # diffusers' FlowMatchEuler step: z_{s'} = z_s + (s' - s) v_sd3(z_s, 1000 s), s: 1 -> 0.
    # Our Euler on the adapted field, t: 0 -> 1 with t = 1 - s, must give the same states.
    z0 = torch.randn(B, D, generator=gen, dtype=F64)
    grid = make_grid("uniform", num_steps, dtype=F64)
    sigmas = 1 - grid
    z, theirs = z0, [z0]
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        z = z + (s_next - s) * _sd3_net(z, torch.full((B,), 1000 * float(s), dtype=F64))
        theirs.append(z)
    ours = solve(NoiseLevelConventionAdapter(_sd3_net), z0, grid, Euler(), save_trajectory=True)
    assert ours.trajectory is not None and ours.trajectory.shape == (num_steps + 1, B, D)
    # float64; step sizes (t' - t) and -(s' - s) differ only by the rounding of 1 - t.
    torch.testing.assert_close(ours.trajectory, torch.stack(theirs), rtol=1e-13, atol=1e-13)
