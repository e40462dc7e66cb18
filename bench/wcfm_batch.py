"""W-CFM vs exact minibatch OT vs plain CFM at batch sizes 32 and 256: quality and cost per step.

Checkerboard, the training-methods setting (MLP 256 x 4, 2000 steps, TrainConfig defaults,
3 seeds; the batch-256 arms are the cached runs of ``training_methods.py``). Arms: ``cfm``,
``ot_cfm`` (exact OT on each batch, Tong et al. 2024), ``wcfm`` with epsilon 0.5 and 2 times
the batch's median pair cost (0.5 is the training-methods arm). Reported: W2 at Euler NFE 2 and 8 (2000 samples vs 2000
held-out), straightness, training time per step (ms, median over logging windows; OT's
pairing runs in the trainer's prefetch thread) and the W-CFM weights' effective sample size
(from ``metrics.jsonl``). The claim under test (Calvo-Ordonez et al. 2025): W-CFM is about as
straight as OT at the cost of CFM.

    .venv/bin/python bench/wcfm_batch.py --json bench/results/wcfm_batch.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Any

from common import add_common_args, fmt, machine_info, setup, table, write_json
from methods_common import cached_run, quality, run_straightness, test_data

SEEDS = (0, 1, 2)
ARMS = {
    "cfm": [],
    "ot_cfm": ["coupling.kind=exact_ot"],
    "wcfm": ["objective.kind=wcfm", "objective.epsilon=0.5"],
    "wcfm_eps2": ["objective.kind=wcfm", "objective.epsilon=2.0"],
}


def ess(run: Any) -> float:
    """Mean logged ``wcfm_ess`` of a run (``nan`` for other objectives)."""
    path = run.checkpoint.parent.parent / "metrics.jsonl"
    vals = [json.loads(x).get("wcfm_ess") for x in path.read_text().splitlines() if x.strip()]
    vals = [v for v in vals if v is not None]
    return statistics.mean(vals) if vals else float("nan")


def cell(values: list[float]) -> str:
    """``mean ± std``, or ``-`` for a quantity the arm does not have (NaN, e.g. ESS of CFM)."""
    return "-" if any(math.isnan(v) for v in values) else fmt(values, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--arms", default=",".join(ARMS))
    args = parser.parse_args()
    setup()
    steps = 30 if args.quick else args.steps
    seeds = [0] if args.quick else list(SEEDS)
    print(f"Machine: {machine_info()}")
    ref = test_data("checkerboard")[:2000]
    t0 = time.perf_counter()
    res: dict[str, list[dict[str, float]]] = {}
    for batch in (32, 256):
        for arm in args.arms.split(","):
            over = ARMS[arm]
            extra = [] if batch == 256 else [f"train.batch_size={batch}"]
            tag = f"checkerboard_{arm}" if batch == 256 else f"checkerboard_{arm}_b{batch}"
            for seed in seeds:
                run, info = cached_run(tag, "checkerboard", [*over, *extra], steps=steps, seed=seed)
                r = {
                    "w2_nfe2": quality(run, ref, solver="euler", nfe=2, seed=100 + seed),
                    "w2_nfe8": quality(run, ref, solver="euler", nfe=8, seed=100 + seed),
                    "straightness": run_straightness(run),
                    "ms_per_step": 1e3 * info["sec_per_step"],
                    "ess": ess(run),
                }
                res.setdefault(f"{arm} B={batch}", []).append(r)
                print(f"{arm} B={batch} seed {seed}: {r}", flush=True)
    total = time.perf_counter() - t0
    keys = ("w2_nfe2", "w2_nfe8", "straightness", "ms_per_step", "ess")
    rows = [[name, *(cell([r[k] for r in runs]) for k in keys)] for name, runs in res.items()]
    print()
    print(table(["arm", "W2 Euler 2", "W2 Euler 8", "straightness", "ms/step", "ESS"], rows))
    print(f"\nTotal wall time {total:.0f} s ({total / 60:.1f} min), {steps} steps per run.")
    write_json(args.json, {"args": vars(args), "steps": steps, "results": res, "total_s": total})


if __name__ == "__main__":
    main()
