"""FlowMatchingObjective: loss shape, correctness on the Gaussian oracle, targets, dropout.

Correctness is checked without training: for N(0, I) -> N(mu, s^2 I) the minimiser of the
loss is known in closed form (tests/oracles.py), and so is its irreducible value.
"""

from __future__ import annotations

import math

import pytest
import torch

from flowmatch.models import MLP
from flowmatch.objectives import WEIGHTINGS, FlowMatchingObjective, LossOutput, loss_weight
from flowmatch.paths import SCHEDULES, AffinePath, CosineSchedule, Schedule
from flowmatch.times import LogitNormalTime
from oracles import GaussianOracle

F64 = torch.float64
MU = torch.tensor([1.0, -2.0, 0.5], dtype=F64)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _zero(x, t, cond=None):
    return torch.zeros_like(x)


def _conditional_variance(schedule: Schedule, t: float, s: float, a: str) -> float:
    """Var(y | x_t) per coordinate for y = c1 x1 + c0 x0 by Gaussian conditioning.

    ``a`` picks (c1, c0): velocity (alpha', sigma'), x1 (1, 0), x0 (0, 1). With
    x_t = alpha x1 + sigma x0: Var(y | x_t) = Var(y) - Cov(y, x_t)^2 / Var(x_t).
    """
    c = schedule(torch.tensor(t, dtype=F64))
    c1, c0 = {"velocity": (c.d_alpha, c.d_sigma), "x1": (1.0, 0.0), "x0": (0.0, 1.0)}[a]
    var_y = c1**2 * s**2 + c0**2
    cov = c1 * c.alpha * s**2 + c0 * c.sigma
    var_x = c.alpha**2 * s**2 + c.sigma**2
    return float(var_y - cov**2 / var_x)


def _batch(oracle: GaussianOracle, n: int, t: float, seed: int = 0):
    g = _gen(seed)
    x1, x0 = oracle.sample_x1(n, g), oracle.sample_x0(n, g)
    return x1, x0, torch.full((n,), t, dtype=F64)


# --------------------------------------------------------------------------- shapes, dtypes
@pytest.mark.parametrize("shape", [(4, 4), (6, 2), (3, 2, 4, 4)])
def test_per_sample_loss_shape(shape):
    x1 = torch.randn(shape, generator=_gen(), dtype=F64)
    out = FlowMatchingObjective()(_zero, x1, generator=_gen(1))
    assert isinstance(out, LossOutput)
    assert out.loss.shape == (shape[0],) and out.loss.dtype == F64
    assert (out.loss >= 0).all()


def test_low_precision_outputs_are_compared_in_float32():
    x1 = torch.randn(4, 3, dtype=torch.bfloat16)
    out = FlowMatchingObjective()(_zero, x1, generator=_gen())
    assert out.loss.dtype == torch.float32


def test_default_objective_with_mlp_has_gradients():
    net = MLP(dim=4, hidden=16, depth=2)
    out = FlowMatchingObjective()(net, torch.randn(4, 4, generator=_gen()), generator=_gen(1))
    assert out.loss.shape == (4,)
    out.loss.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_same_generator_same_loss():
    obj = FlowMatchingObjective(time_sampler=LogitNormalTime())
    x1 = torch.randn(8, 2, generator=_gen(), dtype=F64)
    a = obj(_zero, x1, generator=_gen(5)).loss
    b = obj(_zero, x1, generator=_gen(5)).loss
    assert torch.equal(a, b)


def test_times_reach_the_model_as_batch_vector():
    seen = {}

    def model(x, t, cond=None):
        seen["t"] = t
        return torch.zeros_like(x)

    x1 = torch.randn(5, 5, generator=_gen(), dtype=F64)
    FlowMatchingObjective(time_sampler=LogitNormalTime())(model, x1, generator=_gen())
    assert seen["t"].shape == (5,) and seen["t"].dtype == F64
    assert ((seen["t"] > 0) & (seen["t"] < 1)).all()


