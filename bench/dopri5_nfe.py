"""Adaptive Dopri5: NFE and error of flowmatch vs torchdiffeq at the same tolerances.

Setting: checkerboard models (``MLP(dim=2, hidden=256, depth=4)``, 5000 steps of flowmatch's
``Trainer``, batch 256, AdamW lr 1e-3 constant, no EMA, training seed 0; cached under
bench/results/), ONE torch thread, float32. Two models: the MLP as shipped (time embedding
with frequencies up to 1000 rad per unit t) and the same MLP with a smooth time embedding
(``SinusoidalTimeEmbedding(64, scale=1)``), which is the regime of the issue's anchor figure. For each ``atol = rtol`` (default 1e-3, 3e-4, 1e-4,
3e-5, 1e-5) both solvers integrate the same batch of 2000 source points from t = 0 to t = 1:

- flowmatch: ``solve(model, x0, make_grid("uniform", 1), Dopri5(atol=tol, rtol=tol))``;
- torchdiffeq: ``odeint(f, x0, [0, 1], method="dopri5", atol=tol, rtol=tol)``;
  (default error estimator: Shampine's embedded solution, the one torchdiffeq uses);
- with ``--dormand-prince``: flowmatch's Dopri5 with Dormand & Prince's own (more
  conservative) embedded error estimator, ``Dopri5(..., estimator="dormand_prince")``.

NFE is counted by a wrapper around the model (one call = one NFE, whole batch). The error is
the RMS over the batch of ``||x(1) - x_ref(1)||`` against a float64 reference solve
(torchdiffeq dopri5 at atol = rtol = 1e-8; for the first batch flowmatch's Dopri5 at the same
tolerance is run too and their gap is printed as the reference's own uncertainty). Three
source batches (seeds 100, 101, 102); mean +- std over them. Because the two codes estimate
the local error differently, equal nominal tolerances are not equal accuracy: with
``--work-precision`` a second table gives, per torchdiffeq run, the NFE flowmatch needs for the
same error (log-log interpolation between flowmatch's own tolerance points; unreliable where
the error is not monotone in the tolerance).

Targets: flowmatch needs no more NFE than torchdiffeq at the same tolerance, with the same or
lower error (issue's anchor: torchdiffeq needs 26-32 NFE at 1e-4 on the checkerboard).

    .venv/bin/python bench/dopri5_nfe.py --dormand-prince  # trains twice (~1 min each), ~10 min
    .venv/bin/python bench/dopri5_nfe.py --quick    # smoke run, < 1 min
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from typing import Any

import torch
from torch import Tensor, nn

from common import (
    add_common_args,
    checkerboard,
    fmt,
    fmt_sig,
    machine_info,
    optional_import,
    setup,
    table,
    trained_model,
    write_json,
)
from flowmatch.solvers import Dopri5, solve
from flowmatch.times import make_grid

TRAIN_SEED = 0
BATCH_SEEDS = (100, 101, 102)


class Counter(nn.Module):
    """Counts calls (NFE) and records the largest time the field was evaluated at."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.nfe = 0
        self.max_t = -math.inf

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        self.nfe += 1
        self.max_t = max(self.max_t, float(t.max()))
        return self.model(x, t)


