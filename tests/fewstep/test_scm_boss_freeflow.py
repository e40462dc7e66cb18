"""sCM's TrigFlow adapter and loss, the BOSS grid, FreeFlow: checked on the Gaussian oracle."""

import itertools
import math

import pytest
import torch

from flowmatch.data import Batch
from flowmatch.fewstep.boss import BossStep, boss_grid, node_states, reference_trajectory
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
from flowmatch.sampling.boss import step_costs
from flowmatch.solvers import Dopri5, Euler, solve
from flowmatch.times import make_grid
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


def test_boss_grid_has_less_jump_error_than_the_uniform_grid(oracle):
    # The straightening's grid is the sampling suite's BOSS grid for Euler; its nodes are the
    # states of the same reference trajectory the costs were measured on.
    x0 = _noise(256)
    cost, fine = step_costs(oracle, x0, Euler(), fine_steps=40)
    grid = boss_grid(oracle, x0, 4, fine_steps=40)
    assert grid[0] == 0 and grid[-1] == 1 and len(grid) == 5 and (grid.diff() > 0).all()
    idx = torch.round(grid.double() * 40).long().tolist()
    uniform = [0, 10, 20, 30, 40]
    total = sum(float(cost[a, b]) for a, b in itertools.pairwise(idx))
    assert total < sum(float(cost[a, b]) for a, b in itertools.pairwise(uniform))
    torch.testing.assert_close(fine[idx], grid)
    nodes = node_states(oracle, x0, grid, 40)
    assert nodes.shape == (256, 5, 3) and torch.equal(nodes[:, 0], x0)
    ref = reference_trajectory(oracle, x0, 40)
    assert torch.equal(nodes, ref[idx].transpose(0, 1))
    # The reference is the exact flow to RK4 accuracy: the last node is the oracle's sample.
    exact = solve(oracle, x0, make_grid("uniform", 1, dtype=D), Dopri5(atol=1e-10, rtol=1e-10)).x
    torch.testing.assert_close(nodes[:, -1], exact, atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="is not on the 40-step fine grid"):
        node_states(oracle, x0, torch.tensor([0.0, 0.333, 1.0], dtype=D), 40)


class _PiecewiseAffine(torch.nn.Module):
    """``v(x, t) = a_j x + b_j`` on the grid's segment ``j`` containing ``t`` (float64)."""

    def __init__(self, grid):
        super().__init__()
        self.register_buffer("grid", grid)
        k = len(grid) - 1
        self.a = torch.nn.Parameter(torch.zeros(k, dtype=D))
        self.b = torch.nn.Parameter(torch.zeros(k, 3, dtype=D))

    def forward(self, x, t, cond=None):
        j = (torch.searchsorted(self.grid, t.double(), right=True) - 1).clamp(0, len(self.a) - 1)
        return self.a[j][:, None] * x + self.b[j]


def test_straightening_makes_k_euler_steps_on_the_boss_grid_follow_the_teacher(oracle, tmp_path):
    # The Gaussian oracle's flow is affine in x0 (isotropic), so its chords between BOSS nodes
    # are affine in the start state and a per-segment affine model can fit them exactly. The
    # least-squares fit is BossStep's minimiser: zero loss, zero gradient, and K Euler steps
    # on the grid then give the teacher's samples, which the (curved) teacher cannot.
    from flowmatch.fewstep.boss import SegmentBatches, make_node_store
    from flowmatch.fewstep.store import ChunkStore

    k = 3
    grid = boss_grid(oracle, _noise(256), k, fine_steps=60)
    store = ChunkStore(tmp_path / "nodes", num=512, chunk=256, meta={"oracle": 1})
    make_node_store(store, oracle, grid, 60, lambda c, n: _noise(n, seed=10 + c))
    nodes = node_states(oracle, _noise(64, seed=5), grid, 60)
    model = _PiecewiseAffine(grid)
    with torch.no_grad():
        for j in range(k):
            x, h = nodes[:, j], grid[j + 1] - grid[j]
            y = (nodes[:, j + 1] - x) / h
            design = torch.cat([x.reshape(-1, 1), torch.eye(3, dtype=D).repeat(len(x), 1)], 1)
            sol = torch.linalg.lstsq(design, y.reshape(-1, 1)).solution[:, 0]
            model.a[j], model.b[j] = sol[0], sol[1:]
    loss = BossStep()({"model": model}, SegmentBatches(store, grid, 256).batch_at(0), None).loss
    assert float(loss.max()) < 1e-20
    loss.mean().backward()
    assert float(model.a.grad.abs().max()) < 1e-9 and float(model.b.grad.abs().max()) < 1e-9
    x0 = _noise(512, seed=99)
    exact = oracle.flow(x0, 1.0)
    student = solve(model, x0, grid, Euler()).x
    teacher = solve(oracle, x0, grid, Euler()).x
    assert float((student - exact).square().sum(1).mean()) < 1e-12
    assert float((teacher - exact).square().sum(1).mean()) > 1e-3


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
