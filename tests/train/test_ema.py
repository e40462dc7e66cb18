"""EMA of weights: the warm-up schedule in closed form, buffers, state round-trip, exact resume
with the update count, and a short run where the EMA must not be worse than the raw weights."""

import json
import logging
import math
import statistics

import pytest
import torch
from torch import nn

from flowmatch.data import ArrayDataset
from flowmatch.models import MLP
from flowmatch.objectives import FlowMatchingObjective
from flowmatch.train import EMA, TrainConfig, Trainer, latest_checkpoint
from flowmatch.train.checkpoint import _state_checksum
from flowmatch.train.ema import ema_decay_at
from oracles import GaussianOracle


def _write_state(path, state):
    """Rewrite a checkpoint's state.json as an edit by flowmatch itself would (re-sealed)."""
    state["checksum"] = _state_checksum(state)
    path.write_text(json.dumps(state))


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).double()


# --------------------------------------------------------------------------- the schedule
@pytest.mark.parametrize("decay", [0.5, 0.9, 0.999, 0.9999])
def test_effective_decay_grows_to_the_cap_and_stays(decay):
    ks = range(0, 20_000)
    d = [ema_decay_at(k, decay) for k in ks]
    assert d[0] == pytest.approx(0.1)  # the first update keeps 10 % of the initial weights
    assert all(a <= b for a, b in zip(d, d[1:], strict=False))  # non-decreasing
    assert max(d) <= decay
    # (1 + k) / (10 + k) >= decay  <=>  k >= (10 decay - 1) / (1 - decay): the cap from there.
    k_cap = math.ceil((10 * decay - 1) / (1 - decay) - 1e-9)
    if k_cap < len(d):
        assert d[k_cap] == decay and all(v == decay for v in d[k_cap:])
        assert d[k_cap - 1] < decay
    assert [ema_decay_at(k, decay, warmup=False) for k in (0, 7, 10**6)] == [decay] * 3


def test_cap_reached_at_8990_updates_for_0999():
    assert ema_decay_at(8989, 0.999) < 0.999 == ema_decay_at(8990, 0.999)


@pytest.mark.parametrize(("decay", "n"), [(0.9, 25), (0.5, 20), (0.999, 60)])
def test_weight_left_on_the_initialisation_in_closed_form(decay, n):
    # With the weights held at theta, e_n - theta = prod_{k<n} d_k (e_0 - theta). Below the
    # cap d_k = (1 + k) / (10 + k) telescopes: prod_{k<m} d_k = m! 9! / (m + 9)! = 1 / C(m+9, 9);
    # the updates at the cap (k >= k_cap) contribute decay^(n - k_cap). float64 lerp: 1e-12.
    k_cap = min(n, math.ceil((10 * decay - 1) / (1 - decay) - 1e-9))
    residual = decay ** (n - k_cap) / math.comb(k_cap + 9, 9)
    model = _net(0)
    ema = EMA(model, decay)
    start = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for _ in range(n):
        ema.update()
    assert ema.num_updates == n
    for e0, e, theta in zip(start, ema.module.parameters(), model.parameters(), strict=True):
        assert e.shape == theta.shape
        torch.testing.assert_close(e - theta, residual * (e0 - theta), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 10, 50, 200])
def test_lag_behind_a_linear_drift_is_a_tenth_of_the_run(n):
    # Weights theta_j = theta_0 + j (j-th update sees theta_j). Below the cap the EMA weighs
    # theta_j by w_j = C(j + 8, 8) / C(n + 9, 9), j = 0..n (they sum to 1 by the hockey-stick
    # identity; sum_j j C(j+8, 8) = 9 C(n+10, 10) - 9 C(n+9, 9) likewise), so e_n - theta_0 =
    # 0.9 n: the average lags the current weights by n / 10 steps, whatever n (a power-function
    # EMA with gamma = 8, Karras et al. 2024). 0.999 keeps all n <= 200 below the cap.
    # float64 lerp on values <= 200: 1e-10.
    model = nn.Linear(2, 2).double()
    ema = EMA(model, 0.999)
    theta0 = [p.detach().clone() for p in model.parameters()]
    for j in range(1, n + 1):
        with torch.no_grad():
            for p, p0 in zip(model.parameters(), theta0, strict=True):
                p.copy_(p0 + j)
        ema.update()
    for e, p0 in zip(ema.module.parameters(), theta0, strict=True):
        torch.testing.assert_close(e - p0, torch.full_like(p0, 0.9 * n), rtol=0, atol=1e-10)