class TimeFirst(nn.Module):
    """torchdiffeq's ``f(t scalar, x)`` convention on a ``(x, t (B,))`` model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return self.model(x, t.reshape(()).expand(x.shape[0]))


def run_flowmatch(
    model: nn.Module, x0: Tensor, tol: float, *, estimator: str = "shampine"
) -> dict[str, Any]:
    counter = Counter(model)
    grid = make_grid("uniform", 1, dtype=x0.dtype)
    t0 = time.perf_counter()
    sol = solve(counter, x0, grid, Dopri5(atol=tol, rtol=tol, estimator=estimator))
    wall = time.perf_counter() - t0
    if sol.nfe != counter.nfe:
        raise RuntimeError(f"Solution.nfe={sol.nfe} but the field was called {counter.nfe} times")
    return {
        "x": sol.x,
        "nfe": counter.nfe,
        "accepted": sol.num_steps,
        "rejected": sol.num_rejected,
        "max_t": counter.max_t,
        "ms": wall * 1e3,
    }


def run_torchdiffeq(tde: Any, model: nn.Module, x0: Tensor, tol: float) -> dict[str, Any]:
    counter = Counter(model)
    t0 = time.perf_counter()
    grid = torch.tensor([0.0, 1.0], dtype=x0.dtype)
    x = tde.odeint(TimeFirst(counter), x0, grid, method="dopri5", atol=tol, rtol=tol)[-1]
    wall = time.perf_counter() - t0
    return {"x": x, "nfe": counter.nfe, "max_t": counter.max_t, "ms": wall * 1e3}


def rms_err(x: Tensor, ref: Tensor) -> float:
    return float((x.double() - ref).pow(2).sum(1).mean().sqrt())


def equal_error_nfe(points: list[tuple[float, float]], err: float) -> float:
    """NFE at error ``err`` by log-log interpolation of ``(nfe, err)`` points (nan outside)."""
    pts = sorted(points, key=lambda p: p[1])
    for (n_lo, e_lo), (n_hi, e_hi) in zip(pts, pts[1:], strict=False):
        if e_lo <= err <= e_hi and e_hi > e_lo:
            w = (math.log(err) - math.log(e_lo)) / (math.log(e_hi) - math.log(e_lo))
            return math.exp(math.log(n_lo) + w * (math.log(n_hi) - math.log(n_lo)))
    return math.nan


def work_precision(raw: dict[tuple[str, float], list[dict[str, Any]]], tols: list[float]) -> str:
    """Per torchdiffeq tolerance: flowmatch's NFE for the same error, per batch seed."""
    rows = []
    for tol in tols:
        ratios, nfes = [], []
        for i, tde_run in enumerate(raw[("torchdiffeq", tol)]):
            pts = [(raw[("flowmatch", t)][i]["nfe"], raw[("flowmatch", t)][i]["err"]) for t in tols]
            nfe = equal_error_nfe(pts, tde_run["err"])
            if not math.isnan(nfe):
                nfes.append(nfe)
                ratios.append(nfe / tde_run["nfe"])
        tde_nfe = [r["nfe"] for r in raw[("torchdiffeq", tol)]]
        rows.append(
            [
                f"{tol:g}",
                fmt(tde_nfe, 1),
                fmt_sig([r["err"] for r in raw[("torchdiffeq", tol)]]),
                fmt(nfes, 1) if nfes else "outside flowmatch's range",
                fmt(ratios, 2) if ratios else "",
                len(ratios),
            ]
        )
    head = [
        "torchdiffeq tol",
        "torchdiffeq NFE",
        "torchdiffeq error",
        "flowmatch NFE at that error",
        "NFE ratio flowmatch / torchdiffeq",
        "batches in range",
    ]
    return "Work-precision (same error, interpolated):\n\n" + table(head, rows)


MODELS = {
    "flowmatch": "MLP(2, 256, 4) as shipped (sinusoidal time embedding, scale 1000)",
    "flowmatch-tscale1": "MLP(2, 256, 4) with SinusoidalTimeEmbedding(64, scale=1) (smooth in t)",
}


def compare(
    model: nn.Module, tols: list[float], tde: Any, args: argparse.Namespace
) -> tuple[dict[tuple[str, float], list[dict[str, Any]]], list[float]]:
    """Run every solver at every tolerance on every source batch; errors vs the reference."""
    model64 = copy.deepcopy(model).double()
    raw: dict[tuple[str, float], list[dict[str, Any]]] = {}
    ref_gap: list[float] = []
    with torch.no_grad():
        for seed in BATCH_SEEDS:
            x0 = torch.randn(args.batch, 2, generator=torch.Generator().manual_seed(seed))
            if tde is not None:
                ref = run_torchdiffeq(tde, model64, x0.double(), args.ref_tol)["x"]
                if seed == BATCH_SEEDS[0]:
                    ref_fm = run_flowmatch(model64, x0.double(), args.ref_tol)["x"]
                    ref_gap.append(rms_err(ref_fm, ref))
            else:
                ref = run_flowmatch(model64, x0.double(), args.ref_tol)["x"]
            for tol in tols:
                runs = {"flowmatch": run_flowmatch(model, x0, tol)}
                if tde is not None:
                    runs["torchdiffeq"] = run_torchdiffeq(tde, model, x0, tol)
                if args.dormand_prince:
                    runs["flowmatch (Dormand-Prince estimator)"] = run_flowmatch(
                        model, x0, tol, estimator="dormand_prince"
                    )
                for name, res in runs.items():
                    res["err"] = rms_err(res.pop("x"), ref)
                    raw.setdefault((name, tol), []).append(res)
    return raw, ref_gap


