"""Training-time samplers: support, KS test against the analytic cdf, pdf/cdf consistency."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from flowmatch.times import TIME_SAMPLERS, LogitNormalTime, TimeSampler, UniformTime
from flowmatch.times.shifted import ShiftedLogitNormalTime

CASES: list[TimeSampler] = [cls() for cls in TIME_SAMPLERS.values()] + [
    LogitNormalTime(-0.8, 0.8),
    LogitNormalTime(1.0, 2.0),
    ShiftedLogitNormalTime(0.0, 1.0, shift=3.0),
    ShiftedLogitNormalTime(-0.8, 0.8, shift=0.5),
]
IDS = [repr(s) for s in CASES]


def _cdf(sampler: TimeSampler):
    return lambda x: sampler.cdf(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


def test_registry_names():
    assert set(TIME_SAMPLERS) == {"uniform", "logit_normal", "shifted_logit_normal"}
    for name, cls in TIME_SAMPLERS.items():
        assert cls.name == name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sampler", CASES, ids=IDS)
def test_samples_shape_dtype_support(sampler, dtype):
    t = sampler.sample_t(10_000, torch.Generator().manual_seed(0), dtype=dtype)
    assert t.shape == (10_000,) and t.dtype == dtype
    assert ((t >= 0) & (t <= 1)).all()


@pytest.mark.parametrize("sampler", CASES, ids=IDS)
def test_samples_are_deterministic_given_generator(sampler):
    a = sampler.sample_t(50, torch.Generator().manual_seed(3))
    b = sampler.sample_t(50, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("sampler", CASES, ids=IDS)
def test_kolmogorov_smirnov_against_cdf(sampler):
    # Fixed seed, n = 20000: the KS statistic of a correct sampler has p-value ~ U(0, 1);
    # p > 1e-3 fails a correct sampler with probability 1e-3 over seeds, and this seed passes.
    t = sampler.sample_t(20_000, torch.Generator().manual_seed(1), dtype=torch.float64)
    assert stats.kstest(t.numpy(), _cdf(sampler)).pvalue > 1e-3


def test_kolmogorov_smirnov_has_power():
    # The KS test above can tell distributions apart: logit-normal(1, 2) samples are
    # rejected against the uniform cdf and vice versa.
    g = torch.Generator().manual_seed(1)
    t = LogitNormalTime(1.0, 2.0).sample_t(20_000, g, dtype=torch.float64)
    assert stats.kstest(t.numpy(), _cdf(UniformTime())).pvalue < 1e-6
    u = UniformTime().sample_t(20_000, g, dtype=torch.float64)
    assert stats.kstest(u.numpy(), _cdf(LogitNormalTime(-0.8, 0.8))).pvalue < 1e-6


@pytest.mark.parametrize("sampler", CASES, ids=IDS)
def test_pdf_integrates_to_one(sampler):
    # Trapezoid on 200001 points placed uniformly in logit space (dense where logit-normal
    # densities concentrate): relative error below 1e-6 for these smooth densities.
    t = torch.sigmoid(torch.linspace(-25, 25, 200_001, dtype=torch.float64))
    t = torch.cat([t.new_zeros(1), t, t.new_ones(1)])
    assert torch.trapezoid(sampler.pdf(t), t).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("sampler", CASES, ids=IDS)
def test_pdf_is_derivative_of_cdf(sampler):
    # Central difference, h = 1e-6: truncation O(h^2) plus round-off 1e-16/h, well under 1e-6.
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    h = 1e-6
    fd = (sampler.cdf(t + h) - sampler.cdf(t - h)) / (2 * h)
    torch.testing.assert_close(sampler.pdf(t), fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sampler", CASES, ids=IDS)
def test_pdf_cdf_outside_support(sampler):
    t = torch.tensor([-0.5, 0.0, 1.0, 1.5], dtype=torch.float64)
    assert sampler.pdf(t)[[0, 3]].tolist() == [0.0, 0.0]
    assert sampler.cdf(t).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert (sampler.pdf(torch.linspace(0, 1, 101, dtype=torch.float64)) >= 0).all()


def test_logit_normal_mean_convention():
    # flowmatch's convention: t = 1 is data, a positive mean concentrates on the data end;
    # the median is sigmoid(mean).
    sampler = LogitNormalTime(1.0, 0.5)
    median = torch.tensor([1 / (1 + math.exp(-1.0))], dtype=torch.float64)
    assert sampler.cdf(median).item() == pytest.approx(0.5, abs=1e-12)
    assert sampler.cdf(torch.tensor([0.5])).item() < 0.5


def test_repr():
    assert repr(UniformTime()) == "UniformTime()"
    assert repr(LogitNormalTime(-0.8, 0.8)) == "LogitNormalTime(mean=-0.8, std=0.8)"


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: UniformTime().sample_t(0), ValueError, "batch_size must be >= 1, got 0"),
        (lambda: UniformTime().sample_t(2.0), TypeError, r"batch_size must be an int, got 2\.0"),
        (lambda: LogitNormalTime().sample_t(-1), ValueError, "batch_size must be >= 1, got -1"),
        (lambda: LogitNormalTime(std=0.0), ValueError, "std must be a finite number > 0, got 0.0"),
        (lambda: LogitNormalTime(std="1"), TypeError, "std must be a number, got '1'"),
        (lambda: LogitNormalTime(mean=float("nan")), ValueError, "mean must be a finite number"),
        (lambda: LogitNormalTime(mean="0"), TypeError, "mean must be a number, got '0'"),
        (lambda: LogitNormalTime(mean=True), TypeError, "mean must be a number, got True"),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
