"""Conditional W2 per angle bin on 8 Gaussians conditioned on the polar angle (continuous).

The conditional 2-D toy of Kim et al. 2026 ("Better Source, Better Flow", arXiv:2602.05951):
``load_dataset("8gaussians_angle", seed=0)`` (100 000 train / 10 000 test points; the
condition of a point is its own polar angle ``atan2(y, x)`` in ``(-pi, pi]``). Two arms,
trained end to end through ``flowmatch.api`` (what ``flowmatch train --data
8gaussians_angle`` runs), same network ``MLP(2, 256, 4)`` and budget (``--steps``, batch 256,
TrainConfig defaults: AdamW lr 1e-3, cosine decay, grad clip 1, EMA 0.999; training seeds
0, 1, 2), Gaussian source, linear path, velocity loss:

- ``conditional``: ``model.conditional = "auto"``, the angle through the MLP's value
  embedding, condition dropout 0.1 (the objective's default);
- ``unconditional``: ``model.conditional = "no"``: the same net without the value embedding.

Ground truth given the angle bin, by rejection from the data distribution: 200 000 fresh
points of the toy (an independent seed), the angle cut into 16 equal-probability bins
(quantiles of those angles), the first 200 points of each bin as the reference and the next
200 as a second draw (the data floor). Metric per bin: exact W2 between 200 generated points
and the bin's 200 reference points.

- ``conditional``: generated with the reference points' own angles (one sample per reference
  point);
- ``unconditional``, asked for the bin's angles: it ignores the condition, so its 200 samples
  are draws from the marginal: the honest score of a model that cannot be conditioned;
- ``unconditional, rejected into the bin``: 3200 unconditional samples, each put in the bin
  of its own angle (about 200 per bin; W2 on equal-size subsamples): rejection sampling from
  the unconditional model, for contrast (what the conditional model gets without rejection);
- ``data floor``: the second 200 ground-truth points of the bin vs the reference.

Samplers: midpoint NFE 16 (the run's default) and Euler NFE 4. Reported: the mean over the
16 bins of the per-bin W2 (mean ± std over the 3 training seeds), the marginal W2 of all 3200
points, and the per-bin table of the midpoint NFE 16 rows.

    .venv/bin/python bench/conditional_toy.py --json bench/results/conditional_toy.json
    .venv/bin/python bench/conditional_toy.py --quick     # smoke run, < 1 min
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from common import add_common_args, fmt, machine_info, mean_std, setup, table, write_json
from flowmatch import api
from flowmatch.data.toy import sample_conditional_toy
from flowmatch.interfaces import Condition
from flowmatch.metrics.conditional import bin_index, quantile_edges
from flowmatch.metrics.wasserstein import wasserstein2

SEEDS = (0, 1, 2)
NUM_BINS, PER_BIN = 16, 200
GT_POINTS, GT_SEED = 200_000, 0xA7
SAMPLERS = (("midpoint NFE 16", "midpoint", 16), ("Euler NFE 4", "euler", 4))
ARMS = ("conditional", "unconditional")


def ground_truth(num_bins: int, per_bin: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(edges, ref_x, ref_angle, ref_bin, floor_x)``: per bin, 2 x ``per_bin`` points by rejection."""
    g = torch.Generator().manual_seed(GT_SEED)
    x, angle = sample_conditional_toy("8gaussians_angle", GT_POINTS, generator=g)
    edges = quantile_edges(angle, num_bins)
    k = bin_index(angle, edges)
    ref, floor = [], []
    for b in range(num_bins):
        idx = torch.nonzero(k == b).flatten()
        if len(idx) < 2 * per_bin:
            raise RuntimeError(f"bin {b} holds {len(idx)} < {2 * per_bin} ground-truth points")
        ref.append(idx[:per_bin])
        floor.append(idx[per_bin : 2 * per_bin])
    ref_idx, floor_idx = torch.cat(ref), torch.cat(floor)
    ref_bin = torch.arange(num_bins).repeat_interleave(per_bin)
    return edges, x[ref_idx], angle[ref_idx], ref_bin, x[floor_idx]


def train(arm: str, seed: int, steps: int, out: Path) -> tuple[api.Run, float]:
    """Train one arm through the API (as ``flowmatch train`` does) and load it."""
    overrides = [f"train.seed={seed}", "train.batch_size=256", "train.log_every=1000"]
    overrides += ["train.checkpoint_every=0", "sample.num_samples=200"]
    if arm == "unconditional":
        overrides.append("model.conditional=no")
    cfg, train_ds, test_ds = api.resolve_config(
        data="8gaussians_angle", steps=steps, overrides=overrides
    )
    t0 = time.perf_counter()
    api.train_run(cfg, train_ds, out_dir=out, test_ds=test_ds)
    return api.load_run(out), time.perf_counter() - t0


