"""Two-model sampling on digits: a small model early, the large one late.

The switch time is chosen on a validation draw (``choose_switch``: the latest switch whose FD
stays within 5 % of the large model alone), then evaluated on three other seeds; the saving is
CPU time (process_time, the minimum of 5 repeats) of the sampler at equal quality.

    .venv/bin/python bench/two_model.py --json bench/results/two_model.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, fmt, machine_info, mean_std, setup, table, write_json  # noqa: E402
from flowmatch.guidance import SwitchedField  # noqa: E402
from flowmatch.sampling.switch import choose_switch  # noqa: E402
from flowmatch.solvers import Euler, solve  # noqa: E402
from flowmatch.times import make_grid  # noqa: E402
from suite_common import SEEDS, score, test_data, trained_run  # noqa: E402

STEPS = 20


def timed(field, x0, grid, labels, repeats=5):
    """The solve and its CPU time, the minimum over ``repeats`` (the shared machine's noise)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        with torch.no_grad():
            x = solve(field, x0, grid, Euler(), cond=labels).x
        best = min(best, time.process_time() - start)
    return x, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_args(parser)
    args = parser.parse_args()
    setup()
    print(f"Machine: {machine_info()}\n")
    t0 = time.perf_counter()
    large, _ = trained_run("digits")
    small, _ = trained_run("digits_small")
    ref = test_data(large)
    n = 300 if args.quick else 1000
    grid = make_grid("uniform", STEPS)
    labels = torch.arange(n) % 10

    def fd(x):
        return score(large, large.to_data_space(x), ref)

    choice = choose_switch(
        small.field,
        large.field,
        large.noise(n, seed=99),
        grid,
        Euler(),
        fd,
        tolerance=0.05,
        cond=labels,
    )
    sweep = [[f"{c:.2f}", f"{v:.2f}"] for c, v in choice.scores.items()]
    print(
        f"### validation sweep (seed 99): FD of the large model alone {choice.reference:.2f}\n\n"
        + table(["switch t", "FD"], sweep)
        + "\n"
    )
    print(f"chosen switch t = {choice.switch:.2f} ({choice.early_steps} of {STEPS} steps small)\n")
    arms = {
        "large alone": large.field,
        "small alone": small.field,
        f"small -> large at t={choice.switch:.2f} (chosen)": SwitchedField(
            small.field, large.field, choice.switch
        ),
    }
    for t in (0.15, 0.25):  # earlier switches, for the trade-off around the chosen one
        if t < choice.switch:
            arms[f"small -> large at t={t:.2f}"] = SwitchedField(small.field, large.field, t)
    rows, raw = [], []
    base_time = None
    for label, field in arms.items():
        fds, secs = [], []
        for s in SEEDS:
            x, sec = timed(field, large.noise(n, seed=s), grid, labels)
            fds.append(fd(x))
            secs.append(sec)
        base_time = base_time or mean_std(secs)[0]
        rows.append([label, fmt(fds, 2), fmt(secs, 3), f"{1 - mean_std(secs)[0] / base_time:+.0%}"])
        raw.append({"arm": label, "fd": fds, "cpu_seconds": secs})
    print(
        f"### evaluation: Euler {STEPS} steps, {n} samples, seeds {SEEDS}\n\n"
        + table(["sampler", "FD", "CPU s", "time saved vs large"], rows)
        + "\n"
    )
    print(f"total wall {time.perf_counter() - t0:.0f} s")
    write_json(
        args.json,
        {
            "switch": choice.switch,
            "sweep": choice.scores,
            "reference": choice.reference,
            "rows": raw,
        },
    )


if __name__ == "__main__":
    main()
