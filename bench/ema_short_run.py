"""EMA after a short run: ``flowmatch train --data digits --steps 1500``, EMA vs raw weights.

Issue 6, part 1: with flowmatch 0.1.0 the EMA (decay 0.999 from the first step, no warm-up)
of a 1500-step digits run gave noise (FD 39.98 with the EMA weights against 4.88 with the raw
ones). Target: the FD of the default (EMA) output within 10 % of the raw weights' FD.

Each seed trains the CLI's digits run (``api.resolve_config(data="digits", steps=1500)``: the
image preset's UNet, batch 128, lr 1e-3, 200 warm-up steps, class-conditional with label
dropout 0.1) twice:

- ``0.1.0``: that release's behaviour -- cosine decay to 0, ``grad_clip=1.0``, and the EMA
  without warm-up (``EMA(..., warmup=False)`` patched into the trainer for this run only);
- ``now``: this checkout's defaults (constant lr, no clipping, EMA with warm-up).

Both are scored like ``flowmatch eval`` (``api.evaluate``: midpoint, 16 NFE, 1000 samples with
labels cycling 0..9, FD in digit-classifier features against the 297 held-out digits) with the
EMA weights (what ``sample``/``eval`` use) and the raw weights (``load_run(use_ema=False)``).

    .venv/bin/python bench/ema_short_run.py --json bench/results/ema_short_run.json
    .venv/bin/python bench/ema_short_run.py --quick      # 200 steps, one seed
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from typing import Any

from common import BENCH_DIR, add_common_args, fmt, machine_info, setup, table, write_json
from flowmatch import api
from flowmatch.train import loop as loop_mod
from flowmatch.train.ema import EMA

WORK_DIR = BENCH_DIR.parent / "runs" / "bench-ema-short"
VARIANTS: dict[str, list[str]] = {
    "0.1.0": ["train.lr_schedule=cosine", "train.grad_clip=1.0"],
    "now": [],
}


def train_and_score(variant: str, seed: int, steps: int, num_samples: int) -> dict[str, Any]:
    overrides = [*VARIANTS[variant], f"train.seed={seed}", "train.checkpoint_every=0"]
    cfg, train_ds, test_ds = api.resolve_config(data="digits", steps=steps, overrides=overrides)
    out = WORK_DIR / f"{variant}_s{steps}_seed{seed}"
    plain_ema = variant == "0.1.0"
    if plain_ema:  # the trainer builds its EMA by this name; restore it right after
        loop_mod.EMA = functools.partial(EMA, warmup=False)  # type: ignore[misc]
    try:
        t0 = time.perf_counter()
        api.train_run(cfg, train_ds, out_dir=out, test_ds=test_ds)
        secs = time.perf_counter() - t0
    finally:
        loop_mod.EMA = EMA  # type: ignore[misc]
    row: dict[str, Any] = {"train_s": secs}
    for weights, use_ema in (("ema", True), ("raw", False)):
        run = api.load_run(out, use_ema=use_ema)
        report = api.evaluate(
            run, test_ds, nfe=[16], solvers=["midpoint"], num_samples=num_samples, seed=seed,
            reference=None, train_ds=train_ds,
        )  # fmt: skip
        row[weights] = report["rows"][0]["fd_digits"]
        row["floor"] = report["floor"]["fd_digits"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="e.g. 'now'")
    args = parser.parse_args()
    setup()
    seeds = [int(s) for s in args.seeds.split(",")]
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"--variants: unknown {sorted(unknown)}; choose from {list(VARIANTS)}")
    num_samples = 1000
    if args.quick:
        args.steps, seeds, num_samples = 200, [0], 300  # the preset warms up for 200 steps
    print(f"Machine: {machine_info()}")
    print(
        f"digits, {args.steps} steps, seeds {seeds}; FD (midpoint, 16 NFE, {num_samples} samples)\n"
    )
    t_start = time.perf_counter()
    res: dict[str, list[dict[str, Any]]] = {}
    for seed in seeds:
        for variant in args.variants.split(","):
            row = train_and_score(variant, seed, args.steps, num_samples)
            print(f"  {variant} seed {seed}: FD ema {row['ema']:.2f} raw {row['raw']:.2f}")
            res.setdefault(variant, []).append(row)
    rows = []
    for variant, per in res.items():
        ratio = [r["ema"] / r["raw"] for r in per]
        rows.append(
            [variant, fmt([r["ema"] for r in per]), fmt([r["raw"] for r in per]), fmt(ratio),
             f"{max(ratio):.2f}"]
        )  # fmt: skip
    floor = statistics.mean(r["floor"] for per in res.values() for r in per)
    print()
    print(table(["defaults", "FD EMA weights", "FD raw weights", "EMA / raw", "max ratio"], rows))
    print(f"\ntrain/test floor (same sample size): {floor:.2f}; target: EMA / raw <= 1.10")
    wall = time.perf_counter() - t_start
    print(f"wall time {wall:.0f} s")
    write_json(args.json, {"results": res, "wall_s": wall, "args": vars(args)})


if __name__ == "__main__":
    main()
