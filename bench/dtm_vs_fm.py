"""Difference Transition Matching vs flow matching at equal backbone evaluations (T = 2..16).

Checkerboard, the training-methods setting (2000 steps, batch 256, TrainConfig defaults,
3 seeds). FM: the ``cfm`` arm of ``training_methods.py`` (MLP 256 x 4), sampled with Euler
and midpoint at NFE T (T and T/2 steps). DTM: ``model.kind = "dtm"`` with the same backbone
(256 x 4, 64 output features) and a small flow head (64 x 2, 4 Euler steps per transition:
about 30 % of a backbone evaluation's FLOPs per transition), trained for each T separately
(a DTM model is valid on its own grid only) and sampled with T transitions
(``solver = "transition"``, nfe = T). Metric: W2, 2000 samples vs 2000 held-out points.

    .venv/bin/python bench/dtm_vs_fm.py --json bench/results/dtm_vs_fm.json
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from common import add_common_args, fmt, machine_info, setup, table, write_json
from methods_common import cached_run, quality, test_data

SEEDS = (0, 1, 2)
STEPS_T = (2, 4, 8, 16)
DTM = ["model.kind=dtm", "model.hidden=256", "model.depth=4", "model.features=64"]
DTM += ["model.head_hidden=64", "model.head_depth=2", "objective.kind=dtm"]
DTM += ["objective.head_steps=4"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--T", default=",".join(map(str, STEPS_T)), help="transition counts")
    args = parser.parse_args()
    setup()
    steps = 30 if args.quick else args.steps
    seeds = [0] if args.quick else list(SEEDS)
    budgets = [int(v) for v in args.T.split(",")]
    print(f"Machine: {machine_info()}")
    ref = test_data("checkerboard")[:2000]
    t0 = time.perf_counter()
    res: dict[str, dict[int, list[float]]] = {"fm_euler": {}, "fm_midpoint": {}, "dtm": {}}
    for seed in seeds:
        fm, _ = cached_run("checkerboard_cfm", "checkerboard", [], steps=steps, seed=seed)
        for T in budgets:
            res["fm_euler"].setdefault(T, []).append(
                quality(fm, ref, solver="euler", nfe=T, seed=100 + seed)
            )
            res["fm_midpoint"].setdefault(T, []).append(
                quality(fm, ref, solver="midpoint", nfe=T, seed=100 + seed)
            )
            over = [
                *DTM,
                f"objective.steps={T}",
                "sample.solver=transition",
                f"sample.solver.nfe={T}",
            ]
            run, _ = cached_run(
                f"checkerboard_dtm_T{T}", "checkerboard", over, steps=steps, seed=seed
            )
            res["dtm"].setdefault(T, []).append(
                quality(run, ref, solver="transition", nfe=T, seed=100 + seed)
            )
            print(
                f"seed {seed} T={T}: " + ", ".join(f"{k} {v[T][-1]:.3f}" for k, v in res.items()),
                flush=True,
            )
    total = time.perf_counter() - t0
    rows = [[f"T = {T}", *(fmt(res[k][T], 3) for k in res)] for T in budgets]
    print()
    print(table(["backbone evaluations", "FM Euler", "FM midpoint", "DTM (T transitions)"], rows))
    print(f"\nTotal wall time {total:.0f} s ({total / 60:.1f} min), {steps} steps per run.")
    out: dict[str, Any] = {k: {str(T): v for T, v in d.items()} for k, d in res.items()}
    write_json(args.json, {"args": vars(args), "steps": steps, "results": out, "total_s": total})


if __name__ == "__main__":
    main()
