"""Exact and sliced W2: brute-force and closed-form oracles, invariances, input errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from flowmatch.metrics import sliced_wasserstein2, wasserstein2

F64 = torch.float64


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def sorted_w2(u: torch.Tensor, v: torch.Tensor) -> float:
    """Independent 1-D oracle: for equal sizes the optimal matching is the sorted one."""
    return math.sqrt(float((u.flatten().sort().values - v.flatten().sort().values).square().mean()))


# --- exact W2 ------------------------------------------------------------------------------


def test_w2_of_a_set_with_itself_is_zero() -> None:
    x = randn(50, 3, seed=0)
    assert wasserstein2(x, x) == 0.0


def test_w2_of_a_shifted_copy_is_the_shift_norm() -> None:
    # For y = x + s the identity matching is optimal (the cross term sum_i (x_i - x_sigma(i))
    # vanishes), so W2 = ||s||. N == D == 16 so a row/column mix-up cannot broadcast away.
    x = randn(16, 16, seed=1)
    shift = randn(16, seed=2)
    # float64 differences of O(1) numbers: relative round-off ~1e-15.
    assert wasserstein2(x, x + shift) == pytest.approx(float(shift.norm()), rel=1e-12)


def test_w2_in_1d_equals_the_sorted_formula() -> None:
    x, y = randn(300, 1, seed=3), 0.5 * randn(300, 1, seed=4) + 1.0
    assert wasserstein2(x, y) == pytest.approx(sorted_w2(x, y), rel=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_w2_equals_brute_force_over_permutations(n: int) -> None:
    # Birkhoff: between uniform n-point measures an optimal plan is a permutation, so the
    # minimum over all n! permutations is the exact W2^2. Inputs (n, 2, 2) check flattening.
    x, y = randn(n, 2, 2, seed=10 + n), randn(n, 2, 2, seed=20 + n)
    fx, fy = x.reshape(n, -1), y.reshape(n, -1)
    best = min(
        float((fx - fy[list(p)]).square().sum(dim=1).mean())
        for p in itertools.permutations(range(n))
    )
    assert wasserstein2(x, y) == pytest.approx(math.sqrt(best), rel=1e-12)


def test_w2_is_symmetric_and_promotes_float32_inputs() -> None:
    x, y = randn(40, 3, seed=5), randn(40, 3, seed=6)
    assert wasserstein2(x, y) == pytest.approx(wasserstein2(y, x), rel=1e-12)
    # float32 inputs are promoted to float64: same value as the float64 copy of the same
    # float32 numbers.
    x32, y32 = x.float(), y.float()
    assert wasserstein2(x32, y32) == wasserstein2(x32.double(), y32.double())


def test_w2_subsampling_unequal_sizes_between_point_masses() -> None:
    # Every subsample of a point mass is the same point mass: W2 = ||a - b|| for any draw.
    a, b = torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([4.0, 2.0], dtype=F64)
    x, y = a.expand(30, 2).clone(), b.expand(17, 2).clone()
    assert wasserstein2(x, y, max_samples=10) == pytest.approx(5.0, rel=1e-12)
    assert wasserstein2(x, y) == pytest.approx(5.0, rel=1e-12)


def test_w2_subsampling_is_deterministic_given_the_generator() -> None:
    x, y = randn(60, 2, seed=7), randn(45, 2, seed=8)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    first = wasserstein2(x, y, max_samples=20, generator=g(3))
    assert wasserstein2(x, y, max_samples=20, generator=g(3)) == first
    # None means a fresh generator seeded with 0 (documented).
    assert wasserstein2(x, y, max_samples=20) == wasserstein2(x, y, max_samples=20, generator=g(0))
    # Different subsamples of continuous data give different values.
    assert wasserstein2(x, y, max_samples=20, generator=g(4)) != first


def test_w2_without_subsampling_ignores_the_generator() -> None:
    x, y = randn(12, 2, seed=9), randn(12, 2, seed=10)
    exact = wasserstein2(x, y, max_samples=12)
    assert wasserstein2(x, y, generator=torch.Generator().manual_seed(5)) == exact


# --- sliced W2 -----------------------------------------------------------------------------


def test_sliced_of_a_set_with_itself_is_zero() -> None:
    x = randn(7, 7, seed=11)  # N == D
    assert sliced_wasserstein2(x, x) == 0.0


@pytest.mark.parametrize("num_projections", [1, 5])
def test_sliced_in_1d_equals_exact_w2(num_projections: int) -> None:
    # In 1-D every unit direction is +-1 and W2 is invariant under x -> -x.
    x, y = randn(200, 1, seed=12), 2.0 * randn(200, 1, seed=13) - 1.0
    sw = sliced_wasserstein2(x, y, num_projections=num_projections)
    assert sw == pytest.approx(wasserstein2(x, y), rel=1e-12)


def test_sliced_unequal_sizes_hand_computed_quantiles() -> None:
    # F^{-1} of {0, 1}: 0 on (0, 1/2], 1 on (1/2, 1]; G^{-1} of {0, 0.5, 1}: 0, 0.5, 1 on
    # thirds. They differ by 0.5 on (1/3, 1/2] and (1/2, 2/3]: W2^2 = 2 * 0.25 / 6 = 1/12.
    x = torch.tensor([[1.0], [0.0]], dtype=F64)
    y = torch.tensor([[0.5], [1.0], [0.0]], dtype=F64)
    assert sliced_wasserstein2(x, y) == pytest.approx(math.sqrt(1 / 12), rel=1e-12)


@pytest.mark.parametrize(("n", "m"), [(5, 3), (7, 11), (40, 13)])
def test_sliced_unequal_sizes_equals_replicated_equal_size_sets(n: int, m: int) -> None:
    # Repeating every point of x m times and of y n times leaves both empirical measures
    # unchanged and makes the sizes equal (n m), where the sorted formula is exact.
    x, y = randn(n, 1, seed=n), randn(m, 1, seed=100 + m) + 0.3
    expected = sorted_w2(x.repeat(m, 1), y.repeat(n, 1))
    assert sliced_wasserstein2(x, y) == pytest.approx(expected, rel=1e-12)


def test_sliced_unequal_sizes_invariant_to_duplicating_a_set() -> None:
    x, y = randn(9, 3, seed=14), randn(6, 3, seed=15)
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    base = sliced_wasserstein2(x, y, num_projections=32, generator=g())
    dup = sliced_wasserstein2(x.repeat(3, 1), y, num_projections=32, generator=g())
    assert dup == pytest.approx(base, rel=1e-12)


@pytest.mark.parametrize("scale", [2.5, -0.5])
def test_sliced_scales_like_a_distance_and_ignores_translation(scale: float) -> None:
    x, y = randn(30, 4, seed=16), randn(25, 4, seed=17)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731 (same directions each call)
    base = sliced_wasserstein2(x, y, generator=g())
    assert sliced_wasserstein2(scale * x, scale * y, generator=g()) == pytest.approx(
        abs(scale) * base, rel=1e-12
    )
    shift = randn(4, seed=18)
    assert sliced_wasserstein2(x + shift, y + shift, generator=g()) == pytest.approx(
        base, rel=1e-10
    )


def test_sliced_of_a_shift_matches_its_expectation_over_directions() -> None:
    # Each projected set is shifted by theta.s, so W2^2 along theta is (theta.s)^2 exactly,
    # and for theta uniform on S^{D-1}, (theta.s)^2 / |s|^2 ~ Beta(1/2, (D-1)/2): mean 1/D,
    # variance 2 (D - 1) / (D^2 (D + 2)). 5 standard errors of the mean over L directions.
    d, num = 3, 4000
    x, s = randn(50, d, seed=19), torch.tensor([1.0, -2.0, 2.0], dtype=F64)  # |s|^2 = 9
    sw2 = sliced_wasserstein2(x, x + s, num_projections=num) ** 2 / 9.0
    se = math.sqrt(2 * (d - 1) / (d**2 * (d + 2)) / num)
    assert abs(sw2 - 1 / d) < 5 * se


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [wasserstein2, sliced_wasserstein2])
def test_input_errors(fn) -> None:  # type: ignore[no-untyped-def]
    x = randn(4, 2, seed=0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        fn([[0.0, 1.0]], x)
    with pytest.raises(TypeError, match="y must be a floating-point tensor"):
        fn(x, torch.ones(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x must have shape \(N, \*D\)"):
        fn(torch.zeros(4, dtype=F64), x)
    with pytest.raises(ValueError, match="y must hold at least one sample"):
        fn(x, torch.zeros(0, 2, dtype=F64))
    with pytest.raises(ValueError, match="same number of features"):
        fn(x, randn(4, 3, seed=1))
    with pytest.raises(ValueError, match="x has 1 non-finite"):
        fn(torch.tensor([[0.0, float("nan")]], dtype=F64), x)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        fn(x, x, generator=0)


def test_count_argument_errors() -> None:
    x = randn(4, 2, seed=0)
    with pytest.raises(ValueError, match="max_samples must be >= 1, got 0"):
        wasserstein2(x, x, max_samples=0)
    with pytest.raises(TypeError, match="max_samples must be an int"):
        wasserstein2(x, x, max_samples=True)
    with pytest.raises(ValueError, match="num_projections must be >= 1, got -3"):
        sliced_wasserstein2(x, x, num_projections=-3)