def per_bin_w2(x: Tensor, x_bin: Tensor, ref: Tensor, ref_bin: Tensor, n: int) -> list[float]:
    """W2 of ``x`` vs ``ref`` in each of ``n`` bins (equal-size subsamples, fixed seed)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for b in range(n):
        a = x[x_bin == b]
        out.append(wasserstein2(a, ref[ref_bin == b], generator=g) if len(a) >= 2 else math.nan)
    return out


def score(run: api.Run, arm: str, gt: tuple, seed: int, n_bins: int) -> dict[str, Any]:
    """Per-bin and marginal W2 of one trained run for each sampler."""
    edges, ref_x, ref_angle, ref_bin, _ = gt
    out: dict[str, Any] = {}
    for label, solver, nfe in SAMPLERS:
        kw = {"solver": solver, "nfe": nfe, "seed": 1000 + seed}
        if arm == "conditional":
            x = api.generate(run, len(ref_x), cond=Condition(values=ref_angle), **kw).samples
            res = {"asked": per_bin_w2(x, ref_bin, ref_x, ref_bin, n_bins)}
        else:
            x = api.generate(run, len(ref_x), **kw).samples  # the condition cannot be given
            own = bin_index(torch.atan2(x[:, 1], x[:, 0]), edges)
            res = {
                "asked": per_bin_w2(x, ref_bin, ref_x, ref_bin, n_bins),  # rows = asked bins
                "rejected": per_bin_w2(x, own, ref_x, ref_bin, n_bins),
            }
        res["marginal"] = wasserstein2(x, ref_x, max_samples=len(ref_x))
        out[label] = res
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--steps", type=int, default=5000)
    args = parser.parse_args()
    setup()
    n_bins, per_bin = NUM_BINS, PER_BIN
    if args.quick:
        args.steps, n_bins, per_bin = 200, 4, 100
    print(f"Machine: {machine_info()}")
    print(
        f"8gaussians_angle, MLP(2, 256, 4), {args.steps} steps, batch 256, seeds {SEEDS}; "
        f"{n_bins} angle bins x {per_bin} ground-truth points\n"
    )
    gt = ground_truth(n_bins, per_bin)
    edges, ref_x, _, ref_bin, floor_x = gt
    floor = per_bin_w2(floor_x, ref_bin, ref_x, ref_bin, n_bins)
    floor_marginal = wasserstein2(floor_x, ref_x, max_samples=len(ref_x))
    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    wall: dict[str, list[float]] = {arm: [] for arm in ARMS}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in SEEDS:
            for arm in ARMS:
                run, secs = train(arm, seed, args.steps, Path(tmp) / f"{arm}_{seed}")
                results[arm].append(score(run, arm, gt, seed, n_bins))
                wall[arm].append(secs)
                print(f"trained {arm} seed {seed} in {secs:.0f} s", flush=True)
    total = time.perf_counter() - t_start
    print()
    print(summary_table(results, floor, floor_marginal, wall))
    print()
    print(bin_table(results, floor, edges))
    print(f"\nTotal wall time {total:.0f} s ({total / 60:.1f} min).")
    write_json(
        args.json,
        {
            "args": vars(args),
            "edges": [None if math.isinf(e) else e for e in edges.tolist()],
            "floor": floor,
            "floor_marginal": floor_marginal,
            "results": results,
            "train_wall_s": wall,
            "total_wall_s": total,
        },
    )


def _mean_over_bins(values: list[float]) -> float:
    return sum(values) / len(values)


def summary_table(results: dict, floor: list[float], floor_marginal: float, wall: dict) -> str:
    """Mean over bins of the per-bin W2 and the marginal W2, mean ± std over seeds."""
    headers = ["model (asked for the bin's angles)"]
    for label, _, _ in SAMPLERS:
        headers += [f"cond. W2 {label}", f"marginal W2 {label}"]
    headers.append("train wall s")
    rows = []
    for arm, key, name in (
        ("conditional", "asked", "conditional (angle as a value condition)"),
        ("unconditional", "asked", "unconditional (ignores the angle)"),
        ("unconditional", "rejected", "unconditional, rejected into the bin by its own angle"),
    ):
        row = [name]
        for label, _, _ in SAMPLERS:
            cond = [_mean_over_bins(r[label][key]) for r in results[arm]]
            marg = [r[label]["marginal"] for r in results[arm]]
            row += [fmt(cond, 3), fmt(marg, 3) if key == "asked" else ""]
        row.append(fmt(wall[arm], 0) if key == "asked" else "")
        rows.append(row)
    floor_row = ["data floor (a second ground-truth draw)"]
    for _ in SAMPLERS:
        floor_row += [f"{_mean_over_bins(floor):.3f}", f"{floor_marginal:.3f}"]
    rows.append([*floor_row, ""])
    return table(headers, rows)


def bin_table(results: dict, floor: list[float], edges: Tensor) -> str:
    """Per-bin W2 at midpoint NFE 16 (mean ± std over seeds) and the floor."""
    label = SAMPLERS[0][0]
    e = edges.tolist()
    rows = []
    for b in range(len(floor)):
        lo = "-pi" if math.isinf(e[b]) else f"{e[b]:+.3f}"
        hi = "pi" if math.isinf(e[b + 1]) else f"{e[b + 1]:+.3f}"
        cells = [f"[{lo}, {hi})"]
        for arm, key in (
            ("conditional", "asked"),
            ("unconditional", "asked"),
            ("unconditional", "rejected"),
        ):
            cells.append(fmt([r[label][key][b] for r in results[arm]], 3))
        cells.append(f"{floor[b]:.3f}")
        rows.append(cells)
    m = [
        mean_std([_mean_over_bins(r[label][k]) for r in results[a]])[0]
        for a, k in (
            ("conditional", "asked"),
            ("unconditional", "asked"),
            ("unconditional", "rejected"),
        )
    ]
    rows.append(["mean over bins", *(f"{v:.3f}" for v in m), f"{_mean_over_bins(floor):.3f}"])
    return table(
        [f"angle bin ({label})", "conditional", "unconditional", "uncond. rejected", "data floor"],
        rows,
    )


if __name__ == "__main__":
    main()
