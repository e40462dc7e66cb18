"""Inference grids: construction, the SD3 shift, and validation errors."""

from __future__ import annotations

import pytest
import torch

from flowmatch.times import (
    GRIDS,
    check_grid,
    custom_grid,
    grid_values,
    make_grid,
    shifted_grid,
    uniform_grid,
)


# Explicit grids ("values") have one fixed number of steps and grids stored with a run (BOSS)
# need a run: they are tested below, in tests/times/test_boss.py and tests/sampling.
@pytest.mark.parametrize(
    "kind",
    [
        k
        for k in GRIDS
        if not GRIDS.entry(k).config.fixed_length and not getattr(GRIDS[k], "stored_in_run", False)
    ],
)
@pytest.mark.parametrize("num_steps", [1, 2, 7, 50])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_named_grids_are_valid(kind, num_steps, dtype):
    grid = make_grid(kind, num_steps, dtype=dtype)
    assert grid.shape == (num_steps + 1,) and grid.dtype == dtype
    assert grid[0].item() == 0.0 and grid[-1].item() == 1.0  # exact endpoints
    assert (grid.diff() > 0).all()
    check_grid(grid, full=True)


def test_uniform_grid_is_equally_spaced():
    grid = uniform_grid(8, dtype=torch.float64)
    torch.testing.assert_close(grid.diff(), torch.full((8,), 0.125, dtype=torch.float64))
    assert make_grid("uniform", 4).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_shift_one_is_uniform():
    torch.testing.assert_close(
        shifted_grid(16, 1.0, dtype=torch.float64),
        uniform_grid(16, dtype=torch.float64),
        rtol=0,
        atol=1e-15,
    )


@pytest.mark.parametrize("shift", [0.5, 3.0, 10.0])
def test_shift_multiplies_noise_to_signal_odds(shift):
    # SD3's shift in the noise level s = 1 - t is s' = a s / (1 + (a - 1) s), i.e. the odds
    # s / (1 - s) are multiplied by a (Esser et al. 2024, eq. 23): check that property.
    u = uniform_grid(10, dtype=torch.float64)[1:-1]
    t = shifted_grid(10, shift, dtype=torch.float64)[1:-1]
    torch.testing.assert_close((1 - t) / t, shift * (1 - u) / u, rtol=1e-12, atol=0)


def test_shift_above_one_refines_the_noise_end():
    grid = make_grid("shifted", 10, shift=3.0, dtype=torch.float64)
    steps = grid.diff()
    assert steps[0] < steps[-1]
    assert (steps.diff() > 0).all()  # step sizes grow monotonically towards the data


def test_grid_device_argument():
    assert make_grid("shifted", 3, device="cpu").device.type == "cpu"


def test_custom_grid_accepts_both_directions():
    assert custom_grid([0.0, 0.3, 1.0]).tolist() == pytest.approx([0.0, 0.3, 1.0])
    back = custom_grid(torch.tensor([1.0, 0.5, 0.0]), dtype=torch.float64)
    assert back.dtype == torch.float64 and back.tolist() == [1.0, 0.5, 0.0]


def test_check_grid_accepts_partial_and_decreasing():
    g = torch.tensor([0.2, 0.5, 0.6])
    assert check_grid(g) is g
    check_grid(torch.tensor([1.0, 0.0]), full=True)


@pytest.mark.parametrize(
    ("grid", "exc", "match"),
    [
        ([0.0, 1.0], TypeError, "grid must be a 1-D torch.Tensor, got list"),
        (
            torch.tensor([0, 1]),
            TypeError,
            "grid must be a floating-point tensor, got dtype torch.int64",
        ),
        (
            torch.zeros(2, 2),
            ValueError,
            r"grid must be 1-D with at least 2 times, got shape \(2, 2\)",
        ),
        (
            torch.tensor([0.5]),
            ValueError,
            r"grid must be 1-D with at least 2 times, got shape \(1,\)",
        ),
        (torch.tensor([0.0, float("nan"), 1.0]), ValueError, "grid must hold finite floats"),
        (torch.tensor([0.0, 0.6, 0.4, 1.0]), ValueError, "grid must be strictly monotone"),
        (torch.tensor([0.0, 0.5, 0.5, 1.0]), ValueError, "grid must be strictly monotone"),
        (torch.tensor([-0.1, 0.5, 1.0]), ValueError, r"grid must lie in \[0, 1\]"),
        (torch.tensor([0.0, 0.5, 1.2]), ValueError, r"grid must lie in \[0, 1\]"),
    ],
)
def test_check_grid_errors(grid, exc, match):
    # check_grid delegates to grid_values (the one implementation): both must reject.
    for check in (check_grid, grid_values):
        with pytest.raises(exc, match=match):
            check(grid)


def test_grid_values_returns_the_times_as_floats():
    g = torch.tensor([1.0, 0.25, 0.0], dtype=torch.float64)
    values = grid_values(g, full=True)
    assert values == [1.0, 0.25, 0.0] and all(type(v) is float for v in values)


def test_check_grid_full_requires_endpoints():
    with pytest.raises(
        ValueError, match=r"grid must include both endpoints 0 and 1; got first=0.0, last=0.75"
    ):
        check_grid(torch.tensor([0.0, 0.5, 0.75]), full=True)
    with pytest.raises(ValueError, match=r"times must include both endpoints"):
        check_grid(torch.tensor([0.1, 1.0]), name="times", full=True)
    with pytest.raises(ValueError, match="grid must include both endpoints"):
        custom_grid([0.2, 0.6, 1.0])


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (
            lambda: make_grid("karras", 4),
            ValueError,
            r"unknown grid 'karras'; choose one of \[.*'aligned', .*'edm', 'shifted', 'uniform', 'values'\]",
        ),
        (lambda: make_grid("uniform", 0), ValueError, "num_steps must be >= 1, got 0"),
        (lambda: make_grid("uniform", 2.0), TypeError, r"num_steps must be an int, got 2\.0"),
        (
            lambda: make_grid("uniform", 4, shift=2.0),
            ValueError,
            "shift=2.0 only applies to the 'shifted' grid",
        ),
        (
            lambda: make_grid("shifted", 4, shift=0.0),
            ValueError,
            "shift must be > 0",
        ),
        (
            lambda: shifted_grid(4, shift=-1.0),
            ValueError,
            "shift must be a finite number > 0, got -1.0",
        ),
        (lambda: custom_grid([0.0, 0.7, 0.3, 1.0]), ValueError, "grid must be strictly monotone"),
    ],
)
def test_make_grid_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_values_grid_is_its_values_and_refuses_another_step_count():
    grid = make_grid("values", 2, values=(0.0, 0.3, 1.0), dtype=torch.float64)
    assert grid.tolist() == [0.0, 0.3, 1.0]
    with pytest.raises(ValueError, match="has 2 steps"):
        make_grid("values", 3, values=(0.0, 0.3, 1.0))
    with pytest.raises(ValueError, match="values"):
        GRIDS.config("values", values=(0.0, 0.7, 0.5, 1.0))
