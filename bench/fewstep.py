"""Few-step generation: every method at NFE 1 and 2 against its teacher, cost and stability.

Everything goes through the library's own entry points (``api.resolve_config`` +
``api.train_run`` for runs trained from data, ``api.distill`` for distilled students), i.e.
exactly what ``flowmatch train`` / ``flowmatch distill`` do.

Protocol (per data set and seed 0, 1, 2): ``MLP(2, 256, 4)`` with a smooth time embedding
(``model.time_scale=1``: objectives that differentiate in time need it; flow matching is as
good with it, docs/benchmarks.md "Adaptive Dopri5"), 5000 steps, batch 256, AdamW lr 1e-3,
cosine decay and grad clip 1 (pinned: the library's training defaults when these runs were
made; the defaults are now constant lr and no clipping), EMA 0.999 (runs trained since the
EMA warm-up landed have it; the stored results predate it). The teacher is plain flow
matching (linear path, independent coupling). Students:

- from data, no teacher: ``meanflow`` (library defaults: the authors' CIFAR-10 setting,
  ratio 0.75, p 0.75), ``meanflow_imagenet`` (their ImageNet setting, ratio 0.25, p 1),
  ``splitmeanflow``, ``flowmap_lsd`` (its self-teacher the EMA weights, the default;
  ``flowmap_lsd_current``: the current weights), ``flowmap_esd``, ``flowmap_psd`` (same net
  with ``time_inputs=2``, same budget);
- distilled from the teacher (``flowmatch distill``): ``reflow`` (2-rectified flow on 20k
  Dopri5 pairs, initialised from the teacher), ``reflow_1step`` (the same pairs, t = 0 only),
  ``flowmap`` (LSD with the teacher's velocity), ``freeflow`` (data-free), ``scm``,
  ``scm_ladd`` (sCM with SANA-Sprint's adversarial term, weight 0.5), ``boss``
  (K = 2 Bellman grid of the sampling suite's BOSS, Euler). Students inherit the teacher's
  training settings.

Metric: exact W2 (``flowmatch.metrics.wasserstein2``) between 2000 samples (noise seed
1000 + training seed) and a fixed 2000-point subset of the held-out split. A run "diverges"
when training stops on a non-finite loss/gradient or its NFE-1 W2 is not finite. Costs: the
trainer's own wall clock (``metrics.jsonl`` ``elapsed``), on a shared 2-core machine.

    .venv/bin/python bench/fewstep.py --data checkerboard           # all methods, 3 seeds
    .venv/bin/python bench/fewstep.py --data moons8g --methods teacher,meanflow
    .venv/bin/python bench/fewstep.py --quick                         # smoke run, ~2 min

Runs are kept under ``runs/bench_fewstep/`` (git-ignored) and reused when complete.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from common import add_common_args, fmt, machine_info, setup, table, write_json

ROOT = Path(__file__).resolve().parent.parent / "runs" / "bench_fewstep"
DATA = {
    "checkerboard": ["data.name=checkerboard"],
    "moons8g": ["data.name=moons", "source.kind=eight_gaussians"],
    # The 8x8 digits as 64 pixels in [-1, 1], the same MLP(64, 256, 4) and batch as the 2-D
    # sets (the image preset's UNet, batch 128 and warm-up are overridden).
    "digits": [
        "data.name=digits",
        "model.kind=mlp",
        "model.hidden=256",
        "model.depth=4",
        "model.conditional=no",
        "train.batch_size=256",
        "train.warmup_steps=0",
    ],
}
COMMON = ["model.time_scale=1", "train.lr_schedule=cosine", "train.grad_clip=1.0"]
#: Arms trained from data: name -> (objective.kind, extra settings).
FROM_DATA = {
    "meanflow": ("meanflow", []),  # the library default: the authors' CIFAR-10 setting
    "meanflow_imagenet": ("meanflow", ["objective.ratio=0.25", "objective.norm_p=1.0"]),
    "splitmeanflow": ("splitmeanflow", []),
    # its self-teacher: a slow average kept for it (the default). The record's
    # flowmap_lsd_ema_warmup (the sampling EMA with its warm-up, 2/3 diverged) is no longer
    # selectable.
    "flowmap_lsd": ("flowmap_lsd", []),
    # the self-teacher with the current weights diverged at lr 1e-3 and 1e-4 (3/3 seeds)
    "flowmap_lsd_current": ("flowmap_lsd", ["objective.self_teacher=current"]),
    "flowmap_lsd_current_lr1e-4": (
        "flowmap_lsd",
        ["objective.self_teacher=current", "train.lr=1e-4"],
    ),
    "flowmap_esd": ("flowmap_esd", []),
    "flowmap_psd": ("flowmap_psd", []),
}
DISTILLED = {
    "reflow": ("reflow", ["objective.num_pairs=20000"]),
    "reflow_1step": ("reflow", ["objective.num_pairs=20000", "objective.one_step=true"]),
    "flowmap": ("flowmap", []),
    "freeflow": ("freeflow", []),
    "scm": ("scm", []),
    # sCM + SANA-Sprint's LADD term (weight 0.5, discriminator on the teacher's velocity)
    "scm_ladd": ("scm", ["objective.adversarial=0.5"]),
    "boss": ("boss", ["objective.num_steps=2"]),
}
METHODS = ("teacher", *FROM_DATA, *DISTILLED)


def _done(run: Path, steps: int) -> bool:
    f = run / "metrics.jsonl"
    if not f.is_file():
        return False
    lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    return any(x.get("step") == steps and "loss" in x for x in lines)


def _cost(run: Path) -> dict[str, float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    logs = [x for x in lines if "elapsed" in x]
    last = logs[-1]
    return {"train_s": float(last["elapsed"]), "s_per_step": float(last["elapsed"]) / last["step"]}


def _train(method: str, data: str, seed: int, steps: int, extra: list[str]) -> dict[str, Any]:
    """Train (or reuse) one run; returns its directory, cost and whether it diverged."""
    from flowmatch import api
    from flowmatch.api.distill import distill

    out = ROOT / data / f"{method}_s{seed}"
    base = ROOT / data / f"teacher_s{seed}"
    sets = [*DATA[data], *COMMON, f"train.seed={seed}", *extra]
    rec: dict[str, Any] = {"run": str(out), "diverged": False}
    if not _done(out, steps):
        t0 = time.perf_counter()
        try:
            if method == "teacher" or method in FROM_DATA:
                kind = []
                if method != "teacher":
                    kind = [f"objective.kind={FROM_DATA[method][0]}", *FROM_DATA[method][1]]
                cfg, train_ds, test_ds = api.resolve_config(overrides=[*sets, *kind], steps=steps)
                api.train_run(cfg, train_ds, out_dir=out, test_ds=test_ds, resume=_started(out))
            else:
                how, opts = DISTILLED[method]
                extra_sets = [f"train.seed={seed}", *opts, *extra]
                distill(base, how, out, overrides=extra_sets, steps=steps, resume=_started(out))
        except FloatingPointError as err:  # NonFiniteError: the run diverged
            rec.update(diverged=True, error=str(err).splitlines()[0])
            return rec
        rec["wall_s"] = time.perf_counter() - t0
    rec.update(_cost(out))
    return rec


def _started(out: Path) -> bool:
    return (out / "checkpoints").is_dir() and any((out / "checkpoints").glob("step_*"))


def _w2_rows(
    run_dir: str, rows: list[tuple[str | None, int]], seed: int, n: int
) -> dict[str, float]:
    """W2 per (solver, NFE); on digits also the FD in the digit classifier's features."""
    from flowmatch import api
    from flowmatch.api.evaluate import fit_to_field
    from flowmatch.metrics import wasserstein2
    from flowmatch.metrics.digits_features import digits_frechet_distance

    run = api.load_run(run_dir)
    # The samplers that apply to this run, as `flowmatch eval` picks them (e.g. no re-noising
    # sampler for a run whose source is not N(0, I)).
    usable, _, _ = fit_to_field(run, [s for s, _ in rows if s is not None], None)
    rows = [(s, k) for s, k in rows if s is None or s in usable]
    _, test_ds = api.load_data(run.config.data)
    digits = run.config.data.name == "digits"
    perm = torch.randperm(len(test_ds), generator=torch.Generator().manual_seed(0))
    ref = run.to_data_space(test_ds.x[perm[:n]])  # digits: all 297 held-out images
    out = {}
    for solver, nfe in rows:
        res = api.generate(run, n, solver=solver, nfe=nfe, seed=1000 + seed)
        x = res.samples
        key = f"{res.solver}_{nfe}"
        if not bool(torch.isfinite(x).all()):
            out[key] = math.nan
            continue
        # digits: W2 between 297 of the samples (seeded) and the 297 held-out images
        out[key] = wasserstein2(x, ref, generator=torch.Generator().manual_seed(seed))
        if digits:
            out[f"fd:{key}"] = digits_frechet_distance(x, ref)
    return out


