"""JiT's toy: a 2-D spiral embedded in D dimensions; x1-, velocity- and x0-prediction.

Li & He (2025), "Back to Basics: Let Denoising Generative Models Denoise" (JiT): natural data
lie on a low-dimensional manifold; a network that predicts the clean sample ``x1`` stays
on it, while velocity or noise (``x0``) prediction must output full-dimensional noise, which
an under-capacity network cannot as ``D`` grows. Setup: the two-arm ``spirals`` toy (20 000
points, fixed seed) mapped into ``R^D`` by a random column-orthonormal ``P`` (``D x 2``,
fixed seed), ``D`` in 2, 8, 32, 128, 512, saved as ``.npy`` and trained with ``flowmatch
train`` (``data.standardize = none``): MLP 256 x 4, logit-normal(-0.8, 0.8) training times
(JiT's), every arm with the velocity loss (``objective.loss_space = velocity``, endpoint rule
``path.eps = 0.05``), 1500 steps, 3 seeds. The fourth arm adds the dimension-aware shift of
the training times (``shifted_logit_normal``, ``a = sqrt(D / 2)``: the shift relative to the
data's intrinsic dimension). Samples: midpoint NFE 32, projected back with ``P^T``; reported:
2-D W2 to 2000 held-out spiral points and the off-subspace energy ``E |(I - P P^T) x|^2``.

    .venv/bin/python bench/jit_toy.py --json bench/results/jit_toy.json
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
import torch

from common import add_common_args, fmt, machine_info, setup, table, write_json
from flowmatch import api
from flowmatch.data.toy import sample_toy
from flowmatch.metrics.wasserstein import wasserstein2
from methods_common import CACHE, cached_run

DIMS = (2, 8, 32, 128, 512)
SEEDS = (0, 1, 2)
ARMS = {
    "x1 (v-loss)": ["path.prediction=x1", "objective.loss_space=velocity"],
    "velocity": ["path.prediction=velocity"],
    "x0 (v-loss)": ["path.prediction=x0", "objective.loss_space=velocity"],
    "x1 (v-loss) + shift": ["path.prediction=x1", "objective.loss_space=velocity", "SHIFT"],
}
BASE = ['data.standardize="none"', "model.hidden=256", "model.depth=4"]


def embedding(dim: int) -> torch.Tensor:
    """The fixed column-orthonormal map ``P`` ``(dim, 2)``."""
    g = torch.Generator().manual_seed(1000 + dim)
    q, _ = torch.linalg.qr(torch.randn(dim, 2, generator=g, dtype=torch.float64))
    return q.float()


def data_file(dim: int) -> str:
    """``.npy`` of 20 000 spiral points embedded in ``R^dim`` (written once)."""
    path = CACHE / f"jit_spirals_D{dim}.npy"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        x = sample_toy("spirals", 20_000, generator=torch.Generator().manual_seed(7))
        np.save(path, (x @ embedding(dim).T).numpy())
    return str(path)


def arm_overrides(arm: str, dim: int) -> list[str]:
    out = list(BASE)
    for o in ARMS[arm]:
        if o == "SHIFT":
            out += ["time.kind=shifted_logit_normal", f"time.shift={math.sqrt(dim / 2):.6g}"]
        else:
            out.append(o)
    if not any(o.startswith("time.") for o in out):
        out += ["time.kind=logit_normal"]
    return out + ["time.mean=-0.8", "time.std=0.8"]


def evaluate(dim: int, arm: str, seed: int, steps: int, ref: torch.Tensor) -> dict[str, Any]:
    run, info = cached_run(
        f"jit_D{dim}_{arm.split()[0]}{'_shift' if 'shift' in arm else ''}",
        data_file(dim),
        arm_overrides(arm, dim),
        steps=steps,
        seed=seed,
    )
    p = embedding(dim)
    x = api.generate(run, len(ref), solver="midpoint", nfe=32, seed=50 + seed).samples
    x2 = x @ p
    off = (x - x2 @ p.T).square().sum(1).mean().item()
    w2 = wasserstein2(x2, ref, max_samples=len(ref)) if torch.isfinite(x2).all() else math.nan
    return {"w2": w2, "off_subspace": off, "sec_per_step": info["sec_per_step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--dims", default=",".join(map(str, DIMS)))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arm names")
    args = parser.parse_args()
    setup()
    steps = 30 if args.quick else args.steps
    dims = [int(d) for d in args.dims.split(",")]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    arms = args.arms.split(",")
    print(f"Machine: {machine_info()}")
    ref = sample_toy("spirals", 2000, generator=torch.Generator().manual_seed(8))
    t0 = time.perf_counter()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for dim in dims:
        for arm in arms:
            for seed in seeds:
                r = evaluate(dim, arm, seed, steps, ref)
                results.setdefault(str(dim), {}).setdefault(arm, []).append(r)
                print(f"D={dim} {arm} seed {seed}: {r}", flush=True)
    total = time.perf_counter() - t0
    headers = [
        "D",
        *[f"W2 {a}" for a in arms],
        *[f"off-subspace {a}" for a in arms if "shift" not in a],
    ]
    rows = []
    for dim, by_arm in results.items():
        rows.append(
            [dim]
            + [fmt([r["w2"] for r in by_arm[a]], 3) for a in arms]
            + [fmt([r["off_subspace"] for r in by_arm[a]], 3) for a in arms if "shift" not in a]
        )
    print()
    print(table(headers, rows))
    print(f"\nTotal wall time {total:.0f} s ({total / 60:.1f} min), {steps} steps per run.")
    write_json(
        args.json, {"args": vars(args), "steps": steps, "results": results, "total_s": total}
    )


if __name__ == "__main__":
    main()
