"""Kernel two-sample distances: RBF maximum mean discrepancy and energy distance.

Both are sums over all pairs of points. They are accumulated over row blocks of the distance
matrix (at most ``2**22`` entries, 32 MiB in float64, per block), so 10k x 10k samples never
allocate the full matrix (that size, in 64-D, takes ~25 s on one CPU core; the tensors' own
device is used). Distances are computed directly from differences (not via
``||a||^2 + ||b||^2 - 2 a.b``), so identical points are at distance exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from flowmatch.metrics._samples import as_sample_pair
from flowmatch.utils.checks import check_in_choices, check_positive_float

Estimator = Literal["biased", "unbiased"]
ESTIMATORS: tuple[str, ...] = ("biased", "unbiased")

_BLOCK_ENTRIES = 1 << 22
# Points used by the median heuristic: the median over the ~5e5 pairs of 1024 points is within
# a few percent of the full one and costs a few ms, where 20k points would have 2e8 pairs.
_MEDIAN_POINTS = 1024


def _pairwise_sum(a: Tensor, b: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``sum_{i,j} fn(||a_i - b_j||)`` as a 0-d tensor, accumulated over row blocks of ``a``."""
    rows = max(1, _BLOCK_ENTRIES // b.shape[0])
    total = a.new_zeros(())
    for start in range(0, a.shape[0], rows):
        dist = torch.cdist(a[start : start + rows], b, compute_mode="donot_use_mm_for_euclid_dist")
        total = total + fn(dist).sum()
    return total


def _identity(dist: Tensor) -> Tensor:
    return dist


def median_bandwidth(x: Tensor, y: Tensor) -> float:
    """Median heuristic for the RBF bandwidth: the median distance in the pooled sample.

    ``h = median{ ||z_i - z_j|| : i < j }`` over ``z = [x; y]`` (Gretton et al. 2012, sec. 8).
    When the pooled sample has more than 1024 points, the median is taken over the pairs of
    1024 points at evenly strided positions of ``[x; y]`` (deterministic, and both sets are
    represented in proportion to their sizes).

    Args:
        x: samples ``(N, *D)``.
        y: samples ``(M, *D)`` with the same ``prod(D)``.

    Returns:
        The bandwidth ``h > 0``.

    Raises:
        TypeError: if ``x``/``y`` are not floating tensors.
        ValueError: for bad shapes/devices, NaN/inf, or a median distance of 0 (more than
            half of the pairs coincide); pass an explicit bandwidth then.
    """
    return _median_distance(*as_sample_pair(x, y))


def _median_distance(a: Tensor, b: Tensor) -> float:
    """:func:`median_bandwidth` on already validated float64 ``(N, D)``, ``(M, D)`` samples."""
    z = torch.cat([a, b])  # >= 2 points: each set holds at least one
    if z.shape[0] > _MEDIAN_POINTS:
        idx = torch.linspace(0, z.shape[0] - 1, _MEDIAN_POINTS, device=z.device).round().long()
        z = z[idx]
    h = float(torch.quantile(torch.pdist(z), 0.5))
    if h <= 0.0:
        raise ValueError(
            "median heuristic gave bandwidth 0 (more than half of the pooled points coincide); "
            "pass bandwidth explicitly"
        )
    return h


def mmd_rbf(
    x: Tensor,
    y: Tensor,
    *,
    bandwidth: float | None = None,
    estimator: Estimator = "unbiased",
) -> float:
    """Squared maximum mean discrepancy with a Gaussian (RBF) kernel.

    ``k(a, b) = exp(-||a - b||^2 / (2 h^2))`` and
    ``MMD^2 = E k(X, X') + E k(Y, Y') - 2 E k(X, Y)`` (Gretton et al. 2012, JMLR, Lemma 6).

    * ``"unbiased"`` (default, Gretton et al. eq. 3, ``MMD_u^2``): the within-set means skip
      the diagonal, ``sum_{i != j} k(x_i, x_j) / (N (N - 1))``; its expectation is the
      population ``MMD^2``, so it is ~0 (and can be negative) for two samples of one law.
    * ``"biased"`` (eq. 5, ``MMD_b^2``): all pairs, diagonal included; this is the exact
      squared MMD between the two empirical measures, ``>= 0`` and 0 for identical sets.

    Args:
        x: samples ``(N, *D)``, flattened to ``(N, D)``; float64 internally.
        y: samples ``(M, *D)`` with the same ``prod(D)``.
        bandwidth: kernel width ``h > 0``; ``None`` uses ``median_bandwidth(x, y)``.
        estimator: ``"unbiased"`` (needs ``N, M >= 2``) or ``"biased"``.

    Returns:
        The squared MMD as a Python float (not its square root).

    Raises:
        TypeError: if ``x``/``y`` are not floating tensors or ``bandwidth`` is not a number.
        ValueError: for bad shapes/devices, NaN/inf, ``bandwidth <= 0``, an unknown
            ``estimator``, fewer than 2 samples per set with ``"unbiased"``, or a zero median.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) + 2
        >>> mmd_rbf(x, x, estimator="biased"), mmd_rbf(x, y) > 0.5
        (0.0, True)
    """
    a, b = as_sample_pair(x, y)
    check_in_choices(estimator, ESTIMATORS, "estimator")
    h = (
        _median_distance(a, b)
        if bandwidth is None
        else check_positive_float(bandwidth, "bandwidth")
    )
    n, m = a.shape[0], b.shape[0]
    if estimator == "unbiased" and min(n, m) < 2:
        raise ValueError(f"the unbiased estimator needs >= 2 samples per set, got N={n}, M={m}")

    def kernel(dist: Tensor) -> Tensor:
        return torch.exp(dist.square() / (-2.0 * h * h))

    kxx, kyy, kxy = (
        _pairwise_sum(a, a, kernel),
        _pairwise_sum(b, b, kernel),
        _pairwise_sum(a, b, kernel),
    )
    if estimator == "biased":
        return float(kxx / (n * n) + kyy / (m * m) - 2.0 * kxy / (n * m))
    # k(x, x) = exp(0) = 1 exactly (direct distances), so the diagonal sums are n and m.
    return float((kxx - n) / (n * (n - 1)) + (kyy - m) / (m * (m - 1)) - 2.0 * kxy / (n * m))


def energy_distance(x: Tensor, y: Tensor, *, estimator: Estimator = "biased") -> float:
    """Energy distance ``2 E||X - Y|| - E||X - X'|| - E||Y - Y'||`` (Szekely & Rizzo 2013).

    * ``"biased"`` (default): the V-statistic ``E_n`` of Szekely & Rizzo (2004, 2013), all
      pairs with the zero diagonal included; it is the energy distance between the two
      empirical measures, ``>= 0``, and 0 iff they are equal. In 1-D it equals
      ``2 int (F_N(t) - G_M(t))^2 dt`` (twice the squared Cramer distance of the ECDFs).
    * ``"unbiased"``: within-set means over ``i != j``; its expectation is the population
      energy distance, so it is ~0 for two samples of one law.

    The population value is ``>= 0`` and 0 iff the laws are equal (Szekely & Rizzo 2013,
    Prop. 1); it is not squared and scales like a distance (``D(c x, c y) = |c| D(x, y)``).

    Args:
        x: samples ``(N, *D)``, flattened to ``(N, D)``; float64 internally.
        y: samples ``(M, *D)`` with the same ``prod(D)``.
        estimator: ``"biased"`` or ``"unbiased"`` (needs ``N, M >= 2``).

    Returns:
        The energy distance as a Python float.

    Raises:
        TypeError: if ``x``/``y`` are not floating tensors.
        ValueError: for bad shapes/devices, NaN/inf, an unknown ``estimator``, or fewer than
            2 samples per set with ``"unbiased"``.

    Example:
        >>> import torch
        >>> energy_distance(torch.zeros(4, 1), torch.full((3, 1), 2.5))  # 2 |0 - 2.5|
        5.0
    """
    a, b = as_sample_pair(x, y)
    check_in_choices(estimator, ESTIMATORS, "estimator")
    n, m = a.shape[0], b.shape[0]
    if estimator == "unbiased" and min(n, m) < 2:
        raise ValueError(f"the unbiased estimator needs >= 2 samples per set, got N={n}, M={m}")
    dxx, dyy, dxy = (_pairwise_sum(p, q, _identity) for p, q in ((a, a), (b, b), (a, b)))
    pairs_x, pairs_y = (n * n, m * m) if estimator == "biased" else (n * (n - 1), m * (m - 1))
    return float(2.0 * dxy / (n * m) - dxx / pairs_x - dyy / pairs_y)
