"""Inference-time search on a trained 2-D run at equal NFE budgets (50, 100, 200 per sample).

Mean reward of best-of-N, SMC, Rollover Budget Forcing and FlowOpt steering with the
distance reward ``r(x) = -|x - c|^2``, and the W2 distance of their samples to the reward-tilted target
``p*(x) ~ p(x) exp(r(x) / beta)`` (importance resampling of 40 000 model samples), so reward
hacking (collapse onto the point) is visible next to the reward.

    .venv/bin/python bench/search.py --json bench/results/search.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, fmt, machine_info, setup, table, write_json  # noqa: E402
from flowmatch import api  # noqa: E402
from flowmatch.metrics.wasserstein import wasserstein2  # noqa: E402
from suite_common import SEEDS, trained_run  # noqa: E402

POINT = (1.5, 1.5)
BETA = 1.0
METHODS = ["best_of_n", "smc", "rbf", "flowopt"]


def tilted_target(run, n_base, n_out, seed):
    base = api.generate(run, n_base, solver="midpoint", nfe=32, seed=1000 + seed).samples
    r = -(base - torch.tensor(POINT)).square().sum(1)
    w = torch.softmax(r / BETA, 0)
    idx = torch.multinomial(
        w, n_out, replacement=True, generator=torch.Generator().manual_seed(seed)
    )
    return base[idx]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_args(parser)
    args = parser.parse_args()
    setup()
    print(f"Machine: {machine_info()}\n")
    t0 = time.perf_counter()
    run, _ = trained_run("checkerboard")
    m = 100 if args.quick else 500
    budgets = (50,) if args.quick else (50, 100, 200)
    targets = {s: tilted_target(run, 4000 if args.quick else 40_000, m, s) for s in SEEDS}
    raw, rows = [], []
    plain = [api.generate(run, m, solver="euler", nfe=10, seed=s).samples for s in SEEDS]
    pr = [float(-(x - torch.tensor(POINT)).square().sum(1).mean()) for x in plain]
    pw = [
        wasserstein2(x, targets[s], generator=torch.Generator().manual_seed(0))
        for x, s in zip(plain, SEEDS, strict=True)
    ]
    rows.append(["plain ODE (Euler 10 steps)", 10, fmt(pr, 3), fmt(pw, 3), "", ""])
    # the target itself: a search that matches it has this reward; a higher one is hacking
    tr = [float(-(targets[s] - torch.tensor(POINT)).square().sum(1).mean()) for s in SEEDS]
    rows.append(["tilted target (reference)", "", fmt(tr, 3), "0", "", ""])
    for budget in budgets:
        for method in METHODS:
            rew, w2, secs, nfes = [], [], [], []
            for s in SEEDS:
                out = api.search(
                    run,
                    m,
                    search=method,
                    reward="distance",
                    budget=budget,
                    seed=s,
                    search_options={"steps": 10},
                    reward_options={"point": list(POINT)},
                )
                rew.append(float(out.rewards.mean()))
                w2.append(
                    wasserstein2(
                        out.samples, targets[s], generator=torch.Generator().manual_seed(0)
                    )
                )
                secs.append(out.seconds)
                nfes.append(out.nfe)
            rows.append([method, budget, fmt(rew, 3), fmt(w2, 3), max(nfes), fmt(secs, 1)])
            raw.append(
                {
                    "method": method,
                    "budget": budget,
                    "reward": rew,
                    "w2_tilted": w2,
                    "nfe": nfes,
                    "seconds": secs,
                }
            )
    head = [
        "method",
        "budget NFE/sample",
        "mean reward",
        f"W2 to tilted target (beta={BETA})",
        "max NFE used",
        "wall s",
    ]
    print(
        f"### checkerboard run, reward -|x - {POINT}|^2, {m} samples per seed, seeds {SEEDS}, "
        "10 steps\n\n" + table(head, rows) + "\n"
    )
    print(f"total wall {time.perf_counter() - t0:.0f} s")
    write_json(args.json, {"rows": raw, "plain_reward": pr, "plain_w2": pw, "target_reward": tr})


if __name__ == "__main__":
    main()
