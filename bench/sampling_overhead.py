"""Per-NFE cost of fixed-step sampling: flowmatch's ``solve`` vs a bare loop and the anchors.

Setting (the issue's target): ``MLP(dim=2, hidden=256, depth=4)`` (4x256 SiLU, untrained
weights from seed 0; the cost does not depend on the weights), ``torch.no_grad()``, ONE torch
thread, float32, batch 16 and batch 10 000. Variants, all integrating ``dx/dt = v(x, t)`` on the
uniform grid ``t_k = k / N`` from the same ``x0`` (seed 0):

- ``bare``: the hand-written loop ``x = x + h * model(x, t)``, ``t = x.new_full((B,), t_k)``
  (and its midpoint counterpart) -- the reference, ratio 1.00;
- ``flowmatch``: ``solve(model, x, make_grid("uniform", N), Euler())`` / ``Midpoint()``;
- ``flow_matching``: ``ODESolver(velocity_model=...).sample(x, step_size=1/N, method=...)``
  (its model gets a scalar ``t``; the wrapper expands it to ``(B,)``, the cost a user pays);
- ``torchdiffeq``: ``odeint(f, x, grid, method=...)`` on the same explicit grid (the engine
  flow_matching uses; it returns all ``N+1`` states);
- ``torchdyn``: ``NeuralODE(..., solver=...)`` if torchdyn is importable (skipped otherwise).

Method: in every repeat each variant is timed ``rounds`` times, interleaved round-robin (machine
drift hits all alike); a repeat's figure is the median solve time divided by the NFE actually
spent (counted with a wrapper in a separate, untimed call). Reported: microseconds per NFE and
the ratio to the bare loop of the same method, mean +- std over repeats. Target: flowmatch
<= 1.05x bare at both batch sizes.

    .venv/bin/python bench/sampling_overhead.py            # ~3-4 min on one free core
    .venv/bin/python bench/sampling_overhead.py --quick    # smoke run, < 1 min
    .venv/bin/python bench/sampling_overhead.py --profile  # cProfile of flowmatch at B=16
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from common import (
    CountingField,
    add_common_args,
    clock,
    fmt,
    machine_info,
    make_mlp,
    optional_import,
    setup,
    table,
    write_json,
)
from flowmatch.solvers import Euler, Midpoint, solve
from flowmatch.times import make_grid

SEED = 0
Variant = Callable[[nn.Module], Tensor]  # run one solve with the given field, return x(1)


class ScalarTimeWrapper(nn.Module):
    """Adapts a ``(x, t (B,))`` model to the ``(t scalar, x)``/``(x, t scalar)`` anchors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, t: Tensor, **extras: Any) -> Tensor:
        return self.model(x, t.reshape(()).expand(x.shape[0]))