# --------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("t", [0.1, 0.3, 0.7, 0.95])
def test_least_squares_fit_recovers_oracle_velocity(t):
    # DESIGN 1.8(a): regressing the objective's target on x_t (per coordinate, at fixed t)
    # recovers the marginal velocity u_t(x) = mu + (sigma_t'/sigma_t)(x - t mu), an affine map.
    # Tolerance: 5 standard errors of the OLS slope sqrt(Var(v|x) / (n Var(x))) and of the
    # intercept sqrt(Var(v|x) / n) sqrt(1 + mean^2 / Var(x)) (bounded by 1 + |mean| / sd).
    s, n = 0.5, 100_000
    oracle = GaussianOracle(MU, s)
    obj = FlowMatchingObjective()
    x1, x0, tt = _batch(oracle, n, t)
    sample = obj.path.sample(x0, x1, tt)
    y = obj.path.target(sample, "velocity")
    xc = sample.xt - sample.xt.mean(0)
    slope = (xc * (y - y.mean(0))).sum(0) / xc.pow(2).sum(0)
    intercept = y.mean(0) - slope * sample.xt.mean(0)
    ref = x0[:1]
    want_slope = oracle.d_variance(t, ref)[0, 0] / (2 * oracle.variance(t, ref)[0, 0])
    want_intercept = oracle.velocity(torch.zeros_like(ref), t)[0]
    resid = _conditional_variance(obj.path.schedule, t, s, "velocity")
    se_slope = math.sqrt(resid / (n * oracle.variance(t, ref)[0, 0].item()))
    se_int = math.sqrt(resid / n) * (
        1 + (oracle.mean(t, ref)[0].abs() / oracle.variance(t, ref)[0, 0].sqrt())
    )
    assert ((slope - want_slope).abs() < 5 * se_slope).all(), (slope, want_slope)
    assert ((intercept - want_intercept).abs() < 5 * se_int).all(), (intercept, want_intercept)


CASES = [(name, pred) for name in SCHEDULES for pred in ("velocity", "x1", "x0")]


@pytest.mark.parametrize(("schedule_name", "prediction"), CASES)
@pytest.mark.parametrize("t", [0.2, 0.6, 0.9])
def test_oracle_loss_equals_irreducible_variance(schedule_name, prediction, t):
    # The ideal prediction (E[target | x_t]) attains E loss = Var(target | x_t), per
    # coordinate, derived by Gaussian conditioning; 5 standard errors of the mean loss.
    s, n = 0.7, 20_000
    schedule = SCHEDULES[schedule_name]()
    oracle = GaussianOracle(MU, s, schedule)
    model = {
        "velocity": oracle,
        "x1": lambda x, tt, cond=None: oracle.expected_x1(x, tt),
        "x0": lambda x, tt, cond=None: oracle.expected_x0(x, tt),
    }[prediction]
    obj = FlowMatchingObjective(AffinePath(schedule), prediction=prediction)
    x1, x0, tt = _batch(oracle, n, t, seed=1)
    loss = obj(model, x1, x0=x0, t=tt).loss
    want = _conditional_variance(schedule, t, s, prediction)
    se = loss.std().item() / math.sqrt(n)
    assert abs(loss.mean().item() - want) < 5 * se, (loss.mean().item(), want, se)


@pytest.mark.parametrize("t", [0.2, 0.8])
def test_oracle_velocity_minimises_the_loss(t):
    # For any perturbation delta(x): E loss(u + delta) = E loss(u) + E|delta(x_t)|^2 / D,
    # because the cross term E[(u - v) . delta | x_t] vanishes only at the minimiser u. The
    # paired difference (same samples) is checked within 5 of its standard errors.
    n, d = 20_000, MU.numel()
    oracle = GaussianOracle(MU, 1.3)
    obj = FlowMatchingObjective()
    x1, x0, tt = _batch(oracle, n, t, seed=2)
    base = obj(oracle, x1, x0=x0, t=tt).loss
    perturbations = {
        "constant": lambda x: x.new_tensor([0.1, -0.05, 0.02]).expand_as(x),
        "linear": lambda x: 0.05 * x,
        "nonlinear": lambda x: 0.1 * torch.sin(3 * x),
    }
    for name, delta in perturbations.items():
        loss = obj(lambda x, tt_, cond=None, f=delta: oracle(x, tt_) + f(x), x1, x0=x0, t=tt).loss
        diff = loss - base
        xt = obj.path.sample(x0, x1, tt).xt
        want = delta(xt).pow(2).sum(1).mean().item() / d
        se = diff.std().item() / math.sqrt(n)
        assert diff.mean().item() > 0, name
        assert abs(diff.mean().item() - want) < 5 * se, (name, diff.mean().item(), want)


