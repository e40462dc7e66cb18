"""Wasserstein-2 distances between empirical measures: exact (assignment) and sliced.

Both functions treat a tensor ``(N, *D)`` as the empirical measure ``(1/N) sum_i delta_{x_i}``
on ``R^D`` (features flattened to ``(N, D)``) and compute in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowmatch.metrics._samples import as_sample_pair
from flowmatch.utils.checks import check_positive_int


def _default_generator(generator: torch.Generator | None) -> torch.Generator:
    """``generator`` itself, or a fresh CPU generator seeded with 0 (documented default)."""
    if generator is None:
        return torch.Generator().manual_seed(0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


def _subsample(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``k`` rows of ``x`` drawn uniformly without replacement (all rows, in order, if k == N)."""
    if x.shape[0] == k:
        return x
    idx = torch.randperm(x.shape[0], generator=generator, device=generator.device)[:k]
    return x[idx.to(x.device)]


def wasserstein2(
    x: Tensor, y: Tensor, *, max_samples: int = 2000, generator: torch.Generator | None = None
) -> float:
    """Exact 2-Wasserstein distance between empirical measures, by optimal assignment.

    ``W_2(x, y) = ( min_{sigma in S_n} (1/n) sum_i ||x_i - y_{sigma(i)}||^2 )^{1/2}``.

    For two uniform measures on ``n`` points each, an optimal transport plan is a permutation
    (Birkhoff-von Neumann), so the exact problem is the assignment problem on the squared
    Euclidean cost, solved with ``scipy.optimize.linear_sum_assignment`` (O(n^3)). This is
    the sample W2 used to compare generative models on low-dimensional data (same value as
    POT's ``sqrt(ot.emd2(a, b, M))``).

    Subsampling: with ``n = min(N, M, max_samples)``, each set larger than ``n`` is replaced by
    ``n`` of its rows drawn uniformly without replacement (``torch.randperm`` on
    ``generator``; ``x`` is drawn first, then ``y``). Sets of exactly ``n`` rows are used as
    they are, so equal-size inputs with ``N <= max_samples`` give the exact W2, independent of
    the generator. Unequal sizes therefore give the W2 between equal-size subsamples, an
    estimate (biased upwards) of the W2 between the two underlying laws.

    Args:
        x: samples ``(N, *D)``, flattened to ``(N, D)``.
        y: samples ``(M, *D)`` with the same ``prod(D)``.
        max_samples: largest assignment size ``n`` (solved on the CPU; time grows as ``n^3``,
            2000 takes ~1-3 s).
        generator: randomness of the subsample; ``None`` uses a fresh generator seeded with 0,
            so the result is deterministic either way.

    Returns:
        The distance ``W_2 >= 0`` as a Python float.

    Raises:
        TypeError: if ``x``/``y`` are not floating tensors or ``generator`` is not a generator.
        ValueError: for shapes other than ``(N, *D)``, different feature sizes or devices,
            NaN/inf samples, or ``max_samples < 1``.

    Example:
        >>> import torch
        >>> x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
        >>> round(wasserstein2(x, x + torch.tensor([3.0, 4.0])), 6)
        5.0
    """
    from scipy.optimize import linear_sum_assignment  # heavy import, only needed here

    check_positive_int(max_samples, "max_samples")
    a, b = as_sample_pair(x, y)
    gen = _default_generator(generator)
    n = min(a.shape[0], b.shape[0], max_samples)
    a, b = _subsample(a, n, gen).cpu(), _subsample(b, n, gen).cpu()
    # The direct (non-matmul) distance avoids the cancellation of ||a||^2 + ||b||^2 - 2ab.
    cost = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square()
    rows, cols = linear_sum_assignment(cost.numpy())
    # Re-evaluate the matched cost from differences: exact for a pure translation.
    matched = (a[torch.as_tensor(rows)] - b[torch.as_tensor(cols)]).square().sum(dim=1)
    return math.sqrt(float(matched.mean()))


def _w2_squared_1d(u: Tensor, v: Tensor) -> Tensor:
    """Squared W2 between 1-D empirical measures, column by column: ``(N, L), (M, L) -> (L,)``.

    ``W_2^2 = int_0^1 (F^{-1}(q) - G^{-1}(q))^2 dq`` with the empirical quantile functions
    (step functions jumping at ``i/N`` and ``j/M``). Between consecutive breakpoints of the
    merged set ``{i/N} U {j/M}`` both quantiles are constant, so the integral is an exact
    finite sum; for ``N == M`` it reduces to ``mean((sort(u) - sort(v))^2)``.
    """
    us, vs = torch.sort(u, dim=0).values, torch.sort(v, dim=0).values
    n, m = us.shape[0], vs.shape[0]
    if n == m:
        return (us - vs).square().mean(dim=0)
    # Breakpoints on the integer lattice k / (n m) keep the merge exact (no float ties).
    ticks = torch.unique(
        torch.cat(
            [
                torch.arange(1, n + 1, device=u.device) * m,
                torch.arange(1, m + 1, device=u.device) * n,
            ]
        )
    )
    lower = torch.cat([ticks.new_zeros(1), ticks[:-1]])
    weights = (ticks - lower).to(torch.float64) / (n * m)
    # On (lower, tick] the quantile index is ceil(q n) - 1 = lower // m (and lower // n for v).
    iu, iv = lower // m, lower // n
    return ((us[iu] - vs[iv]).square() * weights[:, None]).sum(dim=0)


def sliced_wasserstein2(
    x: Tensor,
    y: Tensor,
    *,
    num_projections: int = 256,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced 2-Wasserstein distance: W2 averaged over random 1-D projections.

    ``SW_2(x, y) = ( (1/L) sum_{l=1}^{L} W_2^2(theta_l^T x, theta_l^T y) )^{1/2}`` with
    ``theta_l`` uniform on the unit sphere ``S^{D-1}`` (normalised standard Gaussians drawn
    from ``generator``). Each 1-D W2 is exact: sorted samples for equal sizes, the integral of
    the squared difference of the empirical quantile functions otherwise (Rabin et al. 2011;
    Bonneel et al. 2015). Cost O(L (N + M) log(N + M)); any sample sizes are allowed.

    Args:
        x: samples ``(N, *D)``, flattened to ``(N, D)``.
        y: samples ``(M, *D)`` with the same ``prod(D)``.
        num_projections: number ``L`` of random directions.
        generator: randomness of the directions (drawn on the generator's device, then moved
            to the samples'); ``None`` uses a fresh CPU generator seeded with 0.

    Returns:
        ``SW_2 >= 0`` as a Python float. In 1-D it equals the exact W2 for any ``L``.

    Raises:
        TypeError: if ``x``/``y`` are not floating tensors or ``generator`` is not a generator.
        ValueError: for bad shapes, different feature sizes or devices, NaN/inf samples, or
            ``num_projections < 1``.

    Example:
        >>> import torch
        >>> x = torch.randn(500, 3, generator=torch.Generator().manual_seed(0))
        >>> sliced_wasserstein2(x, x)
        0.0
    """
    check_positive_int(num_projections, "num_projections")
    a, b = as_sample_pair(x, y)
    gen = _default_generator(generator)
    theta = torch.randn(
        a.shape[1], num_projections, generator=gen, dtype=torch.float64, device=gen.device
    ).to(a.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    return math.sqrt(float(_w2_squared_1d(a @ theta, b @ theta).mean()))
