"""Conditional W2 per bin of a scalar condition: bins, exact values, errors."""

from __future__ import annotations

import math

import pytest
import torch

from flowmatch.metrics.conditional import bin_index, conditional_w2, quantile_edges
from flowmatch.metrics.wasserstein import wasserstein2

F64 = torch.float64


def test_quantile_bins_have_equal_counts_and_cover_everything():
    c = torch.randn(1000, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    edges = quantile_edges(c, 8)
    assert edges.shape == (9,) and edges[0] == -math.inf and edges[-1] == math.inf
    assert (edges[1:] > edges[:-1]).all()
    counts = torch.bincount(bin_index(c, edges), minlength=8)
    assert counts.tolist() == [125] * 8
    # The documented rule edges[k] <= c < edges[k + 1]: an edge value belongs to the bin above.
    assert bin_index(edges[1:2], edges).item() == 1
    assert torch.equal(quantile_edges(c[:, 0], 1), torch.tensor([-math.inf, math.inf], dtype=F64))


def test_conditional_w2_is_w2_of_each_bin():
    g = torch.Generator().manual_seed(1)
    c = torch.rand(300, 1, generator=g, dtype=F64)
    x = torch.cat([c, torch.randn(300, 1, generator=g, dtype=F64)], 1)
    y = x + torch.tensor([0.5, 0.0], dtype=F64)  # a pure shift: W2 = 0.5 in every bin
    edges = quantile_edges(c, 4)
    out = conditional_w2(y, c, x, c, edges)
    assert len(out) == 4
    for v in out:
        assert v == pytest.approx(0.5, abs=1e-12)
    # Against the unbinned metric on each bin's rows (independent computation).
    z = torch.randn(300, 2, generator=g, dtype=F64)
    got = conditional_w2(z, c, x, c, edges)
    k = bin_index(c, edges)
    for b in range(4):
        assert got[b] == pytest.approx(wasserstein2(z[k == b], x[k == b]), rel=1e-12)
    assert conditional_w2(x, c, x, c, edges) == [0.0] * 4


def test_sparse_bins_give_none_and_unequal_sizes_subsample():
    c_ref = torch.linspace(0, 1, 100, dtype=F64)[:, None]
    edges = quantile_edges(c_ref, 4)
    c_gen = torch.full((50, 1), 0.1, dtype=F64)  # all generated points in the first bin
    x_gen = torch.zeros(50, 2, dtype=F64)
    out = conditional_w2(x_gen, c_gen, torch.zeros(100, 2, dtype=F64), c_ref, edges)
    assert out[0] == 0.0 and out[1:] == [None, None, None]


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (
            lambda: quantile_edges(torch.zeros(5, 2), 4),
            ValueError,
            r"scalar condition \(N,\) or \(N, 1\), got \(5, 2\)",
        ),
        (
            lambda: quantile_edges(torch.zeros(5, dtype=torch.long), 4),
            TypeError,
            "cond must be a float tensor",
        ),
        (
            lambda: quantile_edges(torch.tensor([0.0, math.nan]), 2),
            ValueError,
            "cond must be finite",
        ),
        (lambda: quantile_edges(torch.zeros(5), 0), ValueError, "num_bins must be >= 1"),
        (
            lambda: conditional_w2(
                torch.zeros(5, 2),
                torch.zeros(4),
                torch.zeros(5, 2),
                torch.zeros(5),
                quantile_edges(torch.zeros(5), 2),
            ),
            ValueError,
            "samples and their conditions must have the same rows, got 5 and 4",
        ),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
