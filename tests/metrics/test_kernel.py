"""MMD and energy distance: exact zeros, closed forms, unbiasedness within SE, chunking."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

import flowmatch.metrics.kernel as kernel
from flowmatch.metrics import energy_distance, median_bandwidth, mmd_rbf

F64 = torch.float64


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def cramer_energy_1d(x: torch.Tensor, y: torch.Tensor) -> float:
    """Independent 1-D oracle: the V-statistic equals 2 int (F_N(t) - G_M(t))^2 dt.

    (Szekely & Rizzo 2013, eq. 2.1 with the empirical CDFs.) The ECDFs are constant between
    consecutive pooled points, so the integral is a finite sum.
    """
    xs, ys = x.flatten().sort().values, y.flatten().sort().values
    z = torch.cat([xs, ys]).sort().values
    cdf_x = torch.searchsorted(xs, z[:-1], right=True).to(F64) / xs.numel()
    cdf_y = torch.searchsorted(ys, z[:-1], right=True).to(F64) / ys.numel()
    return 2.0 * float(((cdf_x - cdf_y).square() * (z[1:] - z[:-1])).sum())


def replicate(fn, shift: float, reps: int = 20, n: int = 100) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for r in range(reps):
        g = torch.Generator().manual_seed(1000 + r)
        x = torch.randn(n, 2, generator=g, dtype=F64)
        y = torch.randn(n, 2, generator=g, dtype=F64) + shift
        out.append(fn(x, y))
    return out


# --- MMD -----------------------------------------------------------------------------------


def test_biased_mmd_of_a_set_with_itself_is_zero() -> None:
    x = randn(6, 6, seed=0)  # N == D
    assert abs(mmd_rbf(x, x, estimator="biased")) < 1e-15


def test_unbiased_mmd_is_centred_for_one_law_and_positive_for_two() -> None:
    # MMD_u^2 is an unbiased estimator of the population MMD^2 (Gretton et al. 2012, Lemma 6):
    # 0 for one law. Its mean over 20 independent replicates lies within 4 standard errors
    # (estimated from the replicates) of 0; a unit mean shift gives a mean far above the
    # replicate spread of the null.
    null = replicate(mmd_rbf, 0.0)
    se = statistics.stdev(null) / math.sqrt(len(null))
    assert abs(statistics.mean(null)) < 4 * se
    alt = replicate(mmd_rbf, 1.0)
    assert min(alt) > 5 * statistics.stdev(null)


def test_mmd_large_bandwidth_limit_is_the_mean_difference() -> None:
    # exp(-d^2 / 2h^2) = 1 - d^2 / 2h^2 + O(h^-4), and the biased mean of d^2 over pairs is
    # 2 tr C_x (within x), 2 tr C_y (within y), tr C_x + tr C_y + |mu_x - mu_y|^2 (across):
    # MMD_b^2 = |mu_x - mu_y|^2 / h^2 + O(h^-4). With h = 1e3 the relative remainder is ~1e-5.
    x, y = randn(40, 3, seed=1), 0.7 * randn(30, 3, seed=2) + torch.tensor([0.5, -1.0, 2.0])
    h = 1e3
    mean_gap = float((x.mean(0) - y.mean(0)).square().sum())
    got = mmd_rbf(x, y, bandwidth=h, estimator="biased") * h**2
    assert got == pytest.approx(mean_gap, rel=1e-4)


def test_mmd_between_point_masses() -> None:
    # Every kernel value within a point mass is k(a, a) = 1, across is exp(-|a-b|^2 / 2h^2):
    # both estimators give 2 - 2 exp(-|a - b|^2 / (2 h^2)). |a - b| = 5, h = 5: 2 - 2 e^{-1/2}.
    x = torch.tensor([[0.0, 0.0]], dtype=F64).expand(4, 2)
    y = torch.tensor([[3.0, 4.0]], dtype=F64).expand(3, 2)
    expected = 2 - 2 * math.exp(-0.5)
    for est in ("biased", "unbiased"):
        assert mmd_rbf(x, y, bandwidth=5.0, estimator=est) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_mmd_is_symmetric(estimator: str) -> None:
    x, y = randn(20, 3, seed=3), randn(15, 3, seed=4) + 0.5
    assert mmd_rbf(x, y, estimator=estimator) == pytest.approx(
        mmd_rbf(y, x, estimator=estimator), rel=1e-12
    )


def test_median_bandwidth_small_case_and_subsampling() -> None:
    # Pooled {0, 1, 2}: distances 1, 1, 2, median 1.
    x, y = torch.tensor([[0.0], [1.0]], dtype=F64), torch.tensor([[2.0]], dtype=F64)
    assert median_bandwidth(x, y) == 1.0
    # Above 1024 pooled points the median over the pairs of 1024 strided points stands in for
    # the full median; the sample median of ~5e5 dependent pairs from 1024 points has a
    # relative error of order 1/sqrt(1024) ~ 3 %, so 5 % is a loose bound.
    x, y = randn(900, 2, seed=5), randn(700, 2, seed=6) + 1.0
    full = float(torch.quantile(torch.pdist(torch.cat([x, y])), 0.5))
    assert median_bandwidth(x, y) == pytest.approx(full, rel=0.05)
    assert mmd_rbf(x, y, estimator="biased") == mmd_rbf(
        x, y, bandwidth=median_bandwidth(x, y), estimator="biased"
    )


# --- energy distance -----------------------------------------------------------------------


def test_energy_of_a_set_with_itself_is_zero() -> None:
    x = randn(5, 5, seed=7)  # N == D
    assert energy_distance(x, x) == 0.0


def test_energy_between_point_masses_in_1d() -> None:
    # All within-set distances are 0 and all cross distances |a - b|: E = 2 |a - b|.
    x, y = torch.full((4, 1), -1.0, dtype=F64), torch.full((7, 1), 2.5, dtype=F64)
    assert energy_distance(x, y) == pytest.approx(7.0, rel=1e-15)


@pytest.mark.parametrize(("n", "m"), [(10, 10), (13, 29)])
def test_energy_in_1d_equals_twice_the_cramer_distance(n: int, m: int) -> None:
    x, y = randn(n, 1, seed=n), 1.5 * randn(m, 1, seed=m + 50) + 0.3
    assert energy_distance(x, y) == pytest.approx(cramer_energy_1d(x, y), rel=1e-12)


def test_unbiased_energy_is_centred_for_one_law_and_positive_for_two() -> None:
    # Same reasoning as the MMD test: the U-statistic has expectation 0 under one law.
    fn = lambda x, y: energy_distance(x, y, estimator="unbiased")  # noqa: E731
    null = replicate(fn, 0.0)
    se = statistics.stdev(null) / math.sqrt(len(null))
    assert abs(statistics.mean(null)) < 4 * se
    assert min(replicate(fn, 1.0)) > 5 * statistics.stdev(null)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_energy_is_symmetric_and_scales_like_a_distance(estimator: str) -> None:
    x, y = randn(20, 3, seed=8), randn(15, 3, seed=9) + 0.5
    e = energy_distance(x, y, estimator=estimator)
    assert energy_distance(y, x, estimator=estimator) == pytest.approx(e, rel=1e-12)
    assert energy_distance(-3 * x, -3 * y, estimator=estimator) == pytest.approx(3 * e, rel=1e-12)


# --- chunking ------------------------------------------------------------------------------


def test_blockwise_sums_do_not_depend_on_the_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = randn(37, 4, seed=10), randn(23, 4, seed=11)
    ref = (mmd_rbf(x, y), energy_distance(x, y))
    # 50 entries per block: 2 rows of a 23- or 37-column matrix at a time, with a ragged last
    # block. Only the summation order changes, so values agree to round-off.
    monkeypatch.setattr(kernel, "_BLOCK_ENTRIES", 50)
    assert mmd_rbf(x, y) == pytest.approx(ref[0], rel=1e-12)
    assert energy_distance(x, y) == pytest.approx(ref[1], rel=1e-12)


# --- errors --------------------------------------------------------------------------------


def test_kernel_errors() -> None:
    x = randn(4, 2, seed=0)
    with pytest.raises(ValueError, match="unknown estimator 'exact'"):
        mmd_rbf(x, x, estimator="exact")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown estimator 'v'"):
        energy_distance(x, x, estimator="v")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unbiased estimator needs >= 2 samples per set, got N=1"):
        mmd_rbf(x[:1], x)
    with pytest.raises(
        ValueError, match="unbiased estimator needs >= 2 samples per set, got N=4, M=1"
    ):
        energy_distance(x, x[:1], estimator="unbiased")
    with pytest.raises(ValueError, match="bandwidth must be a finite number > 0, got -1.0"):
        mmd_rbf(x, x, bandwidth=-1.0)
    with pytest.raises(TypeError, match="bandwidth must be a number"):
        mmd_rbf(x, x, bandwidth="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="median heuristic gave bandwidth 0"):
        mmd_rbf(torch.zeros(3, 2, dtype=F64), torch.zeros(2, 2, dtype=F64))
    with pytest.raises(ValueError, match="same number of features"):
        energy_distance(x, randn(4, 3, seed=1))
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        median_bandwidth(x, 1.0)  # type: ignore[arg-type]
