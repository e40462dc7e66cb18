"""Fixed cost of flowmatch's ``solve`` with a field that does no work (pure loop overhead).

Batch 16, 8 Euler steps, one thread: compares ``solve`` with a bare loop and times the
per-solve checks. Run: ``.venv/bin/python bench/solve_fixed_cost.py``.
"""

import time

import torch

from flowmatch.solvers import Euler, solve
from flowmatch.times import grid_values, make_grid
from flowmatch.utils.checks import check_batch, check_finite


def field(x, t, cond=None):
    return x


def timed(fn, n: int = 20_000) -> float:
    for _ in range(500):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    torch.set_num_threads(1)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    grid, euler = make_grid("uniform", 8), Euler()

    def bare():
        y, ts = x, grid.tolist()
        for a, b in zip(ts[:-1], ts[1:], strict=True):
            y = y + (b - a) * field(y, y.new_full((16,), a))
        return y

    rows = {
        "bare loop (8 steps)": timed(bare),
        "flowmatch solve (8 steps)": timed(lambda: solve(field, x, grid, euler)),
        "grid_values": timed(lambda: grid_values(grid)),
        "check_batch": timed(lambda: check_batch(x, "x")),
        "check_finite": timed(lambda: check_finite(x, "solution")),
    }
    print("| what | µs per call |\n|---|---|")
    for name, us in rows.items():
        print(f"| {name} | {us:.1f} |")


if __name__ == "__main__":
    main()