@pytest.mark.parametrize("prediction", ["x1", "x0"])
@pytest.mark.parametrize("schedule", [SCHEDULES["linear"](), CosineSchedule()], ids=repr)
def test_endpoint_prediction_losses_rescale_the_velocity_loss(schedule, prediction):
    # Per sample: ||u - u_hat||^2 = (D_t / sigma_t)^2 ||x1 - x1_hat||^2 for an x1-prediction
    # converted to a velocity, (D_t / alpha_t)^2 ||x0 - x0_hat||^2 for x0 (ALGORITHMS A1).
    # Exact identity, so float64 round-off tolerance.
    path = AffinePath(schedule)
    g = _gen(3)
    x1, x0 = torch.randn(6, 6, generator=g, dtype=F64), torch.randn(6, 6, generator=g, dtype=F64)
    t = torch.linspace(0.1, 0.9, 6, dtype=F64)

    def net(x, tt, cond=None):
        return torch.tanh(x) + tt[:, None]

    def as_velocity(x, tt, cond=None):
        return path.convert(net(x, tt), src=prediction, dst="velocity", xt=x, t=tt)

    loss_pred = FlowMatchingObjective(path, prediction=prediction)(net, x1, x0=x0, t=t).loss
    loss_vel = FlowMatchingObjective(path)(as_velocity, x1, x0=x0, t=t).loss
    c = schedule(t)
    det = c.d_alpha * c.sigma - c.d_sigma * c.alpha
    factor = (det / (c.sigma if prediction == "x1" else c.alpha)) ** 2
    torch.testing.assert_close(loss_vel, factor * loss_pred, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("prediction", ["velocity", "x1", "x0"])
def test_targets_are_zero_loss_for_the_right_prediction(prediction):
    # A "model" that returns exactly the target of its parameterisation has zero loss.
    g = _gen(4)
    x1, x0 = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64)
    t = torch.rand(5, generator=g, dtype=F64)
    v = x1 - x0  # linear path
    target = {"velocity": v, "x1": x1, "x0": x0}[prediction]
    out = FlowMatchingObjective(prediction=prediction)(
        lambda x, tt, cond=None: target, x1, x0=x0, t=t
    )
    assert out.loss.abs().max().item() == 0.0


# --------------------------------------------------------------------------- weighting
def test_cosmap_weighting_multiplies_per_sample_loss():
    g = _gen(5)
    x1, x0 = torch.randn(6, 2, generator=g, dtype=F64), torch.randn(6, 2, generator=g, dtype=F64)
    t = torch.rand(6, generator=g, dtype=F64)
    plain = FlowMatchingObjective()(_zero, x1, x0=x0, t=t).loss
    weighted = FlowMatchingObjective(weighting="cosmap")(_zero, x1, x0=x0, t=t).loss
    torch.testing.assert_close(weighted, loss_weight("cosmap", t) * plain)


def test_cosmap_weight_is_a_symmetric_density():
    # w(t) = 2 / (pi (1 - 2t + 2t^2)) is the density of SD3's cosmap time change: it
    # integrates to 1 on [0, 1] (trapezoid, 1e5 intervals: error < 1e-9) and w(t) = w(1 - t).
    assert set(WEIGHTINGS) == {"none", "cosmap"}
    assert loss_weight("none", torch.rand(3)) is None
    t = torch.linspace(0, 1, 100_001, dtype=F64)
    w = loss_weight("cosmap", t)
    assert torch.trapezoid(w, t).item() == pytest.approx(1.0, abs=1e-9)
    torch.testing.assert_close(w, w.flip(0))


def test_unknown_weighting_raises():
    with pytest.raises(
        ValueError, match=r"unknown weighting 'snr'; choose one of \['none', 'cosmap'\]"
    ):
        loss_weight("snr", torch.rand(3))


