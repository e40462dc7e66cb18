"""The EDM grid: valid grid, EDM's rho spacing in sigma = (1 - t) / t, options validated."""

import pytest
import torch

from flowmatch.times import check_grid, make_grid


@pytest.mark.parametrize("n", [1, 2, 5, 32])
def test_edm_grid_is_a_valid_increasing_grid(n):
    grid = make_grid("edm", n, dtype=torch.float64)
    check_grid(grid, full=True)
    assert grid.shape == (n + 1,) and grid[0] == 0 and grid[-1] == 1


def test_interior_times_are_rho_spaced_in_sigma():
    # sigma_i^(1/rho) is an arithmetic sequence from sigma_max^(1/rho) to sigma_min^(1/rho)
    # (Karras et al. 2022, eq. 5); the two ends are replaced by t = 0 and t = 1.
    n, rho, smin, smax = 10, 7.0, 0.002, 80.0
    t = make_grid("edm", n, dtype=torch.float64, rho=rho, sigma_min=smin, sigma_max=smax)
    root = ((1 - t[1:-1]) / t[1:-1]) ** (1 / rho)
    step = (smin ** (1 / rho) - smax ** (1 / rho)) / n
    expected = smax ** (1 / rho) + step * torch.arange(1, n, dtype=torch.float64)
    torch.testing.assert_close(root, expected, rtol=1e-12, atol=1e-12)


def test_larger_rho_puts_more_steps_near_the_data():
    lo, hi = make_grid("edm", 8, rho=1.0), make_grid("edm", 8, rho=7.0)
    assert (hi[1:-1] > 0.5).sum() > (lo[1:-1] > 0.5).sum()


def test_edm_options_are_validated():
    with pytest.raises(ValueError, match="sigma_min must be < sigma_max = 1.0, got 2.0"):
        make_grid("edm", 4, sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="rho must be > 0, got -1.0"):
        make_grid("edm", 4, rho=-1.0)