def test_plain_ema_without_warmup_is_geometric():
    # warmup=False: e_n - theta = decay^n (e_0 - theta) exactly (a geometric sequence).
    model, decay, n = _net(0), 0.9, 25
    ema = EMA(model, decay, warmup=False)
    start = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for _ in range(n):
        assert ema.current_decay == decay
        ema.update()
    for e0, e, theta in zip(start, ema.module.parameters(), model.parameters(), strict=True):
        assert e.shape == theta.shape
        torch.testing.assert_close(e - theta, decay**n * (e0 - theta), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- the object
def test_ema_is_frozen_copy_and_model_is_untouched():
    model = _net(1)
    before = [p.detach().clone() for p in model.parameters()]
    ema = EMA(model, 0.5, warmup=False)
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
    for _ in range(3):
        a.update()
    b.load_state_dict(a.state_dict())
    b.load_extra_state(json.loads(json.dumps(a.extra_state())), step=3)
    assert b.num_updates == 3 and b.current_decay == a.current_decay
    assert set(a.state_dict()) == set(_net(3).state_dict())  # loads into the bare model
    for x, y in zip(a.module.parameters(), b.module.parameters(), strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_bad_decay(decay):
    with pytest.raises(ValueError, match=r"ema decay must be in \(0, 1\)"):
        EMA(_net(0), decay)


def test_bad_warmup_and_bad_extra_state():
    with pytest.raises(TypeError, match="ema warmup must be a bool, got 1"):
        EMA(_net(0), 0.9, warmup=1)  # type: ignore[arg-type]
    ema = EMA(_net(0), 0.9)
    for bad in ({}, {"num_updates": -1}, {"num_updates": 2.0}, {"num_updates": True}, [3]):
        with pytest.raises(ValueError, match=r"EMA state must hold an int num_updates >= 0"):
            ema.load_extra_state(bad, step=5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- resume
def _resume_setup():
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randn(512, 2, generator=g) * 0.5 + 1.0)
    # decay 0.999: every one of the 24 updates is in the warm-up, so a lost count shows.
    cfg = TrainConfig(
        steps=24, batch_size=64, lr=5e-3, log_every=4, checkpoint_every=0, seed=3,
        ema_decay=0.999, lr_schedule="constant", grad_clip=None,
    )  # fmt: skip

    def model_fn(seed):
        torch.manual_seed(seed)
        return MLP(2, hidden=16, depth=2, time_dim=8)

    return data, cfg, model_fn


def _ema_params(trainer):
    return [p.detach().clone() for p in trainer.ema.module.parameters()]


def _straight_and_half(tmp_path):
    data, cfg, model_fn = _resume_setup()
    straight = Trainer(model_fn(0), FlowMatchingObjective(), data, cfg)
    straight.fit()
    Trainer(model_fn(0), FlowMatchingObjective(), data, cfg, out_dir=tmp_path).fit(until_step=12)
    return data, model_fn, _ema_params(straight)


def test_resume_with_warmup_is_bit_identical(tmp_path):
    data, model_fn, want = _straight_and_half(tmp_path)
    state = json.loads((latest_checkpoint(tmp_path) / "state.json").read_text())
    assert state["ema"] == {"model": {"num_updates": 12, "decay": 0.999, "warmup": True}}
    resumed = Trainer.resume(tmp_path, model_fn(5), FlowMatchingObjective(), data)
    assert resumed.ema.num_updates == 12
    resumed.fit()
    assert resumed.ema.num_updates == 24
    assert all(torch.equal(a, b) for a, b in zip(want, _ema_params(resumed), strict=True))


def test_resume_reads_the_count_from_state_json(tmp_path):
    # A count reset to 0 restarts the warm-up (d_0 = 0.1): the continued average differs, so
    # the bit-identical resume above really depends on the stored count.
    data, model_fn, want = _straight_and_half(tmp_path)
    path = latest_checkpoint(tmp_path) / "state.json"
    state = json.loads(path.read_text())
    state["ema"]["model"]["num_updates"] = 0
    _write_state(path, state)
    resumed = Trainer.resume(tmp_path, model_fn(5), FlowMatchingObjective(), data)
    resumed.fit()
    assert not all(torch.equal(a, b) for a, b in zip(want, _ema_params(resumed), strict=True))


def test_checkpoint_without_ema_count_resumes_from_its_step(tmp_path, caplog):
    # Checkpoints of flowmatch 0.1.0 have EMA weights but no "ema" entry in state.json. The
    # EMA was updated once per step, so the count is the step; a run written by this version
    # with the entry removed therefore still resumes bit-identically.
    data, model_fn, want = _straight_and_half(tmp_path)
    path = latest_checkpoint(tmp_path) / "state.json"
    state = json.loads(path.read_text())
    del state["ema"]
    _write_state(path, state)
    with caplog.at_level(logging.WARNING, logger="flowmatch.train.ema"):
        resumed = Trainer.resume(tmp_path, model_fn(5), FlowMatchingObjective(), data)
    assert "no EMA update count" in caplog.text and resumed.ema.num_updates == 12
    resumed.fit()
    assert all(torch.equal(a, b) for a, b in zip(want, _ema_params(resumed), strict=True))


def test_corrupt_ema_count_is_an_error(tmp_path):
    data, model_fn, _ = _straight_and_half(tmp_path)
    path = latest_checkpoint(tmp_path) / "state.json"
    state = json.loads(path.read_text())
    state["ema"] = {"model": {"num_updates": "12"}}
    _write_state(path, state)
    with pytest.raises(ValueError, match=r"int num_updates >= 0, got \{'num_updates': '12'\}"):
        Trainer.resume(tmp_path, model_fn(5), FlowMatchingObjective(), data)
    state["ema"] = [12]
    _write_state(path, state)
    with pytest.raises(ValueError, match=r"'ema' must map module names to EMA states, got \[12\]"):
        Trainer.resume(tmp_path, model_fn(5), FlowMatchingObjective(), data)


# --------------------------------------------------------------------------- short runs
class _AlsoPlain:
    """Stands in for the trainer's EMA: updates it and a plain (no warm-up) one."""

    def __init__(self, ema: EMA, plain: EMA) -> None:
        self.ema, self.plain = ema, plain

    def __getattr__(self, name: str):
        return getattr(self.ema, name)

    def update(self) -> None:
        self.ema.update()
        self.plain.update()


def _velocity_error(model, oracle, n=20_000):
    # Excess flow-matching loss E|v(x_t, t) - u_t(x_t)|^2 against the exact marginal velocity
    # of the Gaussian oracle (DESIGN.md 1.8(a)), on fixed evaluation points.
    g = torch.Generator().manual_seed(99)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    xt = (1 - t[:, None]) * oracle.sample_x0(n, g) + t[:, None] * oracle.sample_x1(n, g)
    with torch.no_grad():
        v = model(xt.float(), t.float()).double()
    assert v.shape == xt.shape
    return (v - oracle.velocity(xt, t)).pow(2).sum(1).mean().item()


@pytest.mark.parametrize("steps", [50, 200])
def test_ema_is_not_worse_than_raw_weights_on_a_short_run(steps):
    # The failure this guards against: a default run of a few hundred steps sampled with the
    # EMA weights gave noise, because EMA 0.999 without warm-up still held 0.999^n of the
    # random initialisation (0.95 after 50 steps, 0.82 after 200). With TrainConfig's default
    # EMA the averaged model must be as good as the raw one up to the seed-to-seed noise:
    # mean error difference over 4 seeds below 2 standard errors of that difference (the rule
    # of bench/defaults.py). In a check the plain EMA was 7-40x worse than raw, the warm-up
    # one 0.7-1.03x (cosine or constant lr).
    oracle = GaussianOracle(torch.tensor([1.0, -1.0], dtype=torch.float64), 0.5)
    data = ArrayDataset(oracle.sample_x1(4096, torch.Generator().manual_seed(1)).float())
    raw, ema, plain = [], [], []
    for seed in range(4):
        # lr 1e-2 so that the tiny net learns within 50 steps; everything else is a default.
        cfg = TrainConfig(steps=steps, batch_size=256, lr=1e-2, seed=seed, log_every=steps)
        assert cfg.ema_decay is not None
        torch.manual_seed(seed)
        trainer = Trainer(
            MLP(2, hidden=32, depth=2, time_dim=16), FlowMatchingObjective(), data, cfg
        )
        old = EMA(trainer.model, cfg.ema_decay, warmup=False)
        real_ema = trainer.ema
        assert trainer.emas is not None and real_ema is not None
        trainer.emas["model"] = _AlsoPlain(real_ema, old)  # type: ignore[assignment]
        trainer.fit()
        raw.append(_velocity_error(trainer.model, oracle))
        ema.append(_velocity_error(real_ema.module, oracle))
        plain.append(_velocity_error(old.module, oracle))
    diff = [e - r for e, r in zip(ema, raw, strict=True)]
    se = math.sqrt(statistics.variance(ema) / 4 + statistics.variance(raw) / 4)
    assert statistics.mean(diff) < 2 * se, (raw, ema)
    assert statistics.mean(plain) > 2 * statistics.mean(raw), (raw, plain)  # the old failure