# --------------------------------------------------------------------------- cond dropout
def test_cond_dropout_rate_and_null_label():
    # Each label is replaced by null_label independently with probability p: the dropped
    # fraction is within 5 binomial standard errors sqrt(p (1 - p) / n) of p, dropped labels
    # become exactly null_label and kept labels are unchanged.
    n, p, null = 20_000, 0.3, 10
    labels = torch.randint(0, 10, (n,), generator=_gen(6))
    seen = {}

    def model(x, t, cond=None):
        seen["cond"] = cond
        return torch.zeros_like(x)

    obj = FlowMatchingObjective(cond_dropout=p, null_label=null)
    obj(model, torch.zeros(n, 2), cond=labels, generator=_gen(7))
    got = seen["cond"]
    dropped = got == null
    assert got.shape == (n,) and got.dtype == labels.dtype
    assert abs(dropped.float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(got[~dropped], labels[~dropped])


def test_no_dropout_passes_labels_unchanged():
    labels = torch.arange(4)
    seen = {}

    def model(x, t, cond=None):
        seen["cond"] = cond
        return torch.zeros_like(x)

    FlowMatchingObjective(null_label=4)(model, torch.zeros(4, 4), cond=labels, generator=_gen())
    assert seen["cond"] is labels
    assert FlowMatchingObjective().drop_labels(labels) is labels


def test_drop_labels_is_reproducible():
    obj = FlowMatchingObjective(cond_dropout=0.5, null_label=-1)
    labels = torch.arange(100)
    assert torch.equal(obj.drop_labels(labels, _gen(8)), obj.drop_labels(labels, _gen(8)))


def test_pair_returns_sources_like_data():
    x1 = torch.randn(4, 3, dtype=F64)
    x0 = FlowMatchingObjective().pair(x1, generator=_gen(9))
    assert x0.shape == x1.shape and x0.dtype == F64
    assert torch.equal(x0, torch.randn(4, 3, generator=_gen(9), dtype=F64))


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"prediction": "score"},
            r"unknown prediction 'score'; choose one of \['velocity', 'x0', 'x1'\]",
        ),
        ({"prediction": "eps"}, "unknown prediction 'eps'"),
        ({"weighting": "snr"}, r"unknown weighting 'snr'; choose one of \['cosmap', 'none'\]"),
        ({"cond_dropout": 1.0, "null_label": 3}, r"cond_dropout must be in \[0, 1\), got 1.0"),
        ({"cond_dropout": -0.1, "null_label": 3}, r"cond_dropout must be in \[0, 1\), got -0.1"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FlowMatchingObjective(**kwargs)


def test_label_dropout_needs_null_label():
    # Dropout of values/context needs no null id, so the check runs when labels arrive.
    obj = FlowMatchingObjective(cond_dropout=0.1)
    with pytest.raises(ValueError, match="label dropout needs null_label"):
        obj(lambda x, t, cond=None: x, torch.zeros(4, 2), cond=torch.arange(4), generator=_gen())


def test_call_errors():
    obj, x1 = FlowMatchingObjective(), torch.zeros(4, 4)
    with pytest.raises(
        ValueError, match=r"model output must have the shape of x1 \(4, 4\), got \(4,\)"
    ):
        # B == D: a (B,) output would broadcast silently against (B, D) without the check.
        obj(lambda x, t, cond=None: x.sum(1), x1, generator=_gen())
    with pytest.raises(
        ValueError, match=r"cond must have batch size B = 4 \(labels \(B,\)\), got shape \(3,\)"
    ):
        obj(_zero, x1, cond=torch.zeros(3, dtype=torch.long), generator=_gen())
    with pytest.raises(ValueError, match=r"cond must have batch size B = 4.*got shape \(\)"):
        obj(_zero, x1, cond=torch.tensor(1), generator=_gen())
    with pytest.raises(ValueError, match=r"x1 must have shape \(B, \*D\)"):
        obj(_zero, torch.zeros(4), generator=_gen())
    with pytest.raises(TypeError, match="x1 must be a floating-point tensor"):
        obj(_zero, torch.zeros(4, 2, dtype=torch.long), generator=_gen())
    with pytest.raises(
        ValueError, match=r"x0 and x1 must have the same shape, got \(4, 3\) and \(4, 4\)"
    ):
        obj(_zero, x1, x0=torch.zeros(4, 3), generator=_gen())
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(4,\), got \(4, 1\)"):
        obj(_zero, x1, t=torch.zeros(4, 1), generator=_gen())


# ------------------------------------------------------------------ boundary contracts


@pytest.mark.parametrize(
    ("t", "error", "match"),
    [
        (torch.tensor([0.1, 0.5, 1.5, 0.2]), ValueError, r"t must lie in \[0, 1\], got .*1.5\]"),
        (torch.tensor([-0.1, 0.5, 0.5, 0.2]), ValueError, r"t must lie in \[0, 1\], got .*\[-0.1"),
        (torch.tensor([0.1, math.nan, 0.5, 0.2]), ValueError, r"t has 1 NaN value\(s\)"),
        (torch.tensor([0, 1, 0, 1]), TypeError, r"t must be a floating-point tensor .*int64"),
        ([0.1, 0.2, 0.3, 0.4], TypeError, r"t must be a torch.Tensor of shape \(B,\), got list"),
    ],
)
def test_times_outside_the_unit_interval_are_refused(t, error, match):
    with pytest.raises(error, match=match):
        FlowMatchingObjective()(_zero, torch.zeros(4, 2), t=t, generator=_gen())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_data_is_refused_at_the_boundary(bad):
    x1 = torch.zeros(4, 2)
    x1[2, 1] = bad
    obj = FlowMatchingObjective()
    with pytest.raises(ValueError, match=r"x1 has 1 non-finite value\(s\) \(NaN or inf\)"):
        obj(_zero, x1, generator=_gen())
    with pytest.raises(ValueError, match=r"x0 has 1 non-finite value\(s\)"):
        obj(_zero, torch.zeros(4, 2), x0=x1, generator=_gen())


def test_a_network_without_cond_is_told_the_expected_signature():
    class NoCond(torch.nn.Module):
        def forward(self, x, t):
            return x

    match = r"model must be called as model\(x, t, cond\) and so define forward\(x, t, cond=None\)"
    with pytest.raises(TypeError, match=match + r".*got NoCond.forward\(x, t\)"):
        FlowMatchingObjective()(NoCond(), torch.zeros(4, 2), generator=_gen())
    with pytest.raises(TypeError, match=match + r".*got \(x, t\)"):
        FlowMatchingObjective()(lambda x, t: x, torch.zeros(4, 2), generator=_gen())

    def broken(x, t, cond=None):  # a TypeError from inside the model is passed on as is
        return x + "a"

    with pytest.raises(TypeError, match="unsupported operand"):
        FlowMatchingObjective()(broken, torch.zeros(4, 2), generator=_gen())


def test_a_given_x0_is_coupled_unless_x0_paired():
    # objective(model, x1, x0=x0) applies the objective's coupling to x0 (here exact OT):
    # its loss equals the loss of the OT-matched pairs passed with x0_paired=True.
    from flowmatch.couplings import ExactOTCoupling

    g = _gen(3)
    x1, x0 = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    t = torch.rand(6, generator=g)
    obj = FlowMatchingObjective(coupling=ExactOTCoupling())
    model = MLP(2, hidden=8, depth=1, time_dim=8)
    paired, _ = ExactOTCoupling()(x0, x1, generator=_gen(4))
    assert not torch.equal(paired, x0)  # OT does re-pair these points
    coupled = obj(model, x1, x0=x0, t=t, generator=_gen(4)).loss
    as_given = obj(model, x1, x0=x0, x0_paired=True, t=t, generator=_gen(4)).loss
    matched = obj(model, x1, x0=paired, x0_paired=True, t=t, generator=_gen(4)).loss
    torch.testing.assert_close(coupled, matched, rtol=0, atol=0)
    assert not torch.equal(coupled, as_given)


def test_the_trainer_calls_the_unchecked_core(monkeypatch):
    # Input checks cost a host sync: the trainer, whose data were checked once, skips them.
    from flowmatch.data import ArrayDataset
    from flowmatch.objectives import flow_matching
    from flowmatch.train import TrainConfig, Trainer

    def fail(*args):
        raise AssertionError("per-step input check")

    monkeypatch.setattr(flow_matching, "_check_finite_inputs", fail)
    data = ArrayDataset(torch.randn(32, 2, generator=_gen()))
    cfg = TrainConfig(steps=2, batch_size=8, log_every=1)
    Trainer(MLP(2, hidden=8, depth=1, time_dim=8), FlowMatchingObjective(), data, cfg).fit()
    with pytest.raises(AssertionError, match="per-step input check"):
        FlowMatchingObjective()(_zero, torch.zeros(2, 2), generator=_gen())


def test_float_labels_are_refused():
    with pytest.raises(TypeError, match=r"cond labels must be an integer tensor .*float32"):
        FlowMatchingObjective()(_zero, torch.zeros(4, 2), cond=torch.zeros(4), generator=_gen())
