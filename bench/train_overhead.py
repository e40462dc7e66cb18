"""Overhead of flowmatch's Trainer over a bare hand-written PyTorch loop doing the same math.

Both loops run in the same process on one thread: MLP (4 hidden layers of 256, SiLU) on 2-D
data, batch 256, independent coupling, linear path, velocity target, uniform t, AdamW with a
cosine learning rate set every step, a fresh permutation of the data every epoch, EMA off,
gradient clipping off, logging every 100 steps.

Method: both loops advance in alternating blocks of ``--block`` steps (the Trainer through
``fit(until_step=...)``), so slow drifts of a shared machine hit both alike; each block is one
repeat. We report steps/s of each loop (mean +- std over blocks), the paired per-block time
ratio Trainer / bare (mean +- std, and its standard error), and the ratio of total times
(target: <= 1.03). A third loop, the bare loop with its loss computed by
``FlowMatchingObjective``, splits the overhead into the objective's share and the Trainer's
own (batch schedule, per-step generator, bookkeeping). Time is process CPU time by default (``--clock cpu``), which does not count
the time this process waits for a core on a busy machine; use ``--clock wall`` on an idle one
or on a GPU.

    .venv/bin/python bench/train_overhead.py --blocks 30 --block 50
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable

import torch

from flowmatch.data import ArrayDataset
from flowmatch.models import MLP
from flowmatch.objectives import FlowMatchingObjective
from flowmatch.train import TrainConfig, Trainer


def make_data(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]])
    idx = torch.randint(0, 4, (n,), generator=g)
    return centers[idx] + 0.3 * torch.randn(n, 2, generator=g)


class BareLoop:
    """The reference: what one would write by hand, advanced ``n`` steps at a time."""

    def __init__(self, x: torch.Tensor, args: argparse.Namespace, total: int) -> None:
        torch.manual_seed(0)
        self.model = MLP(2, hidden=args.hidden, depth=args.depth)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.gen = torch.Generator().manual_seed(1)
        self.x, self.b, self.total, self.step = x, args.batch_size, total, 0
        self.per_epoch = x.shape[0] // self.b
        self.perm = torch.randperm(x.shape[0], generator=self.gen)

    def loss(self, x1: torch.Tensor) -> torch.Tensor:
        """Mean flow-matching loss on the linear path, written out by hand."""
        x0 = torch.randn(x1.shape, generator=self.gen)
        t = torch.rand(x1.shape[0], generator=self.gen)
        tt = t[:, None]
        xt = tt * x1 + (1 - tt) * x0
        return (self.model(xt, t) - (x1 - x0)).pow(2).mean()

    def run(self, n: int) -> None:
        # The loss hook adds one method call per step (< 0.1 us measured) to a step of ~6 ms
        # (~170 steps/s in docs/benchmarks.md), so the bare loop stays a fair reference.
        opt, gen, x, b = self.opt, self.gen, self.x, self.b
        for step in range(self.step, self.step + n):
            k = step % self.per_epoch
            if k == 0 and step > 0:
                self.perm = torch.randperm(x.shape[0], generator=gen)
            loss = self.loss(x[self.perm[k * b : (k + 1) * b]])
            loss.backward()
            lr = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / self.total))
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            opt.zero_grad(set_to_none=True)
        self.step += n
        loss.detach().item()  # wait for the device (no-op on CPU; keeps GPU timings fair)


class ObjectiveLoop(BareLoop):
    """The bare loop, but the loss comes from ``FlowMatchingObjective`` (isolates its cost)."""

    def __init__(self, x: torch.Tensor, args: argparse.Namespace, total: int) -> None:
        super().__init__(x, args, total)
        self.objective = FlowMatchingObjective()

    def loss(self, x1: torch.Tensor) -> torch.Tensor:
        """The same loss, through ``FlowMatchingObjective``."""
        return self.objective(self.model, x1, generator=self.gen).loss.mean()


class TrainerLoop:
    """The same run through ``Trainer.fit(until_step=...)``."""

    def __init__(self, x: torch.Tensor, args: argparse.Namespace, total: int) -> None:
        torch.manual_seed(0)
        cfg = TrainConfig(
            steps=total,
            batch_size=args.batch_size,
            lr=1e-3,
            grad_clip=None,
            ema_decay=None,
            log_every=args.log_every,
            checkpoint_every=0,
            seed=1,
        )
        model = MLP(2, hidden=args.hidden, depth=args.depth)
        self.trainer = Trainer(model, FlowMatchingObjective(), ArrayDataset(x), cfg)

    def run(self, n: int) -> None:
        self.trainer.fit(until_step=self.trainer.step + n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=30, help="timed blocks (repeats) per loop")
    p.add_argument("--block", type=int, default=50, help="steps per block")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    p.add_argument("--json", type=str, default=None, help="also write the results here")
    args = p.parse_args()
    if args.blocks < 3:
        p.error("--blocks must be >= 3")
    torch.set_num_threads(args.threads)
    clock: Callable[[], float] = time.process_time if args.clock == "cpu" else time.perf_counter
    x = make_data(256 * args.batch_size)
    total = (args.blocks + 1) * args.block
    loops = {
        "bare": BareLoop(x, args, total),
        "trainer": TrainerLoop(x, args, total),
        "bare_objective": ObjectiveLoop(x, args, total),
    }
    for loop in loops.values():  # warm-up block (allocator, first-call costs)
        loop.run(args.block)

    times: dict[str, list[float]] = {kind: [] for kind in loops}
    kinds = list(loops)
    for r in range(args.blocks):
        for kind in kinds[r % 3 :] + kinds[: r % 3]:  # rotate the order every block
            t0 = clock()
            loops[kind].run(args.block)
            times[kind].append(clock() - t0)

    rate = {k: [args.block / s for s in v] for k, v in times.items()}
    ratios = [tr / bb for tr, bb in zip(times["trainer"], times["bare"], strict=True)]
    overhead = [
        (tr - bb) / args.block * 1e6 for tr, bb in zip(times["trainer"], times["bare"], strict=True)
    ]

    def mean_std(v: list[float]) -> list[float]:
        return [statistics.mean(v), statistics.stdev(v)]

    result = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "setup": f"MLP depth={args.depth} hidden={args.hidden}, batch {args.batch_size}, "
        f"{args.blocks} blocks x {args.block} steps per loop",
        "bare_steps_per_sec": mean_std(rate["bare"]),
        "trainer_steps_per_sec": mean_std(rate["trainer"]),
        "paired_time_ratio": mean_std(ratios),
        "paired_time_ratio_sem": statistics.stdev(ratios) / math.sqrt(len(ratios)),
        "total_time_ratio": sum(times["trainer"]) / sum(times["bare"]),
        "median_time_ratio": statistics.median(times["trainer"]) / statistics.median(times["bare"]),
        "overhead_us_per_step": mean_std(overhead),
        "bare_objective_steps_per_sec": mean_std(rate["bare_objective"]),
        "total_time_ratio_trainer_over_bare_objective": sum(times["trainer"])
        / sum(times["bare_objective"]),
        "objective_share_us_per_step": mean_std(
            [
                (ob - bb) / args.block * 1e6
                for ob, bb in zip(times["bare_objective"], times["bare"], strict=True)
            ]
        ),
    }
    print(result["setup"], f"({args.clock} time, {result['threads']} thread(s))")
    for key in ("bare_steps_per_sec", "trainer_steps_per_sec", "paired_time_ratio"):
        mean, std = result[key]
        print(f"  {key:24s} {mean:10.4f} +- {std:.4f}")
    print(f"  {'paired_time_ratio_sem':24s} {result['paired_time_ratio_sem']:10.4f}")
    print(f"  {'total_time_ratio':24s} {result['total_time_ratio']:10.4f}")
    print(f"  {'median_time_ratio':24s} {result['median_time_ratio']:10.4f}")
    key = "total_time_ratio_trainer_over_bare_objective"
    print(f"  {key:24s} {result[key]:10.4f}")
    for key in ("overhead_us_per_step", "objective_share_us_per_step"):
        mean, std = result[key]
        print(f"  {key:28s} {mean:6.1f} +- {std:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
