"""Learned condition-dependent source (CSFM) vs the Gaussian source on the conditional 2-D toy.

Kim, Park, Jeon & Kim (2026), "Better Source, Better Flow": their 2-D toy, 8 Gaussians with
the polar angle as a continuous condition (``8gaussians_angle``). Arms, each trained with
``flowmatch train`` (MLP 256 x 4, 3000 steps, batch 256, TrainConfig defaults, checkpoints
every 500 steps, 3 seeds): ``gaussian`` (conditional FM from N(0, I)), ``csfm`` (learned
Gaussian source, variance-only KL weight 5, alignment weight 1), ``csfm_det`` (the same with
a deterministic source ``x0 = mu(c)``: the paper's collapse ablation) and ``csfm_nokl`` (no
variance KL). Metric: the conditional W2 of ``conditional_toy.py`` (16 angle bins of the
ground truth, 200 points per bin, generated with the bins' own angles), midpoint NFE 16 and
Euler NFE 4, at every checkpoint. "Iterations to reach": the first checkpoint whose
conditional W2 (midpoint 16) is at most 1.1 x the Gaussian arm's final value (mean over
seeds); the paper claims 2-3x fewer iterations for CSFM.

    .venv/bin/python bench/csfm_toy.py --json bench/results/csfm_toy.json
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch

from common import add_common_args, fmt, machine_info, setup, table, write_json
from conditional_toy import ground_truth, per_bin_w2
from flowmatch import api
from flowmatch.interfaces import Condition
from methods_common import cached_run

SEEDS = (0, 1, 2)
EVERY = 500
LEARNED = ["source.kind=learned_gaussian", "objective.kind=csfm"]
ARMS = {
    "gaussian": [],
    "csfm": LEARNED,
    "csfm_det": [*LEARNED, "objective.deterministic=true"],
    "csfm_nokl": [*LEARNED, "objective.kl_weight=0"],
}
SAMPLERS = (("midpoint 16", "midpoint", 16), ("Euler 4", "euler", 4))


def cond_w2(run: api.Run, gt: tuple, seed: int, solver: str, nfe: int) -> float:
    _, ref_x, ref_angle, ref_bin, _ = gt
    x = api.generate(
        run, len(ref_x), cond=Condition(values=ref_angle), solver=solver, nfe=nfe, seed=1000 + seed
    ).samples
    bins = per_bin_w2(x, ref_bin, ref_x, ref_bin, int(ref_bin.max()) + 1)
    return sum(bins) / len(bins)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--arms", default=",".join(ARMS))
    args = parser.parse_args()
    setup()
    steps = 40 if args.quick else args.steps
    every = 20 if args.quick else EVERY
    seeds = [0] if args.quick else list(SEEDS)
    print(f"Machine: {machine_info()}")
    gt = ground_truth(16, 200)
    t0 = time.perf_counter()
    curves: dict[str, list[dict[str, Any]]] = {}
    for arm in args.arms.split(","):
        over = ARMS[arm]
        for seed in seeds:
            extra = [
                f"train.checkpoint_every={every}",
                f"train.keep_checkpoints={steps // every + 1}",
            ]
            final, info = cached_run(
                f"angle_{arm}", "8gaussians_angle", [*over, *extra], steps=steps, seed=seed
            )
            root = Path(final.checkpoint).parent
            curve: dict[str, Any] = {"steps": [], "sec_per_step": info["sec_per_step"]}
            for label, _, _ in SAMPLERS:
                curve[label] = []
            for k in range(every, steps + 1, every):
                run = api.load_run(root.parent, checkpoint=root / f"step_{k:07d}")
                curve["steps"].append(k)
                for label, solver, nfe in SAMPLERS:
                    curve[label].append(cond_w2(run, gt, seed, solver, nfe))
            if hasattr(final.source, "params"):
                with torch.no_grad():
                    _, lv = final.source.params(Condition(values=torch.zeros(8, 1)), 8)
                curve["sigma"] = float(torch.exp(0.5 * lv).mean())
            curves.setdefault(arm, []).append(curve)
            print(f"{arm} seed {seed}: {curve}", flush=True)
    total = time.perf_counter() - t0
    target = 1.1 * sum(c["midpoint 16"][-1] for c in curves["gaussian"]) / len(curves["gaussian"])
    rows = []
    for arm, cs in curves.items():
        reach = []
        for c in cs:
            hit = [s for s, w in zip(c["steps"], c["midpoint 16"], strict=True) if w <= target]
            reach.append(hit[0] if hit else math.nan)
        row = [
            arm,
            fmt([c["midpoint 16"][-1] for c in cs], 3),
            fmt([c["Euler 4"][-1] for c in cs], 3),
        ]
        row += [fmt([c["midpoint 16"][1] for c in cs], 3) if len(cs[0]["steps"]) > 1 else "-"]
        row += [fmt(reach, 0) if all(r == r for r in reach) else f"{reach}"]
        row += [fmt([c.get("sigma", 1.0) for c in cs], 3)]
        rows.append(row)
    print()
    print(f"target: 1.1 x the Gaussian arm's final conditional W2 (midpoint 16) = {target:.3f}")
    print(
        table(
            [
                "arm",
                "cond W2 mid16 final",
                "cond W2 Euler4 final",
                f"cond W2 mid16 @ {2 * every}",
                "steps to target",
                "source sigma",
            ],
            rows,
        )
    )
    print(f"\nTotal wall time {total:.0f} s ({total / 60:.1f} min), {steps} steps per run.")
    write_json(
        args.json,
        {"args": vars(args), "steps": steps, "target": target, "curves": curves, "total_s": total},
    )


if __name__ == "__main__":
    main()