def results_table(raw: dict[tuple[str, float], list[dict[str, Any]]]) -> str:
    rows = []
    for (name, tol), res in raw.items():
        steps = (
            fmt([r["accepted"] for r in res], 1) + " / " + fmt([r["rejected"] for r in res], 1)
            if "accepted" in res[0]
            else "n/a"
        )
        rows.append(
            [
                f"{tol:g}",
                name,
                fmt([r["nfe"] for r in res], 1),
                f"{min(r['nfe'] for r in res)}-{max(r['nfe'] for r in res)}",
                steps,
                fmt_sig([r["err"] for r in res]),
                f"{max(r['max_t'] for r in res):.4f}",
                fmt([r["ms"] for r in res], 0),
            ]
        )
    order = ["flowmatch", "torchdiffeq", "flowmatch (Dormand-Prince estimator)"]
    rows.sort(key=lambda r: (-float(r[0]), order.index(r[1])))
    head = [
        "atol = rtol",
        "solver",
        "NFE",
        "NFE range",
        "accepted / rejected steps",
        "RMS error vs reference",
        "max t evaluated",
        "wall ms",
    ]
    return table(head, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--steps", type=int, default=5000, help="training steps of the model")
    parser.add_argument("--batch", type=int, default=2000, help="source points per solve")
    parser.add_argument("--tols", default="1e-3,3e-4,1e-4,3e-5,1e-5", help="atol = rtol values")
    parser.add_argument("--ref-tol", type=float, default=1e-8, help="reference tolerance")
    parser.add_argument("--models", default=",".join(MODELS), help=f"any of {list(MODELS)}")
    parser.add_argument(
        "--dormand-prince", action="store_true", help="add the Dormand-Prince-estimator row"
    )
    parser.add_argument(
        "--work-precision", action="store_true", help="add the equal-error NFE table"
    )
    parser.add_argument("--no-cache", action="store_true", help="retrain, do not reuse weights")
    args = parser.parse_args()
    setup()
    cache = not args.no_cache
    if args.quick:
        args.steps, args.batch, args.tols, args.ref_tol, cache = 200, 256, "1e-3,1e-4", 1e-6, False
        args.models = "flowmatch"
    tols = [float(v) for v in args.tols.split(",")]
    kinds = args.models.split(",")
    unknown = sorted(set(kinds) - set(MODELS))
    if unknown:
        parser.error(f"unknown --models {unknown}; choose from {list(MODELS)}")
    tde, tde_note = optional_import("torchdiffeq")
    print(f"Machine: {machine_info()}")
    print(
        f"Models trained {args.steps} steps on checkerboard (training seed {TRAIN_SEED}); "
        f"solves in float32 on {args.batch} points, batch seeds {BATCH_SEEDS}; reference: "
        f"float64 dopri5 at atol = rtol = {args.ref_tol:g}; mean ± std over the batches"
    )
    x_train, _ = checkerboard()
    payload: dict[str, Any] = {"args": vars(args)}
    for kind in kinds:
        model, train_s = trained_model(
            kind, x_train, seed=TRAIN_SEED, steps=args.steps, cache=cache
        )
        model.requires_grad_(False)
        raw, ref_gap = compare(model, tols, tde, args)
        print(f"\n### {MODELS[kind]}\n")
        print(results_table(raw))
        if args.work_precision and tde is not None and len(tols) > 1:
            print("\n" + work_precision(raw, tols))
        if ref_gap:
            print(
                f"\nReference uncertainty (RMS gap between flowmatch and torchdiffeq at "
                f"{args.ref_tol:g}, float64, first batch): {fmt_sig(ref_gap)}"
            )
        else:
            print(f"\nNote: torchdiffeq skipped ({tde_note}); reference is flowmatch's Dopri5.")
        if not math.isnan(train_s):
            print(f"Training took {train_s:.0f} s.")
        payload[kind] = {
            "results": {f"{n} {t:g}": r for (n, t), r in raw.items()},
            "ref_gap": ref_gap,
        }
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