def _floor(run_dir: str, n: int) -> dict[str, float]:
    """The metrics between training and held-out data (a sample of the data itself), 3 draws."""
    from flowmatch import api
    from flowmatch.metrics import wasserstein2
    from flowmatch.metrics.digits_features import digits_frechet_distance

    run = api.load_run(run_dir)
    train_ds, test_ds = api.load_data(run.config.data)
    perm = torch.randperm(len(test_ds), generator=torch.Generator().manual_seed(0))
    ref = run.to_data_space(test_ds.x[perm[:n]])
    out: dict[str, list[float]] = {}
    for s in range(3):
        g = torch.Generator().manual_seed(s)
        x = run.to_data_space(train_ds.x[torch.randperm(len(train_ds), generator=g)[:n]])
        out.setdefault("w2", []).append(wasserstein2(x, ref, generator=g))
        if run.config.data.name == "digits":
            out.setdefault("fd", []).append(digits_frechet_distance(x, ref))
    return {k: sum(v) / len(v) for k, v in out.items()}


def _eval(method: str, rec: dict[str, Any], seed: int, n: int) -> dict[str, float]:
    if rec["diverged"]:
        return {}
    if method == "teacher":
        return _w2_rows(
            rec["run"], [("euler", 1), ("euler", 2), ("euler", 100), ("midpoint", 100)], seed, n
        )
    if method in ("reflow", "reflow_1step"):
        return _w2_rows(rec["run"], [("euler", 1), ("euler", 2)], seed, n)
    if method == "boss":
        return _w2_rows(rec["run"], [("euler", 2)], seed, n)
    rows: list[tuple[str | None, int]] = [("flow_map", 1), ("flow_map", 2)]
    if method in ("scm", "scm_ladd"):  # its own multistep sampler, where it applies
        rows.append(("flow_map_renoise", 2))
    return _w2_rows(rec["run"], rows, seed, n)


