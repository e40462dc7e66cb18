"""Two-time objectives on the Gaussian oracle: each target is exact at the exact flow map.

The oracle's flow map ``X(x, s, t)`` is known in closed form, so ``ExactAverageVelocity`` is the
ideal two-time network. MeanFlow's JVP target, SplitMeanFlow's/PSD's split target and the
LSD/ESD residuals are evaluated with it (float64) and must reproduce it (zero residual); the
JVP itself is checked against central finite differences; recursive interval splitting
converges to the exact average velocity.
"""

import copy
import json

import pytest
import torch

from flowmatch.couplings import IndependentCoupling
from flowmatch.data import Batch
from flowmatch.fewstep import MeanFlowStep, SplitMeanFlowStep, meanflow_target, split_target
from flowmatch.fewstep.flowmap import (
    EulerianStep,
    LagrangianStep,
    eulerian_residual,
    lagrangian_terms,
)
from flowmatch.fewstep.splitting import ProgressiveStep
from flowmatch.interfaces import CondSpec
from flowmatch.models import MLP, AverageVelocityMap
from flowmatch.objectives import OBJECTIVES, TrainingParts
from flowmatch.paths import AffinePath, CosineSchedule
from flowmatch.solvers import FlowMapSampler, solve
from flowmatch.sources import GaussianSource
from flowmatch.times import UniformTime, make_grid
from oracles import ExactAverageVelocity, GaussianOracle

D = torch.float64


@pytest.fixture(params=["linear", "cosine"])
def oracle(request):
    schedule = CosineSchedule() if request.param == "cosine" else None
    return GaussianOracle(torch.tensor([1.5, -0.5, 0.25], dtype=D), 0.4, schedule)


def _points(oracle, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = 0.05 + 0.8 * torch.rand(n, generator=g, dtype=D)
    t = s + (0.95 - s) * torch.rand(n, generator=g, dtype=D)
    x = oracle.flow(oracle.sample_x0(n, g), s)  # states on the flow at time s
    return x, s, t


def test_exact_average_velocity_reproduces_the_flow_map(oracle):
    x, s, t = _points(oracle)
    u = ExactAverageVelocity(oracle)
    torch.testing.assert_close(x + (t - s)[:, None] * u(x, s, t_end=t), oracle.flow_map(x, s, t))


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_flow_map_sampler_with_the_exact_map_samples_exactly_in_any_number_of_steps(oracle, steps):
    # The flow-map sampler composes X(x, t_k, t_{k+1}) along any grid: with the exact map,
    # 1, 2 or 4 steps (on a non-uniform grid too) all give the exact ODE endpoint.
    x0 = oracle.sample_x0(64, torch.Generator().manual_seed(1))
    fmap = AverageVelocityMap(ExactAverageVelocity(oracle))
    for kind in ("uniform", "shifted"):
        sol = solve(fmap, x0, make_grid(kind, steps, dtype=D), FlowMapSampler())
        assert sol.nfe == steps
        torch.testing.assert_close(sol.x, oracle.flow(x0, 1.0), atol=1e-10, rtol=1e-10)


def test_meanflow_target_at_the_exact_map_is_the_exact_map(oracle):
    x, s, t = _points(oracle)
    net = ExactAverageVelocity(oracle)
    u, target = meanflow_target(net, x, s, t, oracle.velocity(x, s), None)
    torch.testing.assert_close(target, u, atol=1e-10, rtol=1e-10)
    assert not target.requires_grad


def test_meanflow_jvp_target_equals_finite_differences():
    torch.manual_seed(0)
    net = MLP(3, hidden=32, depth=2, time_inputs=2).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, generator=g, dtype=D)
    s, t = (
        torch.rand(16, generator=g, dtype=D) * 0.5,
        0.5 + torch.rand(16, generator=g, dtype=D) / 2,
    )
    v = torch.randn(16, 3, generator=g, dtype=D)
    _, target = meanflow_target(net, x, s, t, v, None)
    eps = 1e-7  # the time embedding has frequencies up to 1000: keep the truncation error small
    with torch.no_grad():
        fd = net(x + eps * v, s + eps, None, t_end=t) - net(x - eps * v, s - eps, None, t_end=t)
    expected = v + (t - s)[:, None] * fd / (2 * eps)
    torch.testing.assert_close(target, expected, atol=1e-6, rtol=1e-6)


def test_split_target_at_the_exact_map_is_the_exact_map(oracle):
    x, s, t = _points(oracle)
    net = ExactAverageVelocity(oracle)
    lam = torch.rand(s.shape, generator=torch.Generator().manual_seed(3), dtype=D)
    torch.testing.assert_close(split_target(net, x, s, t, lam, None), net(x, s, t_end=t))


class _Halving(torch.nn.Module):
    """``u_k``: interval splitting applied recursively ``k`` times, from the Euler velocity."""

    def __init__(self, oracle, k):
        super().__init__()
        self.oracle, self.k = oracle, k

    def forward(self, x, s, cond=None, t_end=None):
        if self.k == 0 or t_end is None:
            return self.oracle.velocity(x, s)
        half = torch.full_like(s, 0.5)
        return split_target(_Halving(self.oracle, self.k - 1), x, s, t_end, half, None)


