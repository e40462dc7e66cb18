"""Velocity vs x1- vs x0-prediction, trained and sampled end to end as the CLI does.

Each arm is ``flowmatch train --steps S --set path.prediction=P [--set objective.loss_space=L]``
on the built-in checkerboard with the library defaults, then ``flowmatch eval`` (midpoint,
NFE 8, 2000 samples against a seeded random held-out subset). A loaded run samples through its
``Run.field``, which converts an x1-/x0-prediction to a velocity with the path's endpoint rule
(``path.eps``, default 0.05), so all arms integrate the same kind of field. Reported: W2 with
the EMA weights (what ``sample``/``eval`` use by default) and with the raw weights, mean +-
std over training seeds 0, 1, 2, and each arm's ratio to the velocity arm.

    .venv/bin/python bench/prediction.py                 # 5 arms x 3 seeds, 1500 steps
    .venv/bin/python bench/prediction.py --steps 300 --seeds 0   # smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time

from common import RESULTS_DIR, fmt, machine_info, setup, table, write_json
from flowmatch import api

ARMS = (
    ("velocity", []),
    ("x1", ["path.prediction=x1"]),
    ("x1, velocity loss", ["path.prediction=x1", "objective.loss_space=velocity"]),
    ("x0", ["path.prediction=x0"]),
    ("x0, velocity loss", ["path.prediction=x0", "objective.loss_space=velocity"]),
)


def run_arm(overrides: list[str], seed: int, steps: int) -> dict[str, float]:
    """Train one arm and return its W2 with EMA and raw weights (midpoint, NFE 8)."""
    cfg, train_ds, test_ds = api.resolve_config(
        overrides=[*overrides, f"train.seed={seed}", "train.checkpoint_every=0"], steps=steps
    )
    out = tempfile.mkdtemp(prefix="fm-pred-")
    t0 = time.perf_counter()
    api.train_run(cfg, train_ds, out_dir=out)
    wall = time.perf_counter() - t0
    result = {"train_s": wall}
    for tag, ema in (("ema", True), ("raw", False)):
        run = api.load_run(out, use_ema=ema)
        report = api.evaluate(
            run, test_ds, nfe=[8], solvers=["midpoint"], reference=None, metrics=["w2"]
        )
        result[tag] = report["rows"][0]["w2"]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    setup()
    results: dict[str, list[dict[str, float]]] = {}
    for name, overrides in ARMS:
        results[name] = [run_arm(overrides, s, args.steps) for s in args.seeds]
        print(f"{name}: {[round(r['ema'], 3) for r in results[name]]}", flush=True)
    base = {tag: [r[tag] for r in results["velocity"]] for tag in ("ema", "raw")}
    rows = []
    for name, _ in ARMS:
        ema = [r["ema"] for r in results[name]]
        raw = [r["raw"] for r in results[name]]
        ratio_ema = [a / b for a, b in zip(ema, base["ema"], strict=True)]
        ratio_raw = [a / b for a, b in zip(raw, base["raw"], strict=True)]
        rows.append([name, fmt(ema, 3), fmt(ratio_ema), fmt(raw, 3), fmt(ratio_raw)])
    headers = ["arm", "W2 (EMA)", "/ velocity", "W2 (raw)", "/ velocity"]
    print(f"\ncheckerboard, {args.steps} steps, midpoint NFE 8, seeds {args.seeds}")
    print(machine_info())
    print(table(headers, rows))
    write_json(
        str(RESULTS_DIR / "prediction.json"),
        {"steps": args.steps, "seeds": args.seeds, "results": results, "machine": machine_info()},
    )


if __name__ == "__main__":
    main()
