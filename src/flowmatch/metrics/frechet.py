"""Frechet distance between Gaussian fits of two feature sets (the "FID" formula).

Any feature extractor can be plugged in front of it: ``digits_features`` provides one for the
8x8 digits; raw coordinates work for low-dimensional data.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowmatch.metrics._samples import as_sample_pair, as_samples
from flowmatch.utils.checks import check_tensor

# Eigenvalues of a covariance below -_PSD_RTOL * (largest |eigenvalue|) mean the matrix is
# not positive semi-definite; smaller negative values are float64 round-off and are set to 0.
_PSD_RTOL = 1e-8


def gaussian_moments(feat: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance of a feature set, in float64.

    ``mu = (1/N) sum_i f_i``, ``S = (1/(N-1)) sum_i (f_i - mu)(f_i - mu)^T`` (as ``numpy.cov``
    and the FID reference implementation).

    Args:
        feat: features ``(N, *F)`` with ``N >= 2``, flattened to ``(N, F)``.

    Returns:
        ``(mu, cov)`` of shapes ``(F,)`` and ``(F, F)``, float64, on ``feat``'s device.

    Raises:
        TypeError: if ``feat`` is not a floating tensor.
        ValueError: for a bad shape, NaN/inf, or ``N < 2``.
    """
    return _moments(as_samples(feat, "feat"), "feat")


def _moments(f: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if f.shape[0] < 2:
        raise ValueError(f"{name} needs >= 2 samples for a covariance, got N={f.shape[0]}")
    mu = f.mean(dim=0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _check_moments(mu: Tensor, cov: Tensor, name: str) -> tuple[Tensor, Tensor]:
    check_tensor(mu, f"mu_{name}")
    check_tensor(cov, f"cov_{name}")
    if mu.ndim != 1 or cov.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"mu_{name} must be (F,) and cov_{name} (F, F), got {tuple(mu.shape)} and "
            f"{tuple(cov.shape)}"
        )
    mu, cov = mu.to(torch.float64), cov.to(torch.float64)
    if not (bool(torch.isfinite(mu).all()) and bool(torch.isfinite(cov).all())):
        raise ValueError(f"mu_{name} and cov_{name} must be finite")
    scale = float(cov.abs().max())
    if float((cov - cov.T).abs().max()) > 1e-10 * max(scale, 1e-300):
        raise ValueError(
            f"cov_{name} must be symmetric, got max |C - C^T| = {float((cov - cov.T).abs().max()):.3g}"
        )
    return mu, cov


def _psd_sqrt(cov: Tensor, name: str) -> Tensor:
    """Symmetric square root ``V diag(sqrt(lambda)) V^T`` of a PSD matrix."""
    lam, vec = torch.linalg.eigh(cov)
    floor = -_PSD_RTOL * max(float(lam.abs().max()), 1e-300)
    if float(lam.min()) < floor:
        raise ValueError(
            f"cov_{name} must be positive semi-definite, got eigenvalue {float(lam.min()):.3g}"
        )
    return (vec * lam.clamp(min=0.0).sqrt()) @ vec.T


def frechet_distance_from_moments(
    mu_x: Tensor, cov_x: Tensor, mu_y: Tensor, cov_y: Tensor
) -> float:
    """Frechet (2-Wasserstein squared) distance between ``N(mu_x, S_x)`` and ``N(mu_y, S_y)``.

    ``FD = ||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^{1/2})`` (Dowson & Landau 1982;
    Heusel et al. 2017, eq. 6). The trace of the non-symmetric root is computed stably as
    ``Tr (S_x^{1/2} S_y S_x^{1/2})^{1/2} = sum_k sqrt(lambda_k)``, the eigenvalues of a
    symmetric PSD matrix (the two matrices are similar, so their roots have equal traces).

    Args:
        mu_x: mean ``(F,)``.
        cov_x: covariance ``(F, F)``, symmetric positive semi-definite.
        mu_y: mean ``(F,)``.
        cov_y: covariance ``(F, F)``.

    Returns:
        ``FD >= 0`` as a Python float (negative round-off of order 1e-15 Tr S is clipped to 0).

    Raises:
        TypeError: if an argument is not a tensor.
        ValueError: for inconsistent shapes, NaN/inf, or a non-symmetric / non-PSD covariance.
    """
    mu_x, cov_x = _check_moments(mu_x, cov_x, "x")
    mu_y, cov_y = _check_moments(mu_y, cov_y, "y")
    if mu_x.shape != mu_y.shape:
        raise ValueError(
            f"mu_x and mu_y must have the same shape, got {tuple(mu_x.shape)} and {tuple(mu_y.shape)}"
        )
    root_x = _psd_sqrt(cov_x, "x")
    _psd_sqrt(cov_y, "y")  # validates cov_y
    middle = root_x @ cov_y @ root_x
    eig = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0.0)
    fd = (mu_x - mu_y).square().sum() + cov_x.trace() + cov_y.trace() - 2.0 * eig.sqrt().sum()
    # FD is a squared distance; a negative value can only be round-off.
    return max(float(fd), 0.0)


def frechet_distance(feat_x: Tensor, feat_y: Tensor) -> float:
    """Frechet distance between Gaussian fits of two feature sets (FID without Inception).

    ``FD = ||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^{1/2})`` with ``(mu, S)`` the sample
    mean and unbiased covariance of each set (Heusel et al. 2017, eq. 6). Float64 throughout.
    The estimate is biased upwards by ``O(F / N)`` for finite samples, so compare values only
    at equal sample sizes.

    Args:
        feat_x: features ``(N, *F)``, ``N >= 2``, flattened to ``(N, F)``.
        feat_y: features ``(M, *F)``, ``M >= 2``, with the same ``prod(F)``.

    Returns:
        ``FD >= 0`` as a Python float; exactly 0 (up to round-off) for a set with itself.

    Raises:
        TypeError: if the features are not floating tensors.
        ValueError: for bad shapes, different feature sizes or devices, NaN/inf, or fewer
            than 2 samples.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> f = torch.randn(1000, 4, generator=g, dtype=torch.float64)
        >>> frechet_distance(f, f) < 1e-12, round(frechet_distance(f, f + 3.0), 6)
        (True, 36.0)
    """
    a, b = as_sample_pair(feat_x, feat_y, ("feat_x", "feat_y"))
    mu_x, cov_x = _moments(a, "feat_x")
    mu_y, cov_y = _moments(b, "feat_y")
    return frechet_distance_from_moments(mu_x, cov_x, mu_y, cov_y)