def main() -> None:
    global ROOT
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="checkerboard", choices=sorted(DATA))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument(
        "--steps-for",
        action="append",
        default=[],
        metavar="METHOD=N",
        help="a reduced budget for one method (stated in the table), e.g. freeflow=2000",
    )
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--root", default=None, help=f"where runs are kept (default {ROOT})")
    p.add_argument("--set", action="append", default=[], help="extra --set for every run")
    add_common_args(p)
    args = p.parse_args()
    setup()
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.root:
        ROOT = Path(args.root)
    if args.quick:
        ROOT = ROOT.parent / "bench_fewstep_quick"
        args.steps, args.samples, seeds = 200, 500, [0]
        args.set = [*args.set, "data.n_train=4096", "data.n_test=1024"]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {list(METHODS)}")
    print(machine_info())
    budget = {m: int(n) for m, n in (x.split("=") for x in args.steps_for)}
    results: dict[str, Any] = {}
    for method in methods:
        steps = budget.get(method, args.steps)
        for seed in seeds:
            extra = list(args.set)
            if args.quick and method in ("reflow", "reflow_1step"):
                extra.append("objective.num_pairs=2000")
            if args.quick and method == "boss":
                extra += ["objective.num_trajectories=1000"]
            try:
                rec = _train(method, args.data, seed, steps, extra)
                rec["steps"] = steps
                rec.update(_eval(method, rec, seed, args.samples))
            except Exception as err:  # keep going; the table shows the failure
                traceback.print_exc()
                rec = {"diverged": None, "error": f"{type(err).__name__}: {err}"}
            results.setdefault(method, {})[str(seed)] = rec
            print(method, seed, {k: v for k, v in rec.items() if k != "run"}, flush=True)
    teacher = ROOT / args.data / f"teacher_s{seeds[0]}"
    floor = _floor(str(teacher), args.samples) if teacher.is_dir() else {}
    _report(results, args, seeds, floor)


def _report(results: dict[str, Any], args: Any, seeds: list[int], floor: dict[str, float]) -> None:
    cols = sorted(
        {k for m in results.values() for r in m.values() for k in r if k[-1].isdigit() and "_" in k}
    )
    rows = []
    for method, per in results.items():
        recs = [per[str(s)] for s in seeds if str(s) in per]
        steps = {r.get("steps") for r in recs} - {None}
        cells = [method + (f" ({steps.pop()} steps)" if steps and steps != {args.steps} else "")]
        for c in cols:
            vals = [r[c] for r in recs if c in r and math.isfinite(r[c])]
            cells.append(fmt(vals, 3) if vals else "")
        cost = [r["s_per_step"] * 1000 for r in recs if "s_per_step" in r]
        total = [r["train_s"] for r in recs if "train_s" in r]
        div = sum(1 for r in recs if r.get("diverged"))
        cells += [
            fmt(cost, 1) if cost else "",
            fmt(total, 0) if total else "",
            f"{div}/{len(recs)}",
        ]
        rows.append(cells)
    print()
    heads = [f"FD {c[3:]}" if c.startswith("fd:") else f"W2 {c}" for c in cols]
    print(table(["method", *heads, "ms/step", "train s", "diverged"], rows))
    if floor:
        print(
            "floor (training vs held-out data, 3 draws): "
            + ", ".join(f"{k} {v:.3f}" for k, v in floor.items())
        )
    path = args.json or str(
        Path(__file__).parent
        / "results"
        / f"fewstep_{args.data}{'_quick' if args.quick else ''}.json"
    )
    write_json(
        path,
        {
            "data": args.data,
            "steps": args.steps,
            "seeds": seeds,
            "floor": floor,
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
