"""Time grids at small NFE: BOSS vs uniform, shifted, EDM and cosine grids (Euler, midpoint).

.venv/bin/python bench/grids.py --json bench/results/grids.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, fmt, machine_info, mean_std, setup, table, write_json  # noqa: E402
from flowmatch import api  # noqa: E402
from suite_common import SEEDS, score, test_data, trained_run  # noqa: E402

GRIDS = ["uniform", "shifted", "edm", "cosine", "boss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_args(parser)
    args = parser.parse_args()
    setup()
    print(f"Machine: {machine_info()}\n")
    names = ["checkerboard"] if args.quick else ["checkerboard", "moons", "digits"]
    n = 300 if args.quick else 2000
    t0 = time.perf_counter()
    raw, rows, summary = [], [], []
    for name in names:
        run, _ = trained_run(name)
        ref = test_data(run)[:n]
        for solver in ("euler", "midpoint"):
            start = time.perf_counter()
            api.compute_grids(run, nfe=[4, 8], solver=solver, fine_steps=100, num_samples=256)
            boss_s = time.perf_counter() - start
            for nfe in (4, 8):
                res = {}
                for grid in GRIDS:
                    res[grid] = [
                        score(
                            run,
                            api.generate(run, n, solver=solver, nfe=nfe, grid=grid, seed=s).samples,
                            ref,
                        )
                        for s in SEEDS
                    ]
                    raw.append(
                        {
                            "run": name,
                            "solver": solver,
                            "nfe": nfe,
                            "grid": grid,
                            "scores": res[grid],
                            "boss_seconds": boss_s,
                        }
                    )
                best_other = min(GRIDS[:-1], key=lambda g: mean_std(res[g])[0])
                gain = 1 - mean_std(res["boss"])[0] / mean_std(res[best_other])[0]
                rows.append(
                    [
                        name,
                        solver,
                        nfe,
                        *(fmt(res[g], 3) for g in GRIDS),
                        f"{100 * gain:+.0f} % vs {best_other}",
                        f"{boss_s:.0f}",
                    ]
                )
                summary.append(gain)
    head = ["run", "solver", "NFE", *GRIDS, "BOSS vs best other", "BOSS cost s"]
    print(
        f"### W2 (checkerboard, moons) or FD (digits) per grid, seeds {SEEDS}, "
        f"{n} samples\n\n" + table(head, rows) + "\n"
    )
    print(f"total wall {time.perf_counter() - t0:.0f} s")
    write_json(args.json, {"rows": raw})


if __name__ == "__main__":
    main()
