"""Training defaults vs a plain PyTorch loop: five data sets, 1k/3k/10k steps, 3 seeds.

Question: does ``Trainer`` with ``TrainConfig()``'s defaults learn at least as well as the
20-line loop a user would write (Adam lr 1e-3, batch 256, constant lr, no clipping, no EMA)?
Every arm trains the *same* network from the *same* initial weights (``torch.manual_seed(seed)``
before it is built) on the same data for the same number of steps, with the same objective
(independent coupling, linear path, velocity target, ``t ~ U[0, 1]``):

- ``plain``: the hand-written loop (``train_plain``; batches drawn with replacement);
- ``old``: ``Trainer`` with flowmatch 0.1.0's defaults -- cosine decay to 0, ``grad_clip=1.0``,
  EMA 0.999 *without* warm-up (``EMA(..., warmup=False)`` swapped in);
- ``new``: ``Trainer`` with this checkout's ``TrainConfig()`` defaults (EMA with warm-up);
- further candidates (``CANDIDATES``, ``--arms``), e.g. ``cos01``: cosine to 0.1 lr.

Data (``flowmatch.data.load_dataset``; metric in model space, i.e. after the per-feature
standardisation of tables): ``checkerboard`` and ``moons`` (100 000 / 10 000 points),
``swissroll`` (sklearn ``make_swiss_roll(22 000, noise=0.5, random_state=0)`` written to an
``.npz``, 10 % held out), ``breast_cancer`` (sklearn's 569 x 30 table as an ``.npz``,
169 rows held out so the metric has a usable reference), ``digits`` (8x8, 1500 / 297,
unconditional). Networks: ``MLP(D, hidden=256, depth=4)`` for all of them by default (for
digits on the flattened 64 pixels); ``--digits-net unet`` uses the image preset's UNet
(16 channels, mults 1,2,2), about 11x slower per step on one core.

Metric: samples from the source noise of seed ``1000 + seed`` (same for every arm) through
``solve(model, x0, make_grid("uniform", 8), Midpoint())`` (16 NFE), for the raw and the EMA
weights. Vectors: exact W2 (``flowmatch.metrics.wasserstein2``) against ``n_ref =
min(2000, n_test)`` held-out points; with fewer than 1000 held-out points the W2 is averaged
over 10 disjoint generated sets of ``n_ref`` points. Digits: ``digits_frechet_distance`` of
1000 samples vs the 297 held-out digits. The "data floor" row applies the same metric to
training points in place of samples.

"Worse beyond noise" for a cell: ``mean(arm) - mean(plain) > 2 sqrt(s_arm^2 / n + s_plain^2 /
n)`` over the ``n`` seeds (two standard errors of the difference of means); "better" likewise.

Constant-lr arms (``plain`` and any ``lr_schedule="constant"`` arm) train once for the largest
step count and are evaluated at each smaller one on the way (their step ``k`` does not depend
on the run length); cosine arms train one run per step count. Finished cells are cached in
``runs/bench-defaults/cells.jsonl`` (git-ignored), so an interrupted run resumes.

    .venv/bin/python bench/defaults.py --json bench/results/defaults.json   # full grid
    .venv/bin/python bench/defaults.py --data digits --digits-net unet --steps 1000,3000
    .venv/bin/python bench/defaults.py --quick                              # smoke, < 1 min
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from common import BENCH_DIR, add_common_args, fmt, machine_info, mean_std, setup, table, write_json
from flowmatch.data import ArrayDataset, load_dataset
from flowmatch.metrics import digits_frechet_distance, wasserstein2
from flowmatch.models import MLP, UNet
from flowmatch.objectives import FlowMatchingObjective
from flowmatch.solvers import Midpoint, solve
from flowmatch.times import make_grid
from flowmatch.train import History, TrainConfig, Trainer
from flowmatch.train.ema import EMA

WORK_DIR = BENCH_DIR.parent / "runs" / "bench-defaults"
CACHE_FILE = WORK_DIR / "cells.jsonl"
PROTOCOL = 1  # bump when the data, metric or training protocol changes (invalidates the cache)
DATASETS = ("checkerboard", "moons", "swissroll", "breast_cancer", "digits")
STEPS = (1000, 3000, 10000)
SEEDS = (0, 1, 2)
LR, EVAL_SEED_OFFSET = 1e-3, 1000

#: flowmatch 0.1.0's TrainConfig defaults (its EMA had no warm-up: see ``_old_ema``).
OLD_DEFAULTS: dict[str, Any] = {
    "lr_schedule": "cosine",
    "min_lr_ratio": 0.0,
    "warmup_steps": 0,
    "grad_clip": 1.0,
    "ema_decay": 0.999,
}
#: Other candidate defaults (TrainConfig overrides); the EMA always has the warm-up.
CANDIDATES: dict[str, dict[str, Any]] = {
    "const": {"lr_schedule": "constant", "grad_clip": None, "ema_decay": 0.999},
    "const_clip1": {"lr_schedule": "constant", "grad_clip": 1.0, "ema_decay": 0.999},
    "cos0": {"lr_schedule": "cosine", "min_lr_ratio": 0.0, "grad_clip": None, "ema_decay": 0.999},
    "cos01": {"lr_schedule": "cosine", "min_lr_ratio": 0.1, "grad_clip": None, "ema_decay": 0.999},
    # The image preset's lr warm-up on top of the new defaults.
    "new_wu200": {"warmup_steps": 200},
}
LABELS = {
    "plain": "plain loop (Adam 1e-3, const, no clip, no EMA)",
    "old": "old defaults (cosine to 0, clip 1, EMA 0.999 no warm-up)",
    "new": "new defaults (TrainConfig())",
}


# ------------------------------------------------------------------ data and networks


def load(name: str) -> tuple[ArrayDataset, Tensor]:
    """``(train, test samples)`` in model space, unlabelled (every model is unconditional)."""
    spec: str | Path = name
    n_test = None
    if name == "swissroll":
        spec = _npz("swissroll", lambda: _swiss_roll())
    elif name == "breast_cancer":
        spec, n_test = _npz("breast_cancer", lambda: _breast_cancer()), 169
    train, test = load_dataset(spec, n_test=n_test)
    return ArrayDataset(train.x, name=name), test.x


def _swiss_roll() -> np.ndarray:
    from sklearn.datasets import make_swiss_roll

    return make_swiss_roll(22_000, noise=0.5, random_state=0)[0]


def _breast_cancer() -> np.ndarray:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(return_X_y=True)[0]


def _npz(name: str, make: Callable[[], np.ndarray]) -> Path:
    path = WORK_DIR / f"{name}.npz"
    if not path.is_file():
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=make().astype(np.float32))
    return path


def make_net(sample_shape: tuple[int, ...], kind: str, seed: int) -> nn.Module:
    """The network of every arm, initialised from ``seed`` (global RNG: benchmark only)."""
    torch.manual_seed(seed)
    if kind == "unet":  # the image preset's network (config.schema.ModelCfg defaults)
        return UNet(1, image_size=8, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1)
    return MLP(math.prod(sample_shape), hidden=256, depth=4)


# ------------------------------------------------------------------ metric


class Metric:
    """W2 (vectors) or Frechet distance (digits) of samples against the held-out points."""

    def __init__(self, name: str, train: Tensor, test: Tensor, quick: bool) -> None:
        self.digits = name == "digits"
        self.shape = tuple(test.shape[1:])
        g = torch.Generator().manual_seed(0)
        if self.digits:
            self.ref, self.n_gen, self.repeats = test, (300 if quick else 1000), 1
        else:
            n_ref = min(250 if quick else 2000, test.shape[0])
            self.ref = test[torch.randperm(test.shape[0], generator=g)[:n_ref]]
            self.repeats = 1 if n_ref >= 1000 or quick else 10
            self.n_gen = n_ref * self.repeats
        # Floor: the same metric with training points in place of samples; each of the
        # ``repeats`` blocks is its own subset without replacement (a small table has fewer
        # training rows than ``n_gen``; duplicated rows would inflate the W2).
        n_block = self.n_gen // self.repeats
        blocks = [
            torch.randperm(train.shape[0], generator=g)[:n_block] for _ in range(self.repeats)
        ]
        self.floor = self.score(train[torch.cat(blocks)])

    def score(self, x: Tensor) -> float:
        if self.digits:
            return digits_frechet_distance(x, self.ref)
        n = self.ref.shape[0]
        parts = [wasserstein2(x[i * n : (i + 1) * n], self.ref) for i in range(self.repeats)]
        return sum(parts) / len(parts)

    @torch.no_grad()
    def __call__(self, model: nn.Module, seed: int) -> float:
        was_training = model.training
        model.eval()
        gen = torch.Generator().manual_seed(EVAL_SEED_OFFSET + seed)
        x0 = torch.randn(self.n_gen, *self.shape, generator=gen)
        x1 = solve(model, x0, make_grid("uniform", 8), Midpoint()).x  # 16 NFE
        model.train(was_training)
        return self.score(x1)


# ------------------------------------------------------------------ arms


def train_plain(
    model: nn.Module, x: Tensor, steps: Sequence[int], seed: int, batch: int, on_step: Any
) -> None:
    """The reference a user writes by hand (Lipman et al. 2023, Alg. 1), evaluated on the way."""
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(seed)
    elapsed, t0 = 0.0, time.perf_counter()
    for k in range(1, max(steps) + 1):
        x1 = x[torch.randint(0, x.shape[0], (batch,), generator=gen)]
        x0 = torch.randn(x1.shape, generator=gen)
        t = torch.rand(batch, generator=gen)
        tt = t.view(-1, *([1] * (x1.ndim - 1)))
        loss = (model(tt * x1 + (1 - tt) * x0, t) - (x1 - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k in steps:
            elapsed += time.perf_counter() - t0
            on_step(k, model, None, elapsed)
            t0 = time.perf_counter()


def arm_overrides(arm: str) -> dict[str, Any]:
    """TrainConfig overrides of a Trainer arm (``new``: none, the checkout's defaults)."""
    if arm == "old":
        return dict(OLD_DEFAULTS)
    if arm == "new":
        return {}
    return dict(CANDIDATES[arm])


def train_trainer(
    arm: str, model_fn: Callable[[], nn.Module], data: ArrayDataset, steps: Sequence[int],
    seed: int, batch: int, on_step: Any,
) -> None:  # fmt: skip
    """``Trainer`` runs of ``arm``: one run evaluated at every step count if the lr is constant."""
    over = arm_overrides(arm)
    constant = TrainConfig(**over).lr_schedule == "constant"
    horizons = [max(steps)] if constant else list(steps)
    for horizon in horizons:
        if "warmup_steps" in over:  # only --quick runs are shorter than a warm-up
            over["warmup_steps"] = min(over["warmup_steps"], horizon)
        cfg = TrainConfig(
            **{**over, "steps": horizon, "batch_size": batch, "lr": LR, "seed": seed},
            log_every=100, checkpoint_every=0,
        )  # fmt: skip
        history = History()
        trainer = Trainer(model_fn(), FlowMatchingObjective(), data, cfg, callbacks=[history])
        if arm == "old" and trainer.emas is not None:  # 0.1.0's EMA
            trainer.emas["model"] = EMA(trainer.model, trainer.emas["model"].decay, warmup=False)
        elapsed = 0.0
        for stop in [s for s in steps if s <= horizon] if constant else [horizon]:
            elapsed += trainer.fit(until_step=stop).wall_time
            gn = [log["grad_norm"] for log in history.logs if math.isfinite(log["grad_norm"])]
            ema = trainer.ema.module_synced() if trainer.ema is not None else None
            on_step(stop, trainer.model, ema, elapsed, float(np.median(gn)) if gn else None)


# ------------------------------------------------------------------ cache and run


def _cell_key(data: str, arm: str, net: str, batch: int, seed: int, steps: int) -> str:
    spec: Any = "plain"
    if arm != "plain":  # settings that cannot change a CPU result are not part of the key
        spec = TrainConfig(**arm_overrides(arm)).to_dict()
        spec.pop("dist_timeout", None)
    if arm == "old":
        spec = {**spec, "ema_warmup": False}
    # The arm's name is not part of the key: arms with the same settings share their cells.
    return json.dumps([PROTOCOL, data, spec, net, batch, seed, steps], sort_keys=True)


def _read_cache() -> dict[str, dict[str, Any]]:
    if not CACHE_FILE.is_file():
        return {}
    rows = (json.loads(line) for line in CACHE_FILE.read_text().splitlines() if line.strip())
    return {row["key"]: row for row in rows}


class Cells:
    """Runs (data, arm, seed) cells, caching each finished cell in ``CACHE_FILE``."""

    def __init__(
        self,
        *,
        quick: bool,
        use_cache: bool,
        train: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.quick, self.train, self.log = quick, train, log
        self.cache = _read_cache() if use_cache and not quick else None
        self._metrics: dict[str, Metric] = {}

    def metric(self, name: str) -> Metric:
        """The data set's metric (built once: it holds the reference points and the floor)."""
        if name not in self._metrics:
            train, test = load(name)
            self._metrics[name] = Metric(name, train.x, test, self.quick)
        return self._metrics[name]

    def run(
        self, data_name: str, arm: str, net: str, batch: int, steps: Sequence[int], seed: int
    ) -> dict[int, dict[str, Any]]:
        """``{steps: {"raw", "ema", "grad_norm", "train_s"}}`` of one (data, arm, seed)."""
        keys = {s: _cell_key(data_name, arm, net, batch, seed, s) for s in steps}
        out = {s: self.cache[k] for s, k in keys.items() if self.cache and k in self.cache}
        todo = [s for s in steps if s not in out]
        if not todo or not self.train:  # --report: only what is cached
            return out
        train, _ = load(data_name)
        metric = self.metric(data_name)

        def on_step(
            k: int, model: nn.Module, ema: nn.Module | None, train_s: float, grad_norm: Any = None
        ) -> None:
            raw = metric(model, seed)
            row = {
                "key": keys[k], "raw": raw, "ema": metric(ema, seed) if ema is not None else None,
                "grad_norm": grad_norm, "train_s": train_s,
            }  # fmt: skip
            out[k] = row
            ema_txt = f"{row['ema']:.3f}" if row["ema"] is not None else "-"
            self.log(f"  {data_name} {arm} seed {seed} step {k}: raw {raw:.3f} ema {ema_txt}")
            if self.cache is not None:
                WORK_DIR.mkdir(parents=True, exist_ok=True)
                with open(CACHE_FILE, "a") as f:
                    f.write(json.dumps(row) + "\n")

        def model_fn() -> nn.Module:
            return make_net(train.sample_shape, net, seed)

        if arm == "plain":
            train_plain(model_fn(), train.x, todo, seed, batch, on_step)
        else:
            train_trainer(arm, model_fn, train, todo, seed, batch, on_step)
        return out


def verdict(arm: Sequence[float], ref: Sequence[float]) -> str:
    """``better``/``worse`` when the means differ by > 2 standard errors of the difference."""
    if min(len(arm), len(ref)) < 2:
        return ""  # one seed: no noise estimate
    (m, s), (m0, s0) = mean_std(arm), mean_std(ref)
    se = math.sqrt(s**2 / len(arm) + s0**2 / len(ref))
    if m - m0 > 2 * se:
        return "**worse**"
    if m0 - m > 2 * se:
        return "better"
    return "="


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--data", default=",".join(DATASETS))
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument(
        "--arms", default="plain,old,new", help=f"plain, old, new, {list(CANDIDATES)}"
    )
    parser.add_argument("--digits-net", default="mlp", choices=["mlp", "unet"])
    parser.add_argument("--batch", type=int, default=256, help="batch size of every arm")
    parser.add_argument("--no-cache", action="store_true", help="retrain every cell")
    parser.add_argument(
        "--report", action="store_true", help="train nothing: tables of the cached cells only"
    )
    args = parser.parse_args()
    setup()
    data_names, arms = args.data.split(","), args.arms.split(",")
    steps = sorted(int(s) for s in args.steps.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        steps, seeds = [20, 50], [0, 1]
    cells_runner = Cells(quick=args.quick, use_cache=not args.no_cache, train=not args.report)
    print(f"Machine: {machine_info()}")
    print(f"TrainConfig() defaults: {TrainConfig().to_dict()}\n")
    t_start = time.perf_counter()
    results: dict[str, Any] = {}
    for name in data_names:
        net = args.digits_net if name == "digits" else "mlp"
        cells: dict[str, dict[int, list[dict[str, Any]]]] = {}
        for seed in seeds:
            for arm in arms:
                res = cells_runner.run(name, arm, net, args.batch, steps, seed)
                for s in steps:
                    if s in res:
                        cells.setdefault(arm, {}).setdefault(s, []).append(res[s])
        floor = cells_runner.metric(name).floor
        results[name] = {"net": net, "batch": args.batch, "floor": floor, "cells": cells}
        print_dataset(name, f"{net}, batch {args.batch}", floor, arms, steps, cells, len(seeds))
    wall = time.perf_counter() - t_start
    print(f"wall time {wall:.0f} s; load avg now: {machine_info().rsplit('load avg ', 1)[1]}")
    if args.json and not args.quick:
        save_json(args.json, results, arms, wall)


def save_json(path: str, results: dict[str, Any], arms: Sequence[str], wall: float) -> None:
    """Merge this invocation's cells into ``path`` (several invocations fill one file).

    Layout: ``runs["<data>/<net>/b<batch>"] = {"floor", "cells": {arm: {steps: [per-seed
    {"seed", "raw", "ema", "grad_norm", "train_s"}]}}}``, plus each arm's TrainConfig overrides,
    the defaults measured as ``new`` and every invocation's command line and wall time.
    """
    old: dict[str, Any] = {}
    if Path(path).is_file():
        old = json.loads(Path(path).read_text())
    runs = old.get("runs", {})
    for name, r in results.items():
        run = runs.setdefault(f"{name}/{r['net']}/b{r['batch']}", {"cells": {}})
        run.update(data=name, net=r["net"], batch=r["batch"], floor=r["floor"])
        for arm, per in r["cells"].items():
            run["cells"][arm] = {
                str(s): [
                    {"seed": json.loads(row["key"])[-2]}
                    | {k: v for k, v in row.items() if k != "key"}
                    for row in rows
                ]
                for s, rows in per.items()
            }
    arm_specs = old.get("arms", {}) | {
        a: ("hand-written loop" if a == "plain" else arm_overrides(a)) for a in arms
    }
    if "old" in arms:
        arm_specs["old"] = {**arm_specs["old"], "ema_warmup": False}
    invocations = old.get("invocations", []) + [{"argv": sys.argv, "wall_s": wall}]
    write_json(
        path,
        {"defaults": TrainConfig().to_dict(), "arms": arm_specs, "runs": runs,
         "invocations": invocations},
    )  # fmt: skip


def print_dataset(
    name: str, net: str, floor: float, arms: Sequence[str], steps: Sequence[int],
    cells: dict[str, dict[int, list[dict[str, Any]]]], n: int,
) -> None:  # fmt: skip
    """One markdown table: arms x step counts, mean +- std over seeds (``n=`` when not ``n``)."""
    metric = "FD" if name == "digits" else "W2"
    print(f"\n### {name} ({net}; {metric}, lower is better; data floor {floor:.3f})\n")
    plain = {s: [r["raw"] for r in rows] for s, rows in cells.get("plain", {}).items()}
    out = []
    for arm in arms:
        for weights in ("raw", "ema"):
            vals = {s: [r[weights] for r in rows] for s, rows in cells.get(arm, {}).items()}
            if not vals or any(v is None for per in vals.values() for v in per):
                continue  # no cells, or no EMA (plain loop)
            row = [f"{LABELS.get(arm, arm)} [{weights}]"]
            for s in steps:
                if s not in vals:
                    row.append("n/a")
                    continue
                cell = fmt(vals[s], 3) + (f" (n={len(vals[s])})" if len(vals[s]) != n else "")
                if s in plain and arm != "plain" and verdict(vals[s], plain[s]):
                    cell += f" {verdict(vals[s], plain[s])}"
                row.append(cell)
            out.append(row)
    print(table(["arm [weights]"] + [f"{s} steps" for s in steps], out))
    gn = [r["grad_norm"] for per in cells.values() for rows in per.values() for r in rows]
    gn = [g for g in gn if g]
    if gn:
        print(f"\nmedian logged grad norm over Trainer runs: {float(np.median(gn)):.2f}")


if __name__ == "__main__":
    main()
