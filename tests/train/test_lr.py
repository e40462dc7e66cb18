"""Warm-up + cosine learning rate: shape properties, not a re-typed formula."""

import math

import pytest

from flowmatch.train import TrainConfig, WarmupCosine


def test_warmup_is_linear_and_reaches_peak():
    sched = WarmupCosine(lr=0.3, total_steps=100, warmup_steps=10)
    values = [sched(k) for k in range(10)]
    # Equal increments of lr / W starting at lr / W: a straight line through the origin.
    diffs = [b - a for a, b in zip(values, values[1:], strict=False)]
    assert all(d == pytest.approx(0.03, rel=1e-12) for d in diffs)
    assert values[0] == pytest.approx(0.03, rel=1e-12)
    assert values[-1] == pytest.approx(0.3, rel=1e-12)


@pytest.mark.parametrize("ratio", [0.0, 0.1])
def test_cosine_endpoints_monotone_and_point_symmetric(ratio):
    lr, warm, total = 2.0, 5, 105
    sched = WarmupCosine(lr=lr, total_steps=total, warmup_steps=warm, min_lr_ratio=ratio)
    after = [sched(k) for k in range(warm, total + 1)]
    assert after[0] == pytest.approx(lr, rel=1e-12)  # starts at the peak
    assert after[-1] == pytest.approx(ratio * lr, abs=1e-12)  # ends at min_lr_ratio * lr
    assert all(b <= a + 1e-15 for a, b in zip(after, after[1:], strict=False))
    # A half cosine is point-symmetric about its midpoint: lr(W + i) + lr(S - i) = (1 + r) lr.
    for i in range(0, total - warm + 1, 7):
        assert sched(warm + i) + sched(total - i) == pytest.approx((1 + ratio) * lr, rel=1e-12)
    assert sched(total + 50) == pytest.approx(ratio * lr, abs=1e-12)  # flat after the horizon


def test_constant_schedule_and_from_config():
    sched = WarmupCosine.from_config(
        TrainConfig(steps=50, lr=0.01, warmup_steps=4, lr_schedule="constant")
    )
    assert sched(1) == pytest.approx(0.005)
    assert all(sched(k) == 0.01 for k in range(3, 60))
    assert sched.state_dict() == {
        "lr": 0.01,
        "total_steps": 50,
        "warmup_steps": 4,
        "min_lr_ratio": 0.0,
        "kind": "constant",
    }


def test_no_warmup_starts_at_peak_and_has_finite_values_for_one_step():
    sched = WarmupCosine(lr=1.0, total_steps=1)
    assert sched(0) == 1.0 and math.isfinite(sched(1))


def test_unknown_kind():
    with pytest.raises(ValueError, match=r"unknown lr_schedule 'step'; choose one of"):
        WarmupCosine(lr=1.0, total_steps=10, kind="step")
