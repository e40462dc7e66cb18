"""Conditional sample quality: W2 within bins of a scalar condition.

A conditional model is judged by how well ``p_model(x | c)`` matches ``p_data(x | c)``, not
only by the marginal. For a scalar condition ``c`` the conditional law is compared bin by
bin: the condition's range is cut into quantile bins of the reference conditions, and in
each bin the generated samples whose condition falls in it are compared with the reference
samples whose condition does (exact W2, :func:`~flowmatch.metrics.wasserstein.wasserstein2`).
When every generated sample uses the condition of one reference sample (``flowmatch eval``
does so), both sets of a bin have the same size and the same conditions. This is the
"conditional W2 averaged over condition bins" of the 2-D experiment of Kim et al. 2026
("Better Source, Better Flow", arXiv:2602.05951).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowmatch.metrics.wasserstein import wasserstein2
from flowmatch.utils.checks import check_positive_int

__all__ = ["bin_index", "conditional_w2", "quantile_edges"]


def _scalar(c: Tensor, name: str) -> Tensor:
    if not isinstance(c, Tensor) or not c.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {type(c).__name__}")
    if c.ndim == 2 and c.shape[1] == 1:
        c = c[:, 0]
    if c.ndim != 1:
        raise ValueError(f"{name} must be a scalar condition (N,) or (N, 1), got {tuple(c.shape)}")
    if not bool(torch.isfinite(c).all()):
        raise ValueError(f"{name} must be finite")
    return c.detach().to("cpu", torch.float64)


def quantile_edges(cond: Tensor, num_bins: int) -> Tensor:
    """Edges ``(num_bins + 1,)`` of equal-count bins of a scalar condition ``(N,)`` / ``(N, 1)``.

    The inner edges are the ``k / num_bins`` quantiles (``torch.quantile``, linear
    interpolation); the outer ones are ``-inf`` and ``inf``, so every value falls in a bin.

    Raises:
        TypeError: ``cond`` is not a float tensor.
        ValueError: ``cond`` is not scalar per sample or not finite, ``num_bins < 1``.
    """
    check_positive_int(num_bins, "num_bins")
    c = _scalar(cond, "cond")
    q = torch.linspace(0.0, 1.0, num_bins + 1, dtype=torch.float64)[1:-1]
    inner = torch.quantile(c, q)
    inf = torch.tensor([math.inf], dtype=torch.float64)
    return torch.cat([-inf, inner, inf])


def bin_index(cond: Tensor, edges: Tensor) -> Tensor:
    """Bin ``k`` of each condition value: ``edges[k] <= c < edges[k + 1]`` (int64 ``(N,)``)."""
    c = _scalar(cond, "cond")
    return torch.bucketize(c, edges[1:-1].to(torch.float64), right=True)


def conditional_w2(
    samples: Tensor,
    sample_cond: Tensor,
    reference: Tensor,
    reference_cond: Tensor,
    edges: Tensor,
    *,
    min_count: int = 2,
    generator: torch.Generator | None = None,
) -> list[float | None]:
    """W2 between ``samples`` and ``reference`` within each bin of a scalar condition.

    Args:
        samples: generated samples ``(N, *D)``.
        sample_cond: their conditions ``(N,)`` or ``(N, 1)``.
        reference: reference samples ``(M, *D)``.
        reference_cond: their conditions ``(M,)`` or ``(M, 1)``.
        edges: bin edges (:func:`quantile_edges`), increasing.
        min_count: a bin with fewer samples on either side gives ``None``.
        generator: randomness of the subsample where a bin's two sides differ in size.

    Returns:
        One W2 per bin (``None`` for a bin with fewer than ``min_count`` points on a side).

    Raises:
        ValueError: rows of samples and conditions differ, or the conditions are not scalar.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> c = torch.rand(400, 1, generator=g)
        >>> x = c + 0.1 * torch.randn(400, 1, generator=g)
        >>> w = conditional_w2(x, c, x, c, quantile_edges(c, 4))
        >>> [round(v, 6) for v in w]
        [0.0, 0.0, 0.0, 0.0]
    """
    for x, c, name in ((samples, sample_cond, "samples"), (reference, reference_cond, "reference")):
        if len(x) != len(c):
            raise ValueError(
                f"{name} and their conditions must have the same rows, got {len(x)} and {len(c)}"
            )
    bs, br = bin_index(sample_cond, edges), bin_index(reference_cond, edges)
    out: list[float | None] = []
    for k in range(len(edges) - 1):
        a, b = samples[bs == k], reference[br == k]
        if min(len(a), len(b)) < min_count:
            out.append(None)
            continue
        out.append(wasserstein2(a, b, generator=generator))
    return out
