"""sCM's TrigFlow adapter and loss, the BOSS grid, FreeFlow: checked on the Gaussian oracle."""

import itertools
import math

import pytest
import torch

from flowmatch.data import Batch
from flowmatch.fewstep.boss import BossStep, boss_grid, euler_trajectory, node_states
from flowmatch.fewstep.freeflow import FreeFlowStep
from flowmatch.fewstep.scm import (
    FlowToTrigFlow,
    SCMStep,
    TrigFlowODE,
    fm_from_trig_time,
    trig_from_fm_time,
)
from flowmatch.fewstep.store import TeacherBatch
from flowmatch.models import MLP
from flowmatch.solvers import Dopri5, solve
from flowmatch.times import make_grid
from flowmatch.times.boss import bellman_grid, bellman_path, euler_jump_costs
from oracles import ExactAverageVelocity, GaussianOracle

D = torch.float64


@pytest.fixture
def oracle():
    return GaussianOracle(torch.tensor([1.0, -2.0, 0.5], dtype=D), 0.3)


def _noise(n, seed=0):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=D)


# ------------------------------------------------------------------ sCM / TrigFlow


def test_trigflow_time_maps_are_inverse():
    t = torch.linspace(0.01, 0.99, 11, dtype=D)
    for sd in (0.5, 1.0, 2.0):
        torch.testing.assert_close(fm_from_trig_time(trig_from_fm_time(t, sd), sd), t)


@pytest.mark.parametrize("sigma_d", [0.5, 1.0])
def test_trigflow_adapter_reproduces_the_teachers_samples(oracle, sigma_d):
    eps = _noise(64)
    solver = Dopri5(atol=1e-10, rtol=1e-10)
    fm = solve(oracle, eps, make_grid("uniform", 1, dtype=D), solver).x
    ode = TrigFlowODE(FlowToTrigFlow(oracle, sigma_d))
    trig = solve(ode, sigma_d * eps, make_grid("uniform", 1, dtype=D), solver).x
    torch.testing.assert_close(trig, fm, atol=1e-7, rtol=0)
    torch.testing.assert_close(fm, oracle.flow(eps, 1.0), atol=1e-7, rtol=0)
    back = solve(ode, trig, make_grid("uniform", 1, dtype=D).flip(0), solver).x  # round trip
    torch.testing.assert_close(back, sigma_d * eps, atol=1e-6, rtol=0)


def test_consistency_function_is_one_euler_jump(oracle):
    sd = 0.7
    trig = FlowToTrigFlow(oracle, sd)
    tau = torch.rand(16, generator=torch.Generator().manual_seed(1), dtype=D) * math.pi / 2
    x_tau = _noise(16) * 2
    c, s = torch.cos(tau)[:, None], torch.sin(tau)[:, None]
    f = c * x_tau - s * sd * trig(x_tau / sd, tau)
    t = fm_from_trig_time(tau, sd)
    x_t = x_tau / (c + sd * s)
    torch.testing.assert_close(f, x_t + (1 - t)[:, None] * oracle(x_t, t), atol=1e-12, rtol=0)


class _ExactEndpoint(torch.nn.Module):
    """A one-time net whose Euler jump to t = 1 is the oracle's exact flow map."""

    def __init__(self, oracle):
        super().__init__()
        self.u = ExactAverageVelocity(oracle)

    def forward(self, x, t, cond=None):
        return self.u(x, t, t_end=torch.ones_like(t))


def test_scm_tangent_vanishes_for_the_exact_consistency_function(oracle):
    step = SCMStep(sigma_d=1.0, warmup=0)
    g = torch.Generator().manual_seed(0)
    batch = Batch(oracle.sample_x1(256, g))
    out = step({"model": _ExactEndpoint(oracle), "teacher": oracle}, batch, g)
    assert float(out.loss.max()) < 1e-16  # g = 0 <=> d f / d tau = 0 along the teacher's ODE
    # A student that is the teacher itself (not consistent) has a non-zero tangent.
    assert float(step({"model": oracle, "teacher": oracle}, batch, g).loss.mean()) > 1e-4


def test_scm_warm_up_reads_the_step_and_needs_a_teacher(oracle):
    torch.manual_seed(0)
    net = MLP(3, hidden=16, depth=2).double()
    step = SCMStep(warmup=100)
    x = oracle.sample_x1(8, torch.Generator().manual_seed(0))
    early = step(
        {"model": net, "teacher": oracle}, TeacherBatch(x, step=0), torch.Generator().manual_seed(1)
    )
    late = step(
        {"model": net, "teacher": oracle},
        TeacherBatch(x, step=100),
        torch.Generator().manual_seed(1),
    )
    assert not torch.allclose(early.loss, late.loss)
    late.loss.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="frozen teacher"):
        step({"model": net}, Batch(x), torch.Generator())
    assert step.field({"model": net}).field_kind == "flow_map"