def test_recursive_splitting_converges_to_the_exact_average_velocity(oracle):
    x, s, t = _points(oracle, n=32)
    exact = ExactAverageVelocity(oracle)(x, s, t_end=t)
    errors = [float((_Halving(oracle, k)(x, s, t_end=t) - exact).abs().max()) for k in range(7)]
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False))  # monotone
    assert errors[-1] < errors[0] / 30  # first order: 2^6 = 64 times smaller


def test_lagrangian_and_eulerian_residuals_vanish_at_the_exact_map(oracle):
    x, s, t = _points(oracle)
    net = ExactAverageVelocity(oracle)
    xt, dxdt = lagrangian_terms(net, x, s, t, None)
    torch.testing.assert_close(xt, oracle.flow_map(x, s, t))
    torch.testing.assert_close(dxdt, oracle.velocity(xt, t), atol=1e-10, rtol=1e-10)
    u, res = eulerian_residual(net, x, s, t, oracle.velocity(x, s), None)
    torch.testing.assert_close(res, torch.zeros_like(res), atol=1e-10, rtol=0)


STEPS = [MeanFlowStep, SplitMeanFlowStep, ProgressiveStep, LagrangianStep, EulerianStep]


@pytest.mark.parametrize("cls", STEPS)
def test_losses_vanish_at_the_exact_map_with_the_oracle_as_teacher(cls, oracle):
    # With the exact velocity as teacher every term (diagonal and interval) is exactly 0.
    path = AffinePath(oracle.schedule)
    kwargs = {"norm_p": 0.0} if cls is MeanFlowStep else {}
    step = cls(path, UniformTime(), GaussianSource(), ratio=0.5, **kwargs)
    g = torch.Generator().manual_seed(0)
    batch = Batch(oracle.sample_x1(128, g))
    net = ExactAverageVelocity(oracle)
    out = step({"model": net, "teacher": oracle}, batch, g)
    assert out.loss.shape == (128,) and float(out.loss.max()) < 1e-18


@pytest.mark.parametrize("cls", STEPS)
def test_steps_backpropagate_into_a_two_time_mlp(cls):
    torch.manual_seed(0)
    net = MLP(2, hidden=16, depth=2, time_inputs=2)
    out = cls(ratio=0.5)(
        {"model": net, "model.ema": copy.deepcopy(net)},  # LSD's self-teacher: the EMA
        Batch(torch.randn(16, 2)),
        torch.Generator().manual_seed(0),
    )
    out.loss.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_lsd_reads_its_self_teacher_from_the_ema_weights():
    torch.manual_seed(0)
    net = MLP(2, hidden=16, depth=2, time_inputs=2).double()
    ema = copy.deepcopy(net)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(0.1 * torch.randn_like(p))
    batch = Batch(torch.randn(32, 2, dtype=D))

    def loss(step, modules):
        return step(modules, batch, torch.Generator().manual_seed(0)).loss

    lsd = LagrangianStep(ratio=0.5)
    assert lsd.self_teacher == "ema" and lsd.reads_ema == ("model",)
    current = LagrangianStep(ratio=0.5, self_teacher="current")
    assert current.reads_ema == () and EulerianStep().self_teacher == "current"
    # the EMA equal to the net gives the current-weights loss; another EMA another loss
    torch.testing.assert_close(
        loss(lsd, {"model": net, "model.ema": net}), loss(current, {"model": net})
    )
    assert not torch.allclose(
        loss(lsd, {"model": net, "model.ema": ema}), loss(current, {"model": net})
    )
    with pytest.raises(ValueError, match=r"reads the EMA weights as modules\['model.ema'\]"):
        loss(lsd, {"model": net})
    with pytest.raises(ValueError, match="unknown self_teacher"):
        LagrangianStep(self_teacher="teacher")


def test_meanflow_primal_gradient_equals_plain_forward_gradient():
    # One JVP gives the prediction with the same gradient as a plain forward.
    torch.manual_seed(0)
    net = MLP(2, hidden=16, depth=2, time_inputs=2).double()
    x, s, t, v = (
        torch.randn(8, 2, dtype=D),
        torch.rand(8, dtype=D),
        torch.ones(8, dtype=D),
        torch.randn(8, 2, dtype=D),
    )
    u, _ = meanflow_target(net, x, s, t, v, None)
    a = torch.autograd.grad(u.square().sum(), list(net.parameters()))
    b = torch.autograd.grad(net(x, s, None, t_end=t).square().sum(), list(net.parameters()))
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(ga, gb)


