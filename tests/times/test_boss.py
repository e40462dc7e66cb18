"""BOSS dynamic program: optimal against brute force, valid grids, errors."""

import itertools

import pytest
import torch

from flowmatch.times import make_grid
from flowmatch.times.boss import bellman_indices


def _brute(cost, k):
    m = cost.shape[0] - 1
    best = None
    for inner in itertools.combinations(range(1, m), k - 1):
        path = [0, *inner, m]
        total = sum(float(cost[a, b]) for a, b in zip(path[:-1], path[1:], strict=True))
        if best is None or total < best[1]:
            best = (path, total)
    return best


@pytest.mark.parametrize("m,k", [(5, 1), (5, 2), (6, 3), (7, 4), (8, 8)])
def test_dynamic_program_equals_brute_force(m, k):
    g = torch.Generator().manual_seed(m * 10 + k)
    cost = torch.rand(m + 1, m + 1, generator=g, dtype=torch.float64)
    path, total = bellman_indices(cost, k)
    ref_path, ref_total = _brute(cost, k)
    assert total == pytest.approx(ref_total, rel=1e-12)
    assert path[0] == 0 and path[-1] == m and len(path) == k + 1
    assert all(a < b for a, b in zip(path[:-1], path[1:], strict=True))
    assert path == ref_path  # continuous random costs: the optimum is unique


def test_errors():
    c = torch.zeros(4, 4)
    with pytest.raises(ValueError, match="exceeds the fine grid's 3 intervals"):
        bellman_indices(c, 4)
    with pytest.raises(ValueError, match="square"):
        bellman_indices(torch.zeros(3, 4), 1)
    with pytest.raises(TypeError, match="floating tensor"):
        bellman_indices(torch.zeros(3, 3, dtype=torch.long), 1)
    bad = torch.zeros(3, 3)
    bad[0, 2] = float("nan")
    with pytest.raises(ValueError, match="finite and >= 0"):
        bellman_indices(bad, 1)
    with pytest.raises(ValueError, match="stored with its run"):
        make_grid("boss", 4)


def test_cosine_grid_is_valid_and_symmetric():
    for n in (1, 2, 5, 16):
        g = make_grid("cosine", n, dtype=torch.float64)
        assert g[0] == 0 and g[-1] == 1 and (g.diff() > 0).all()
        torch.testing.assert_close(g, 1 - g.flip(0))
    steps = make_grid("cosine", 16, dtype=torch.float64).diff()
    assert steps[0] < steps[8] and steps[-1] < steps[8]  # denser at both ends