# ------------------------------------------------------------------ BOSS


def test_bellman_path_is_the_brute_force_optimum():
    g = torch.Generator().manual_seed(0)
    m, k = 7, 3
    cost = torch.rand(m + 1, m + 1, generator=g, dtype=D).triu(1)
    cost = torch.where(torch.ones_like(cost).triu(1).bool(), cost, torch.inf)
    best = min(
        (sum(cost[a, b] for a, b in itertools.pairwise((0, *inner, m))), (0, *inner, m))
        for inner in itertools.combinations(range(1, m), k - 1)
    )
    path = bellman_path(cost, k)
    assert tuple(path) == best[1]
    with pytest.raises(ValueError, match="exceeds the 7 intervals"):
        bellman_path(cost, 8)


def test_boss_grid_has_less_jump_error_than_the_uniform_grid(oracle):
    x0 = _noise(256)
    times, states, vels = euler_trajectory(oracle, x0, 100)
    cost = euler_jump_costs(times, states, vels)
    grid = boss_grid(oracle, x0, 4, fine_steps=100)
    assert grid[0] == 0 and grid[-1] == 1 and len(grid) == 5
    idx = torch.round(grid.double() * 100).long().tolist()
    uniform = [0, 25, 50, 75, 100]
    total = sum(float(cost[a, b]) for a, b in itertools.pairwise(idx))
    assert total <= sum(float(cost[a, b]) for a, b in itertools.pairwise(uniform))
    torch.testing.assert_close(bellman_grid(times, states, vels, 4), grid)
    nodes = node_states(oracle, x0, grid, 100)
    assert nodes.shape == (256, 5, 3) and torch.equal(nodes[:, 0], x0)


def test_boss_step_regresses_onto_the_chord():
    net = MLP(2, hidden=8, depth=1)
    x0, x1 = torch.randn(5, 2), torch.randn(5, 2)
    t0, t1 = torch.full((5,), 0.2), torch.full((5,), 0.7)
    out = BossStep()({"model": net}, TeacherBatch(x1, x0=x0, extra={"t0": t0, "t1": t1}), None)
    expected = (net(x0, t0) - (x1 - x0) / 0.5).square().mean(1)
    torch.testing.assert_close(out.loss, expected)
    with pytest.raises(ValueError, match="Bellman segments"):
        BossStep()({"model": net}, Batch(x1, x0=x0), None)


# ------------------------------------------------------------------ FreeFlow


def test_freeflow_predictor_and_corrector_vanish_at_the_exact_map(oracle):
    step = FreeFlowStep(corrector_weight=1.0)
    g = torch.Generator().manual_seed(0)
    mods = {"model": ExactAverageVelocity(oracle), "fake": oracle, "teacher": oracle}
    out = step(mods, Batch(torch.zeros(128, 3, dtype=D)), g)
    assert float(out.logs["predictor"]) < 1e-18
    assert float(out.logs["corrector_gap"]) < 1e-18


def test_freeflow_trains_the_student_and_the_fake_net():
    torch.manual_seed(0)
    student, fake = MLP(2, hidden=16, depth=2, time_inputs=2), MLP(2, hidden=16, depth=2)
    teacher = MLP(2, hidden=16, depth=2)
    out = FreeFlowStep()(
        {"model": student, "fake": fake, "teacher": teacher},
        Batch(torch.zeros(16, 2)),
        torch.Generator().manual_seed(0),
    )
    out.loss.mean().backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is not None for p in fake.parameters())
    assert FreeFlowStep(corrector_weight=0.0).trains == ("model",)
    with pytest.raises(ValueError, match="frozen teacher"):
        FreeFlowStep()({"model": student}, Batch(torch.zeros(4, 2)), torch.Generator())


def test_freeflow_and_scm_run_on_images():
    from flowmatch.models import UNet

    torch.manual_seed(0)
    kw = {"in_channels": 1, "image_size": 8, "base_channels": 8, "channel_mults": (1, 2)}
    student, teacher = UNet(**kw, time_inputs=2), UNet(**kw)
    batch = Batch(torch.zeros(4, 1, 8, 8))
    out = FreeFlowStep()(
        {"model": student, "fake": UNet(**kw), "teacher": teacher},
        batch,
        torch.Generator().manual_seed(0),
    )
    assert out.loss.shape == (4,)
    out = SCMStep()(
        {"model": UNet(**kw), "teacher": teacher},
        Batch(torch.randn(4, 1, 8, 8)),
        torch.Generator().manual_seed(0),
    )
    assert out.loss.shape == (4,) and torch.isfinite(out.loss).all()