def test_meanflow_cfg_target_uses_the_guided_velocity():
    torch.manual_seed(0)
    net = MLP(2, hidden=16, depth=2, time_inputs=2, num_classes=3).double()
    step = MeanFlowStep(guidance=2.0, null_label=3)
    x, s = torch.randn(4, 2, dtype=D), torch.rand(4, dtype=D)
    v = torch.randn(4, 2, dtype=D)
    labels = torch.tensor([0, 1, 3, 2])
    out = step._guided(net, x, s, v, labels)
    with torch.no_grad():
        u_null = net(x, s, torch.full_like(labels, 3), t_end=s)
    expected = 2.0 * v - u_null
    torch.testing.assert_close(out[[0, 1, 3]], expected[[0, 1, 3]])
    torch.testing.assert_close(out[2], v[2])  # dropped label: the plain velocity


def test_registered_kinds_build_from_parts():
    parts = TrainingParts(
        AffinePath(), IndependentCoupling(), UniformTime(), GaussianSource(), "velocity", CondSpec()
    )
    for kind in ("meanflow", "splitmeanflow", "flowmap_lsd", "flowmap_esd", "flowmap_psd"):
        step = OBJECTIVES.build(OBJECTIVES.config(kind, ratio=0.5), parts=parts)
        assert (
            step.field({"model": MLP(2, hidden=8, depth=1, time_inputs=2)}).field_kind == "flow_map"
        )


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="ratio must be in"):
        MeanFlowStep(ratio=1.5)
    with pytest.raises(ValueError, match="loss must be one of"):
        SplitMeanFlowStep(loss="l1")
    with pytest.raises(ValueError, match="null_label"):
        MeanFlowStep(guidance=3.0)
    with pytest.raises(ValueError, match="guidance_interval"):
        OBJECTIVES.config("meanflow", guidance_interval=(0.5, 0.2))
    # CFG folded into the target swaps labels only: runs on values/context are refused.
    for cond, kinds in ((CondSpec(), "no conditions"), (CondSpec(values_dim=1), r"\['values'\]")):
        parts = TrainingParts(
            AffinePath(), IndependentCoupling(), UniformTime(), GaussianSource(), "velocity", cond
        )
        with pytest.raises(
            ValueError,
            match=rf"guidance=2.0 needs a run conditioned on labels only \(this one has {kinds}\)",
        ):
            OBJECTIVES.build(OBJECTIVES.config("meanflow", guidance=2.0), parts=parts)


class _Compiled(torch.nn.Module):
    """Stands in for torch.compile's wrapper: forwards to ``_orig_mod``."""

    def __init__(self, net):
        super().__init__()
        self._orig_mod = net

    def forward(self, *args, **kwargs):
        return self._orig_mod(*args, **kwargs)


@pytest.mark.parametrize("cls", [MeanFlowStep, SplitMeanFlowStep, LagrangianStep])
def test_wrapped_modules_give_the_same_loss_and_gradients(cls):
    # Under DDP/compile the JVP runs on the plain module and the prediction through the
    # wrapper; the result must not change.
    torch.manual_seed(0)
    net = MLP(2, hidden=16, depth=2, time_inputs=2).double()
    batch = Batch(torch.randn(32, 2, dtype=D))
    grads = []
    for module in (net, _Compiled(net)):
        net.zero_grad()
        mods = {"model": module, "model.ema": net}
        out = cls(ratio=0.5)(mods, batch, torch.Generator().manual_seed(0))
        out.loss.mean().backward()
        grads.append((out.loss.detach(), [p.grad.clone() for p in net.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)


def test_lsd_runs_sample_with_the_usual_ema_and_keep_a_slow_one_for_the_self_teacher(tmp_path):
    from flowmatch import api

    sets = ["data.name=moons", "data.n_train=512", "data.n_test=256", "model.hidden=16"]
    sets += ["objective.kind=flowmap_lsd", "train.batch_size=32", "train.checkpoint_every=5"]
    cfg, train_ds, test_ds = api.resolve_config(overrides=sets, steps=10)
    assert cfg.train.ema_warmup is True  # the run's sampling EMA keeps its warm-up
    api.train_run(cfg, train_ds, out_dir=tmp_path / "a", test_ds=test_ds)
    ckpt = tmp_path / "a" / "checkpoints" / "step_0000010"
    assert (ckpt / "model_teacher.ema.safetensors").is_file()  # the self-teacher's average
    state = json.loads((ckpt / "state.json").read_text())["ema"]
    assert state["model_teacher"]["num_updates"] == state["model"]["num_updates"] == 10
    # resumed from step 5, the run (self-teacher included) is the same bits as one of 10 steps
    cfg5, _, _ = api.resolve_config(overrides=sets, steps=5)
    api.train_run(cfg5, train_ds, out_dir=tmp_path / "b", test_ds=test_ds)
    api.train_run(cfg, train_ds, out_dir=tmp_path / "b", test_ds=test_ds, resume=True)
    for f in ("model.safetensors", "model_teacher.ema.safetensors", "ema.safetensors"):
        a = (ckpt / f).read_bytes()
        assert a == (tmp_path / "b" / "checkpoints" / "step_0000010" / f).read_bytes()