class TimeFirst(nn.Module):
    """``f(t, x)`` calling convention of torchdiffeq / torchdyn, on a ``(x, t (B,))`` model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, t: Tensor, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.model(x, t.reshape(()).expand(x.shape[0]))


def bare_euler(model: nn.Module, x: Tensor, n: int) -> Tensor:
    h = 1.0 / n
    ts = [k / n for k in range(n)]
    for t in ts:
        x = x + h * model(x, x.new_full((x.shape[0],), t))
    return x


def bare_midpoint(model: nn.Module, x: Tensor, n: int) -> Tensor:
    h = 1.0 / n
    ts = [k / n for k in range(n)]
    for t in ts:
        xm = x + (0.5 * h) * model(x, x.new_full((x.shape[0],), t))
        x = x + h * model(xm, x.new_full((x.shape[0],), t + 0.5 * h))
    return x


def variants(x: Tensor, nfe: int) -> tuple[dict[str, tuple[str, Variant]], list[str]]:
    """``{name: (method, run)}`` for one setting, and notes on skipped anchors."""
    notes: list[str] = []
    out: dict[str, tuple[str, Variant]] = {}
    grid = {"euler": make_grid("uniform", nfe), "midpoint": make_grid("uniform", nfe // 2)}
    steps = {"euler": nfe, "midpoint": nfe // 2}
    solvers = {"euler": Euler(), "midpoint": Midpoint()}
    fm_mod, fm_note = optional_import("flow_matching.solver")
    tde_mod, tde_note = optional_import("torchdiffeq")
    dyn_mod, dyn_note = optional_import("torchdyn.core")
    for method in ("euler", "midpoint"):
        n, g, solver = steps[method], grid[method], solvers[method]
        bare = bare_euler if method == "euler" else bare_midpoint
        out[f"bare {method}"] = (method, lambda m, n=n, bare=bare: bare(m, x, n))
        out[f"flowmatch {method}"] = (
            method,
            lambda m, g=g, solver=solver: solve(m, x, g, solver).x,
        )
        if fm_mod is not None:
            out[f"flow_matching {method}"] = (
                method,
                lambda m, n=n, method=method: fm_mod.ODESolver(
                    velocity_model=ScalarTimeWrapper(m)
                ).sample(x, step_size=1.0 / n, method=method),
            )
        if tde_mod is not None:
            out[f"torchdiffeq {method}"] = (
                method,
                lambda m, g=g, method=method: tde_mod.odeint(TimeFirst(m), x, g, method=method)[-1],
            )
        if dyn_mod is not None:
            out[f"torchdyn {method}"] = (
                method,
                lambda m, g=g, method=method: dyn_mod.NeuralODE(
                    TimeFirst(m), solver=method, sensitivity="autograd"
                )(x, g)[1][-1],
            )
    if fm_mod is None:
        notes.append(f"flow_matching skipped ({fm_note})")
    if tde_mod is None:
        notes.append(f"torchdiffeq skipped ({tde_note})")
    if dyn_mod is None:
        notes.append(f"torchdyn skipped ({dyn_note})")
    return out, notes


def measure(
    model: nn.Module, batch: int, nfe: int, args: argparse.Namespace
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    gen = torch.Generator().manual_seed(SEED)
    x = torch.randn(batch, 2, generator=gen)
    runs, notes = variants(x, nfe)
    tick = clock(args.clock)
    results: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        ref = {m: run(model) for name, (m, run) in runs.items() if name.startswith("bare")}
        for name, (method, run) in runs.items():
            counter = CountingField(model)
            xs = run(counter)
            dev = float((xs - ref[method]).abs().max())
            results[name] = {"method": method, "nfe": counter.nfe, "max_dev": dev, "per_nfe": []}
        for _ in range(args.warmup):
            for _, run in runs.values():
                run(model)
        names = list(runs)
        for rep in range(args.repeats):
            times: dict[str, list[float]] = {name: [] for name in names}
            for r in range(args.rounds):
                shift = (rep * args.rounds + r) % len(names)
                for name in names[shift:] + names[:shift]:
                    t0 = tick()
                    runs[name][1](model)
                    times[name].append(tick() - t0)
            for name in names:
                med = sorted(times[name])[len(times[name]) // 2]
                results[name]["per_nfe"].append(med / results[name]["nfe"] * 1e6)
    for res in results.values():
        bare = results[f"bare {res['method']}"]["per_nfe"]
        res["ratio"] = [v / b for v, b in zip(res["per_nfe"], bare, strict=True)]
    return results, notes


def profile_flowmatch(model: nn.Module, batch: int, nfe: int) -> str:
    """cProfile of ``solve`` with Euler at one setting (cumulative time, top 25 entries)."""
    x = torch.randn(batch, 2, generator=torch.Generator().manual_seed(SEED))
    grid = make_grid("uniform", nfe)
    with torch.no_grad():
        for _ in range(20):
            solve(model, x, grid, Euler())
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(200):
            solve(model, x, grid, Euler())
        prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument(
        "--settings",
        default="16:100,16:8,10000:10",
        help="comma-separated batch:nfe pairs (nfe even; midpoint takes nfe/2 steps)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="repeats (>= 3) per setting")
    parser.add_argument("--rounds", type=int, default=0, help="timed solves per repeat (0: auto)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of flowmatch")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error(f"--repeats must be >= 3 for a spread, got {args.repeats}")
    setup()
    if args.quick:
        args.settings, args.repeats, args.warmup = "16:20,1000:4", 3, 1
    settings = [tuple(int(v) for v in s.split(":")) for s in args.settings.split(",")]
    for b, n in settings:
        if b < 1 or n < 2 or n % 2:
            parser.error(f"each setting needs batch >= 1 and an even nfe >= 2, got {b}:{n}")
    model = make_mlp(SEED).eval()
    print(f"Machine: {machine_info()}")
    print(
        f"Model: MLP(dim=2, hidden=256, depth=4), float32, no_grad; x0 seed {SEED}; "
        f"{args.repeats} repeats; clock: {args.clock}\n"
    )
    payload: dict[str, Any] = {"settings": {}}
    all_notes: set[str] = set()
    for batch, nfe in settings:
        rounds = args.rounds or max(3, min(200, int(2e5 / (batch * nfe) ** 0.9)))
        if args.quick:
            rounds = min(rounds, 10)
        args_r = argparse.Namespace(**{**vars(args), "rounds": rounds})
        results, notes = measure(model, batch, nfe, args_r)
        all_notes.update(notes)
        payload["settings"][f"{batch}:{nfe}"] = results
        print(f"### Batch {batch}, NFE {nfe} (Euler {nfe} steps, midpoint {nfe // 2} steps)\n")
        print(f"{rounds} interleaved solves per variant per repeat; mean ± std over repeats.\n")
        rows = [
            [
                name,
                res["nfe"],
                fmt(res["per_nfe"], 1),
                fmt(res["ratio"], 3),
                f"{res['max_dev']:.1e}",
            ]
            for name, res in results.items()
        ]
        print(
            table(
                [
                    "variant",
                    "NFE",
                    "µs / NFE",
                    "ratio to bare (same method)",
                    "max abs diff to bare",
                ],
                rows,
            )
        )
        print()
        print(f"load avg after: {os.getloadavg()[0]:.2f}\n")
    for note in sorted(all_notes):
        print(f"Note: {note}")
    if args.profile:
        print("\ncProfile of flowmatch solve (Euler, B=16, NFE 100), 200 solves:\n")
        print(profile_flowmatch(model, 16, 100))
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
