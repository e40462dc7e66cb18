"""Training throughput with exact minibatch-OT couplings vs the independent coupling.

Setting (the issue's target): 2-D checkerboard data, ``MLP(dim=2, hidden=256, depth=4)``,
batch 256, ONE torch thread, AdamW, linear path, uniform t. Each variant is a plain
hand-written loop (pair -> loss -> backward -> AdamW step); variants:

- ``independent``: ``FlowMatchingObjective()`` (the baseline, ratio 1.0);
- ``ot-sync/<solver>``: exact OT solved inside the step, for every assignment solver tried
  (``auction``: flowmatch's numba auction + exact repair; ``scipy``: linear_sum_assignment;
  ``pot``: POT's network simplex ``ot.emd``; ``lapjv``: lapx's Jonker-Volgenant;
  ``sap``: shortest augmenting paths compiled with numba, i.e. scipy's algorithm);
- ``ot-prefetch/<solver>``: the same coupling computed ahead by ``PairingPrefetcher`` (a
  background thread; the trainer's pipeline);
- ``torchcfm``: ``ExactOptimalTransportConditionalFlowMatcher`` (POT plan, pairs sampled with
  replacement), if torchcfm is importable (``pip install --no-deps torchcfm`` plus ``pot``).

Repeats alternate between variants (machine-load drift hits all alike). Reported per variant,
mean +- std over repeats: wall-clock steps/s and its per-repeat ratio to ``independent``; the
CPU time per step of the main (training) thread and of the other threads (the pairing
worker); and the "critical path" ratio, independent CPU/step over max(main, worker) CPU/step:
the throughput ratio the pipeline reaches when each thread has a core of its own. Wall-clock
ratios are only meaningful on an otherwise idle machine (a prefetch thread cannot overlap when
other processes occupy the second core); the CPU figures are robust to such load.
A second table gives the solve time alone (ms per 256 x 256 problem).

    .venv/bin/python bench/ot_throughput.py --steps 300 --repeats 3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from flowmatch.couplings import Coupling, ExactOTCoupling, IndependentCoupling
from flowmatch.couplings.ot import _flat64, _neg_inner
from flowmatch.data.batch import Batch
from flowmatch.data.toy import sample_toy
from flowmatch.models import MLP
from flowmatch.objectives.flow_matching import FlowMatchingObjective
from flowmatch.train.prefetch import PairingPrefetcher
from flowmatch.utils.tensor import step_generator

SEED = 0
Solve = Callable[[np.ndarray], np.ndarray]  # cost (n, n) -> col4row (n,)


# ------------------------------------------------------------------ solver variants


def _solve_pot(cost: np.ndarray) -> np.ndarray:
    import ot

    n = cost.shape[0]
    w = np.full(n, 1.0 / n)
    plan = ot.emd(w, w, cost)  # a vertex of the transport polytope: a scaled permutation
    return plan.argmax(1)


def _solve_lapjv(cost: np.ndarray) -> np.ndarray:
    import lap

    _, x, _ = lap.lapjv(cost)
    return x


def _solve_sap(cost: np.ndarray) -> np.ndarray:
    """Shortest augmenting paths from zero duals (scipy's algorithm, Crouse 2016), in numba.

    The auction solver's own exact-completion kernel run without the auction: the baseline
    that shows what the auction's warm-start duals buy.
    """
    from flowmatch.couplings._lap_kernels import _complete

    cost = np.ascontiguousarray(cost, dtype=np.float64)
    n = cost.shape[0]
    col4row = np.full(n, -1, np.int64)
    row4col = np.full(n, -1, np.int64)
    _complete(cost, np.zeros(n), np.zeros(n), col4row, row4col)
    return col4row


class SolverCoupling(Coupling):
    """Exact OT with an arbitrary solver (same cost as ExactOTCoupling: -<x1_i, x0_j>)."""

    name = "bench"

    def __init__(self, solve: Solve) -> None:
        self.solve = solve

    def permutation(
        self,
        x0: Tensor,
        x1: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        # The library's own cost construction, so only the solver differs between variants.
        cost = _neg_inner(*_flat64(x0, x1))
        return torch.from_numpy(np.asarray(self.solve(cost.numpy()), dtype=np.int64))


def solver_couplings() -> dict[str, Coupling]:
    out: dict[str, Coupling] = {
        "auction": ExactOTCoupling(solver="auction"),
        "scipy": ExactOTCoupling(solver="scipy"),
        "sap": SolverCoupling(_solve_sap),
    }
    if importlib.util.find_spec("ot") is not None:
        out["pot"] = SolverCoupling(_solve_pot)
    if importlib.util.find_spec("lap") is not None:
        out["lapjv"] = SolverCoupling(_solve_lapjv)
    return out


# ------------------------------------------------------------------ training loops


def batch_fn_for(batch_size: int) -> Callable[[int], Batch]:
    def batch_fn(step: int) -> Batch:
        g = step_generator(SEED, 0xDA7A, step)
        return Batch(x1=sample_toy("checkerboard", batch_size, generator=g))

    return batch_fn


def make_model(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(SEED)
    model = MLP(dim=2, hidden=256, depth=4)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


@dataclass
class Timing:
    """Seconds per timed step: wall clock, main-thread CPU, whole-process CPU."""

    wall: float
    main_cpu: float
    proc_cpu: float

    @property
    def worker_cpu(self) -> float:
        """CPU of the other threads (the pairing worker), per step."""
        return max(self.proc_cpu - self.main_cpu, 0.0)

    @property
    def critical(self) -> float:
        """Per-step time with a free core per thread: the slower of main and worker."""
        return max(self.main_cpu, self.worker_cpu)


class _Clock:
    def __init__(self) -> None:
        self.t = (time.perf_counter(), time.thread_time(), time.process_time())

    def stop(self, steps: int) -> Timing:
        now = (time.perf_counter(), time.thread_time(), time.process_time())
        return Timing(*((b - a) / steps for a, b in zip(self.t, now, strict=True)))


def _run_steps(step: Callable[[int], None], args: argparse.Namespace) -> Timing:
    for k in range(args.warmup):
        step(k)
    clock = _Clock()
    for k in range(args.warmup, args.warmup + args.steps):
        step(k)
    return clock.stop(args.steps)


def run_sync(coupling: Coupling, args: argparse.Namespace) -> Timing:
    """The loop that pairs inside each step."""
    model, opt = make_model(args)
    objective = FlowMatchingObjective(coupling=coupling)
    batch_fn = batch_fn_for(args.batch_size)

    def step(k: int) -> None:
        x1 = batch_fn(k).x1
        loss = objective(model, x1, generator=step_generator(SEED, 0x57E9, k)).loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _run_steps(step, args)


def run_prefetch(coupling: Coupling, args: argparse.Namespace) -> Timing:
    """The loop fed by PairingPrefetcher (pairs computed in a background thread)."""
    model, opt = make_model(args)
    objective = FlowMatchingObjective(coupling=coupling)

    def pair_fn(b: Batch, g: torch.Generator) -> Tensor:
        return objective.pair(b.x1, labels=b.labels, generator=g)

    total = args.warmup + args.steps
    with PairingPrefetcher(
        batch_fn_for(args.batch_size), pair_fn, seed=SEED, start_step=0, depth=args.depth
    ) as batches:
        clock = _Clock()
        for k, b in batches:
            if k == args.warmup:
                clock = _Clock()
            out = objective(model, b.x1, x0=b.x0, generator=step_generator(SEED, 0x57E9, k))
            loss = out.loss.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if k + 1 == total:
                break
        return clock.stop(args.steps)


def run_torchcfm(args: argparse.Namespace) -> Timing:
    """torchcfm's exact-OT flow matcher (POT plan, pairs sampled with replacement)."""
    from torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher

    model, opt = make_model(args)
    fm = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
    batch_fn = batch_fn_for(args.batch_size)

    def step(k: int) -> None:
        x1 = batch_fn(k).x1
        x0 = torch.randn(x1.shape, generator=step_generator(SEED, 0x57E9, k))
        t, xt, ut = fm.sample_location_and_conditional_flow(x0, x1)
        loss = (model(xt, t) - ut).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _run_steps(step, args)


def variants(args: argparse.Namespace) -> dict[str, Callable[[], Timing]]:
    out: dict[str, Callable[[], Timing]] = {
        "independent": lambda: run_sync(IndependentCoupling(), args)
    }
    solvers = solver_couplings()
    for name, coupling in solvers.items():
        out[f"ot-sync/{name}"] = lambda c=coupling: run_sync(c, args)
    for name in ("auction", "scipy", "pot"):
        if name in solvers:
            out[f"ot-prefetch/{name}"] = lambda c=solvers[name]: run_prefetch(c, args)
    if importlib.util.find_spec("torchcfm") is not None:
        out["torchcfm"] = lambda: run_torchcfm(args)
    if args.only:
        keep = set(args.only.split(",")) | {"independent"}
        out = {k: v for k, v in out.items() if k in keep}
    return out


# ------------------------------------------------------------------ solve time alone


def solve_times(args: argparse.Namespace) -> dict[str, list[float]]:
    """Milliseconds per solve on checkerboard-vs-Gaussian cost matrices (median per repeat)."""
    batch_fn = batch_fn_for(args.batch_size)
    costs = []
    for k in range(20):
        x1 = batch_fn(k).x1.double()
        x0 = torch.randn(x1.shape, generator=step_generator(SEED, 1, k), dtype=torch.float64)
        costs.append(_neg_inner(*_flat64(x0, x1)).numpy())
    from flowmatch.couplings.assignment import linear_assignment

    solves: dict[str, Solve] = {
        "auction": lambda c: linear_assignment(c, solver="auction"),
        "scipy": lambda c: linear_assignment(c, solver="scipy"),
        "sap": _solve_sap,
    }
    if importlib.util.find_spec("ot") is not None:
        solves["pot"] = _solve_pot
    if importlib.util.find_spec("lap") is not None:
        solves["lapjv"] = _solve_lapjv
    out: dict[str, list[float]] = {name: [] for name in solves}
    for solve in solves.values():
        solve(costs[0])  # compile / warm up
    for _ in range(args.repeats):
        for name, solve in solves.items():
            ts = []
            for c in costs:
                t0 = time.perf_counter()
                solve(c)
                ts.append(time.perf_counter() - t0)
            out[name].append(1e3 * statistics.median(ts))
    return out


def _fmt(xs: list[float], digits: int = 1) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.{digits}f} +- {sd:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--depth", type=int, default=2, help="prefetch depth")
    parser.add_argument("--only", default="", help="comma-separated variant names")
    parser.add_argument("--json", default="", help="also write the raw numbers here")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error(f"--repeats must be >= 3 for a spread, got {args.repeats}")
    torch.set_num_threads(1)

    load0 = os.getloadavg()[0]
    runs = variants(args)
    for fn in runs.values():  # compile numba kernels, import solvers, warm caches
        saved = args.steps, args.warmup
        args.steps, args.warmup = 5, 5
        fn()
        args.steps, args.warmup = saved
    timings: dict[str, list[Timing]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            timings[name].append(fn())
    ms = solve_times(args)
    load1 = os.getloadavg()[0]
    base = timings["independent"]

    def paired(name: str, attr: str) -> list[float]:
        return [
            getattr(b, attr) / getattr(t, attr) for t, b in zip(timings[name], base, strict=True)
        ]

    print(
        f"B={args.batch_size}, 2-D checkerboard, MLP(2, 256, 4), AdamW, 1 torch thread, "
        f"{args.steps} steps x {args.repeats} repeats, prefetch depth {args.depth}, "
        f"{os.cpu_count()} cores, load avg {load0:.2f} -> {load1:.2f}"
    )
    print(
        "\n| variant | steps/s (wall) | ratio (wall) | main-thread CPU ms/step "
        "| worker CPU ms/step | ratio (CPU, critical path) |\n| --- | --- | --- | --- | --- | --- |"
    )
    for name, ts in timings.items():
        print(
            f"| {name} | {_fmt([1 / t.wall for t in ts])} | {_fmt(paired(name, 'wall'), 2)} "
            f"| {_fmt([1e3 * t.main_cpu for t in ts], 2)} "
            f"| {_fmt([1e3 * t.worker_cpu for t in ts], 2)} "
            f"| {_fmt(paired(name, 'critical'), 2)} |"
        )
    print("\n| solver | ms per solve (median of 20, mean +- std over repeats) |\n| --- | --- |")
    for name, xs in ms.items():
        print(f"| {name} | {_fmt(xs, 2)} |")
    if args.json:
        raw = {k: [asdict(t) for t in ts] for k, ts in timings.items()}
        with open(args.json, "w") as f:
            json.dump({"timings": raw, "solve_ms": ms, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
