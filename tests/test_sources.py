"""Source distributions: sampling, moments and log-density."""

from __future__ import annotations

import math

import pytest
import torch

from flowmatch.sources import GaussianSource, Source

F64 = torch.float64


@pytest.mark.parametrize("shape", [(4, 4), (3, 2, 5), (2, 1, 4, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_sample_shape_dtype(shape, dtype):
    x = GaussianSource().sample(shape, torch.Generator().manual_seed(0), dtype=dtype)
    assert x.shape == shape and x.dtype == dtype and x.device.type == "cpu"


def test_sample_is_reproducible_and_sample_like_matches():
    src = GaussianSource()
    like = torch.zeros(3, 2, 2, dtype=F64)
    a = src.sample_like(like, torch.Generator().manual_seed(1))
    b = src.sample((3, 2, 2), torch.Generator().manual_seed(1), dtype=F64)
    assert a.shape == like.shape and a.dtype == F64
    assert torch.equal(a, b)


def test_moments_are_standard_normal():
    # n = 100000 per coordinate: SE of the mean 1/sqrt(n), of the variance sqrt(2/(n-1)).
    n = 100_000
    x = GaussianSource().sample((n, 3), torch.Generator().manual_seed(2), dtype=F64)
    assert (x.mean(0).abs() < 5 / math.sqrt(n)).all()
    assert ((x.var(0) - 1).abs() < 5 * math.sqrt(2 / (n - 1))).all()


@pytest.mark.parametrize("shape", [(5, 3), (3, 3), (2, 3, 4)])
def test_log_prob_matches_torch_distributions(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    want = torch.distributions.Normal(0.0, 1.0).log_prob(x).reshape(shape[0], -1).sum(1)
    got = GaussianSource().log_prob(x)
    assert got.shape == (shape[0],) and got.dtype == F64
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)


def test_log_prob_integrates_to_one_in_1d():
    # Trapezoid on [-12, 12] with 24001 points: tail mass < 1e-30, quadrature error < 1e-10.
    x = torch.linspace(-12, 12, 24_001, dtype=F64)[:, None]
    assert torch.trapezoid(GaussianSource().log_prob(x).exp(), x[:, 0]).item() == pytest.approx(
        1.0, abs=1e-10
    )


def test_is_a_source_with_repr():
    assert isinstance(GaussianSource(), Source)
    assert repr(GaussianSource()) == "GaussianSource()"
    with pytest.raises(TypeError, match="abstract"):
        Source()  # type: ignore[abstract]


def test_eight_gaussians_source_samples_and_density():
    from flowmatch.sources import SOURCES, EightGaussiansSource

    src = SOURCES.build(SOURCES.config("eight_gaussians"), sample_shape=(2,), cond=None)
    assert isinstance(src, EightGaussiansSource)
    x = src.sample((4000, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    radius = x.norm(dim=1)
    assert abs(float(radius.mean()) - 4.0) < 0.1  # on the circle of radius 4
    # The density integrates to 1 (grid quadrature on [-7, 7]^2).
    g = torch.linspace(-7, 7, 281, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    p = src.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp()
    assert abs(float(p.sum()) * float(g[1] - g[0]) ** 2 - 1.0) < 1e-3
    with pytest.raises(ValueError, match=r"shape must be \(B, 2\)"):
        src.sample((3, 4))


def test_the_two_8_gaussians_sources_are_one_distribution():
    from flowmatch.sources import EightGaussiansSource
    from flowmatch.sources_extra import DatasetSource

    a, b = EightGaussiansSource(), DatasetSource("8gaussians")
    x = 5 * torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(a.log_prob(x), b.log_prob(x))
    ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    xa = a.sample((20000, 2), ga, dtype=torch.float64)
    xb = b.sample((20000, 2), gb, dtype=torch.float64)
    # same law: moments agree to Monte-Carlo error and each scores the other's samples alike
    torch.testing.assert_close(xa.square().mean(0), xb.square().mean(0), atol=0.15, rtol=0)
    assert abs(float(a.log_prob(xb).mean() - a.log_prob(xa).mean())) < 0.05
