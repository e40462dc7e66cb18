"""Sample quality on the 2-D checkerboard: flowmatch's Trainer vs a bare loop, and exact OT.

Setting: ``load_dataset("checkerboard", seed=0)`` (100 000 train / 10 000 test points, no
scaling), ``MLP(dim=2, hidden=256, depth=4)``, 5000 steps, batch 256, AdamW lr 1e-3 (no
weight decay), ONE torch thread, training seeds 0, 1, 2 (model init and batches). Models:

- ``bare``: a hand-written loop (independent coupling, linear path, velocity target, uniform
  t, constant lr, no clipping, no EMA; ``common.train_bare``);
- ``flowmatch``: ``Trainer`` + ``FlowMatchingObjective()`` with the same settings
  (``lr_schedule="constant", grad_clip=None, ema_decay=None``) -- the comparable one;
- ``flowmatch (defaults)``: ``TrainConfig`` defaults (cosine decay, grad_clip 1.0, EMA 0.999),
  sampled with the EMA weights -- what a user gets without tuning;
- ``flowmatch exact-OT``: as ``flowmatch`` with ``ExactOTCoupling()`` (Tong et al. 2024),
  skipped with a note if the coupling is not importable.

Metric: exact W2 (``flowmatch.metrics.wasserstein2``) between 2000 generated points and the
first 2000 held-out test points; samples come from the same source batch per seed (seed
1000 + training seed). Solvers: midpoint at NFE 8 (4 steps), Euler at NFE 2 and NFE 100.
Targets: flowmatch within 10 % of the bare loop's W2 (midpoint, NFE 8); the exact-OT model's
W2 at Euler NFE 2 within 10 % of its own NFE 100 value (the independent coupling's gap is
shown for contrast). The "data floor" row is W2 between 2000 training and 2000 test points:
no model can be expected to go below it at this sample size.

Trained weights are cached in bench/results/*.pt (git-ignored) and reused (``--no-cache``).

    .venv/bin/python bench/quality.py            # 12 trainings (~1 min each on a free core)
    .venv/bin/python bench/quality.py --quick    # smoke run, < 1 min, nothing cached
"""

from __future__ import annotations

import argparse
import math
import statistics
from typing import Any

import torch
from torch import nn

from common import (
    add_common_args,
    checkerboard,
    fmt,
    machine_info,
    optional_import,
    setup,
    table,
    trained_model,
    write_json,
)
from flowmatch.metrics import wasserstein2
from flowmatch.solvers import Euler, Midpoint, solve
from flowmatch.times import make_grid

SEEDS = (0, 1, 2)
EVAL_SEED_OFFSET = 1000
# (column label, solver, steps)
EVALS: tuple[tuple[str, Any, int], ...] = (
    ("midpoint NFE 8", Midpoint(), 4),
    ("Euler NFE 2", Euler(), 2),
    ("Euler NFE 100", Euler(), 100),
)
LABELS = {
    "bare": "bare PyTorch loop",
    "flowmatch": "flowmatch Trainer (matched: const lr, no clip, no EMA)",
    "flowmatch-defaults": "flowmatch Trainer (defaults: cosine, clip 1, EMA 0.999)",
    "flowmatch-ot": "flowmatch Trainer + ExactOTCoupling (matched)",
}


def evaluate(model: nn.Module, x_test: torch.Tensor, n: int, seed: int) -> dict[str, float]:
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(EVAL_SEED_OFFSET + seed))
    out = {}
    with torch.no_grad():
        for label, solver, steps in EVALS:
            x1 = solve(model, x0, make_grid("uniform", steps), solver).x
            out[label] = wasserstein2(x1, x_test[:n], max_samples=n)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--eval-points", type=int, default=2000)
    parser.add_argument("--no-cache", action="store_true", help="retrain, do not reuse weights")
    parser.add_argument("--kinds", default="bare,flowmatch,flowmatch-ot,flowmatch-defaults")
    args = parser.parse_args()
    setup()
    cache = not args.no_cache
    if args.quick:
        args.steps, args.eval_points, cache = 50, 250, False
    kinds = args.kinds.split(",")
    notes = []
    ot_mod, ot_note = optional_import("flowmatch.couplings")
    if "flowmatch-ot" in kinds and (ot_mod is None or not hasattr(ot_mod, "ExactOTCoupling")):
        kinds.remove("flowmatch-ot")
        notes.append(f"exact-OT rows skipped: ExactOTCoupling not importable ({ot_note})")
    print(f"Machine: {machine_info()}")
    print(
        f"{args.steps} training steps, batch 256, seeds {SEEDS}; W2 on {args.eval_points} "
        f"generated vs {args.eval_points} held-out points\n"
    )
    x_train, x_test = checkerboard()
    n = args.eval_points
    w2: dict[str, dict[str, list[float]]] = {}
    train_s: dict[str, list[float]] = {}
    for seed in SEEDS:
        for kind in kinds:
            model, secs = trained_model(kind, x_train, seed=seed, steps=args.steps, cache=cache)
            res = evaluate(model, x_test, n, seed)
            for label, value in res.items():
                w2.setdefault(kind, {}).setdefault(label, []).append(value)
            train_s.setdefault(kind, []).append(secs)
    floor = []
    for seed in SEEDS:
        idx = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
        floor.append(wasserstein2(x_train[idx], x_test[:n], max_samples=n))

    labels = [e[0] for e in EVALS]
    rows = []
    for kind in kinds:
        gap = [
            a / b for a, b in zip(w2[kind]["Euler NFE 2"], w2[kind]["Euler NFE 100"], strict=True)
        ]
        secs = [s for s in train_s[kind] if not math.isnan(s)]
        rows.append(
            [LABELS[kind]]
            + [fmt(w2[kind][lab], 3) for lab in labels]
            + [fmt(gap, 2), fmt(secs, 0) if secs else "cached"]
        )
    rows.append([f"data floor ({n} train vs {n} test points)", fmt(floor, 3), "", "", "", ""])
    print(
        table(
            ["model"] + [f"W2 {lab}" for lab in labels] + ["W2 NFE 2 / W2 NFE 100", "train wall s"],
            rows,
        )
    )
    print()
    summary = []
    if "bare" in w2 and "flowmatch" in w2:
        fm, bare = w2["flowmatch"]["midpoint NFE 8"], w2["bare"]["midpoint NFE 8"]
        ratio = statistics.mean(fm) / statistics.mean(bare)
        per_seed = [a / b for a, b in zip(fm, bare, strict=True)]
        summary.append(
            f"(a) flowmatch / bare W2 at midpoint NFE 8: ratio of means {ratio:.3f}, "
            f"per-seed ratios {fmt(per_seed, 3)} (target <= 1.10)"
        )
    if "flowmatch-ot" in w2:
        ot = w2["flowmatch-ot"]
        gap = statistics.mean(ot["Euler NFE 2"]) / statistics.mean(ot["Euler NFE 100"])
        summary.append(
            f"(b) exact-OT W2 Euler NFE 2 / NFE 100: ratio of means {gap:.3f} (target <= 1.10)"
        )
    if "flowmatch" in w2:
        ind = w2["flowmatch"]
        gap = statistics.mean(ind["Euler NFE 2"]) / statistics.mean(ind["Euler NFE 100"])
        summary.append(f"    independent coupling, same ratio for contrast: {gap:.3f}")
    for line in summary + [f"Note: {note}" for note in notes]:
        print(line)
    write_json(args.json, {"w2": w2, "floor": floor, "train_s": train_s, "args": vars(args)})


if __name__ == "__main__":
    main()
