"""Frechet distance: exact zero, Gaussian closed forms, sample convergence, symmetry, errors."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from flowmatch.metrics import frechet_distance, frechet_distance_from_moments, gaussian_moments

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_cov(d: int, seed: int) -> torch.Tensor:
    """A generic (non-diagonal, well-conditioned) SPD matrix."""
    a = torch.randn(d, d, generator=gen(seed), dtype=F64)
    return a @ a.T / d + 0.5 * torch.eye(d, dtype=F64)


def test_frechet_of_a_set_with_itself_is_zero() -> None:
    f = torch.randn(500, 8, generator=gen(0), dtype=F64) * torch.arange(1, 9, dtype=F64)
    # Round-off of 2 Tr S - 2 sum sqrt(eig(S^2)): ~1e-15 relative to Tr S ~ 200.
    assert frechet_distance(f, f) < 1e-10


def test_gaussian_moments_shapes_and_values() -> None:
    f = torch.randn(6, 6, generator=gen(1), dtype=F64)  # N == F
    mu, cov = gaussian_moments(f)
    assert mu.shape == (6,) and cov.shape == (6, 6)
    assert torch.allclose(cov, torch.cov(f.T), rtol=1e-12, atol=1e-14)  # torch's own estimator
    assert torch.allclose(mu, f.mean(0), rtol=0, atol=1e-15)


def test_moments_formula_in_1d_is_the_gaussian_w2() -> None:
    # Between N(m1, s1^2) and N(m2, s2^2) the W2^2 is (m1 - m2)^2 + (s1 - s2)^2 (monotone map).
    mu1, mu2 = torch.tensor([1.5], dtype=F64), torch.tensor([-0.5], dtype=F64)
    c1, c2 = torch.tensor([[4.0]], dtype=F64), torch.tensor([[0.25]], dtype=F64)
    assert frechet_distance_from_moments(mu1, c1, mu2, c2) == pytest.approx(4 + 1.5**2, rel=1e-14)


def test_moments_formula_for_commuting_covariances() -> None:
    # Diagonal covariances: FD = |mu1 - mu2|^2 + sum_k (sqrt(a_k) - sqrt(b_k))^2.
    a, b = torch.tensor([1.0, 4.0, 9.0], dtype=F64), torch.tensor([4.0, 1.0, 0.0], dtype=F64)
    mu1, mu2 = torch.zeros(3, dtype=F64), torch.tensor([1.0, 2.0, 2.0], dtype=F64)
    expected = 9.0 + (1 + 1 + 9)
    got = frechet_distance_from_moments(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got == pytest.approx(expected, rel=1e-13)


def test_moments_formula_for_noncommuting_2x2() -> None:
    # For a 2x2 matrix with non-negative eigenvalues, Tr sqrt(M) = sqrt(Tr M + 2 sqrt(det M))
    # ((sqrt l1 + sqrt l2)^2 = l1 + l2 + 2 sqrt(l1 l2)); S1 S2 is similar to a PSD matrix.
    s1 = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=F64)
    s2 = torch.tensor([[0.5, -0.3], [-0.3, 3.0]], dtype=F64)
    tr_root = math.sqrt(float((s1 @ s2).trace()) + 2 * math.sqrt(float(s1.det() * s2.det())))
    expected = 1.0 + float(s1.trace() + s2.trace()) - 2 * tr_root
    mu1, mu2 = torch.zeros(2, dtype=F64), torch.tensor([1.0, 0.0], dtype=F64)
    assert frechet_distance_from_moments(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


def test_moments_formula_for_scaled_covariance_and_rotation_invariance() -> None:
    # S2 = c^2 S1 (any S1): (S1 S2)^{1/2} = c S1, so FD = |dmu|^2 + (1 - c)^2 Tr S1.
    s1, c = random_cov(5, seed=2), 0.3
    mu1, mu2 = torch.randn(5, generator=gen(3), dtype=F64), torch.zeros(5, dtype=F64)
    expected = float(mu1.square().sum()) + (1 - c) ** 2 * float(s1.trace())
    assert frechet_distance_from_moments(mu1, s1, mu2, c**2 * s1) == pytest.approx(
        expected, rel=1e-12
    )
    # A rotation of both Gaussians leaves the (Wasserstein) distance unchanged.
    s2 = random_cov(5, seed=4)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=gen(5), dtype=F64))
    base = frechet_distance_from_moments(mu1, s1, mu2, s2)
    rotated = frechet_distance_from_moments(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T)
    assert rotated == pytest.approx(base, rel=1e-11)


def test_sample_estimate_converges_to_the_analytic_value() -> None:
    # Features drawn from N(mu_k, S_k) with generic, non-commuting S_k. FD is smooth in the
    # moments, so the estimate fluctuates by O(1/sqrt(N)) with a bias O(D/N) (from
    # E|mu_hat - mu|^2 = Tr S / N per set). Over R = 20 replicates of N = 4000 the mean must
    # lie within 5 standard errors (from the replicates) plus 3 (Tr S1 + Tr S2) / N of the
    # analytic FD of the true parameters.
    d, n, reps = 3, 4000, 20
    s1, s2 = random_cov(d, seed=6), random_cov(d, seed=7)
    mu1, mu2 = torch.zeros(d, dtype=F64), torch.tensor([0.5, -0.5, 1.0], dtype=F64)
    exact = frechet_distance_from_moments(mu1, s1, mu2, s2)
    l1, l2 = torch.linalg.cholesky(s1), torch.linalg.cholesky(s2)
    estimates = []
    for r in range(reps):
        g = gen(100 + r)
        fx = torch.randn(n, d, generator=g, dtype=F64) @ l1.T + mu1
        fy = torch.randn(n, d, generator=g, dtype=F64) @ l2.T + mu2
        estimates.append(frechet_distance(fx, fy))
    se = statistics.stdev(estimates) / math.sqrt(reps)
    bias = 3 * float(s1.trace() + s2.trace()) / n
    assert abs(statistics.mean(estimates) - exact) < 5 * se + bias


def test_frechet_is_symmetric() -> None:
    fx = torch.randn(300, 4, generator=gen(8), dtype=F64)
    fy = torch.randn(200, 4, generator=gen(9), dtype=F64) @ random_cov(4, seed=10) + 1.0
    assert frechet_distance(fx, fy) == pytest.approx(frechet_distance(fy, fx), rel=1e-10)


def test_frechet_accepts_image_shaped_features() -> None:
    f = torch.randn(50, 2, 3, generator=gen(11), dtype=F64)
    assert frechet_distance(f, f + 1.0) == pytest.approx(6.0, rel=1e-10)  # |1_6|^2


def test_frechet_errors() -> None:
    f = torch.randn(5, 3, generator=gen(0), dtype=F64)
    mu, cov = gaussian_moments(f)
    with pytest.raises(ValueError, match="feat_x needs >= 2 samples for a covariance, got N=1"):
        frechet_distance(f[:1], f)
    with pytest.raises(ValueError, match="feat needs >= 2 samples"):
        gaussian_moments(f[:1])
    with pytest.raises(ValueError, match="feat_x and feat_y must have the same number of features"):
        frechet_distance(f, f[:, :2])
    with pytest.raises(TypeError, match="feat_y must be a floating-point tensor"):
        frechet_distance(f, torch.ones(5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mu_x must be \(F,\) and cov_x \(F, F\)"):
        frechet_distance_from_moments(mu, cov[:2], mu, cov)
    with pytest.raises(ValueError, match="mu_x and mu_y must have the same shape"):
        frechet_distance_from_moments(mu, cov, mu[:2], cov[:2, :2])
    with pytest.raises(ValueError, match="cov_y must be symmetric"):
        frechet_distance_from_moments(mu, cov, mu, cov + torch.triu(torch.ones(3, 3), 1))
    with pytest.raises(ValueError, match="cov_x must be positive semi-definite"):
        frechet_distance_from_moments(mu, -cov, mu, cov)
    with pytest.raises(ValueError, match="must be finite"):
        frechet_distance_from_moments(mu * float("nan"), cov, mu, cov)
    with pytest.raises(TypeError, match="cov_y must be a torch.Tensor"):
        frechet_distance_from_moments(mu, cov, mu, cov.tolist())  # type: ignore[arg-type]
