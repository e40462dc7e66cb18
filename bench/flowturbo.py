"""FlowTurbo vs Heun at equal CPU time (checkerboard, digits).

The refiner (1 x 64 MLP on [x, v, t]) is trained with ``flowmatch refine`` on the frozen run
(2000 steps) and cached in the run directory.

    .venv/bin/python bench/flowturbo.py --json bench/results/flowturbo.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, fmt, machine_info, mean_std, setup, table, write_json  # noqa: E402
from flowmatch import api  # noqa: E402
from flowmatch.solvers import solve  # noqa: E402
from suite_common import SEEDS, metric_name, score, test_data, trained_run  # noqa: E402

HEUN = [4, 6, 8, 10, 12, 16, 20]
TURBO = [(1, 2, 1), (1, 3, 2), (1, 4, 3), (1, 5, 3), (2, 4, 3), (1, 7, 4)]


def timed(run, sampler, grid, x0, labels):
    start = time.process_time()
    with torch.no_grad():
        sol = solve(run.field, x0, grid, sampler, cond=labels)
    return run.to_data_space(sol.x), time.process_time() - start, sol.nfe


def evaluate(name, n, steps):
    run, _ = trained_run(name)
    if api.load_refiner(run) is None:
        start = time.perf_counter()
        api.refine(run.directory, steps=steps, batch_size=256)
        print(f"trained the {name} refiner in {time.perf_counter() - start:.0f} s")
    ref = test_data(run)[:n]
    labels = (torch.arange(n) % run.num_classes) if run.num_classes else None
    arms = [(f"Heun NFE {k}", "heun", {"nfe": k}) for k in HEUN]
    arms += [
        (
            f"FlowTurbo H{h}+P{p}+R{r}",
            "flowturbo",
            {"solver_options": {"n_heun": h, "n_pseudo": p, "n_refine": r}},
        )
        for h, p, r in TURBO
    ]
    out = []
    for label, solver, kw in arms:
        sampler, grid, _ = api.sampling_plan(
            run, solver, nfe=kw.get("nfe"), solver_options=kw.get("solver_options")
        )
        scores, secs, nfe = [], [], 0
        for s in SEEDS:
            x, sec, nfe = timed(run, sampler, grid, run.noise(n, seed=s), labels)
            scores.append(score(run, x, ref))
            secs.append(sec)
        out.append({"run": name, "arm": label, "nfe": nfe, "score": scores, "cpu_seconds": secs})
    return run, out


def speedups(rows):
    """For each FlowTurbo arm: the cheapest Heun arm at least as good, and the time ratio."""
    heun = [r for r in rows if r["arm"].startswith("Heun")]
    text = []
    for r in rows:
        if r["arm"].startswith("Heun"):
            continue
        q, t = mean_std(r["score"])[0], mean_std(r["cpu_seconds"])[0]
        ok = [h for h in heun if mean_std(h["score"])[0] <= q]
        if ok:
            h = min(ok, key=lambda h: mean_std(h["cpu_seconds"])[0])
            text.append(
                f"{r['arm']}: {q:.3f} in {t:.3f} s; Heun matches it at {h['arm']} in "
                f"{mean_std(h['cpu_seconds'])[0]:.3f} s (FlowTurbo saves "
                f"{1 - t / mean_std(h['cpu_seconds'])[0]:.0%})"
            )
        else:
            text.append(
                f"{r['arm']}: {q:.3f} in {t:.3f} s; no Heun arm up to NFE {HEUN[-1]} is as good"
            )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_args(parser)
    args = parser.parse_args()
    setup()
    print(f"Machine: {machine_info()}\n")
    t0 = time.perf_counter()
    raw = []
    for name in ["checkerboard"] if args.quick else ["checkerboard", "digits"]:
        run, rows = evaluate(name, 300 if args.quick else 2000, 200 if args.quick else 2000)
        raw += rows
        table_rows = [
            [r["arm"], r["nfe"], fmt(r["score"], 3), fmt(r["cpu_seconds"], 3)] for r in rows
        ]
        print(
            f"### {name}: {metric_name(run)} and CPU time of the solve, seeds {SEEDS}\n\n"
            + table(["sampler", "predictor NFE", metric_name(run), "CPU s"], table_rows)
            + "\n"
        )
        print("\n".join(speedups(rows)) + "\n")
    print(f"total wall {time.perf_counter() - t0:.0f} s")
    write_json(args.json, {"rows": raw})


if __name__ == "__main__":
    main()
