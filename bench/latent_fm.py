"""Latent vs pixel flow matching on digits: FD of decoded samples, the latent floor, dopri5 NFE.

Digits (64-D), unconditional, MLP 256 x 3, the image preset otherwise (2000 steps, batch
128, EMA), 3 seeds; arms: ``pixel`` (the ``cfm`` digits arm of ``training_methods.py``),
``pca16`` (``data.latent = pca:16``, exact PCA fitted on the training split) and ``ae16``
(``data.latent = <a 16-d MLP autoencoder trained by flowmatch autoencoder train``, 3000
steps, seed 0, shared by the 3 flow seeds). The same steps and network for every arm, so the
training wall time per arm is nearly the same (measured and reported: the per-step cost is the
MLP's, the input width changes little); the autoencoder's own training time is reported
separately. Metrics on 297 decoded samples vs the 297 held-out digits: FD in the digits
classifier's features at Euler NFE 4 and 16 and with dopri5 (atol = rtol = 1e-5), the NFE
dopri5 spends, and the floors: the train/test FD (real data) and the latent floor (the same
training subset through ``decode(encode(.))``).

    .venv/bin/python bench/latent_fm.py --json bench/results/latent_fm.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

from common import add_common_args, fmt, machine_info, setup, table, write_json
from flowmatch import api
from methods_common import CACHE, cached_run, dopri5_nfe, quality, test_data
from training_methods import TASKS, autoencoder_dir

SEEDS = (0, 1, 2)


def cell(values: list[float]) -> str:
    """``mean ± std``, or ``-`` where an arm lacks the quantity (the pixel arm's latent floor)."""
    return "-" if any(math.isnan(v) for v in values) else fmt(values, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    setup()
    steps = 30 if args.quick else args.steps
    seeds = [0] if args.quick else list(SEEDS)
    print(f"Machine: {machine_info()}")
    t_ae = time.perf_counter()
    ae = autoencoder_dir(60 if args.quick else 3000)
    ae_info = json.loads((CACHE / ae / "latent.json").read_text())
    ae_wall = time.perf_counter() - t_ae
    base = TASKS["digits"][1]
    arms = {"pixel": [], "pca16": ["data.latent=pca:16"], "ae16": [f"data.latent={ae}"]}
    ref = test_data("digits")
    _, train, test = api.resolve_config(data="digits")
    t0 = time.perf_counter()
    res: dict[str, list[dict[str, Any]]] = {}
    for arm, over in arms.items():
        for seed in seeds:
            tag = "digits_cfm" if arm == "pixel" else f"digits_latent_{arm}"
            run, info = cached_run(tag, "digits", [*base, *over], steps=steps, seed=seed)
            report = api.evaluate(
                run, test, nfe=[4, 16], solvers=["euler"], train_ds=train, num_samples=len(test)
            )
            r = {
                "fd_euler4": quality(run, ref, solver="euler", nfe=4, seed=100 + seed),
                "fd_euler16": quality(run, ref, solver="euler", nfe=16, seed=100 + seed),
                "fd_dopri5": report["rows"][-1]["fd_digits"],
                "dopri5_nfe": dopri5_nfe(run),
                "floor": report["floor"]["fd_digits"],
                "latent_floor": report.get("latent_floor", {}).get("fd_digits", float("nan")),
                "train_wall_s": info["wall_s"],
                "ms_per_step": 1e3 * info["sec_per_step"],
            }
            res.setdefault(arm, []).append(r)
            print(f"{arm} seed {seed}: {r}", flush=True)
    total = time.perf_counter() - t0
    keys = ("fd_euler4", "fd_euler16", "fd_dopri5", "dopri5_nfe", "latent_floor", "ms_per_step")
    rows = [[arm, *(cell([r[k] for r in runs]) for k in keys)] for arm, runs in res.items()]
    floor = fmt([r["floor"] for r in res["pixel"]], 2)
    print()
    print(
        table(
            [
                "arm",
                "FD Euler 4",
                "FD Euler 16",
                "FD dopri5",
                "dopri5 NFE",
                "latent floor",
                "ms/step",
            ],
            rows,
        )
    )
    print(
        f"\ntrain/test floor {floor}; autoencoder: recon MSE test {ae_info.get('recon_mse_test'):.4f}, trained in {ae_wall:.0f} s (0 if cached)"
    )
    print(f"Total wall time {total:.0f} s ({total / 60:.1f} min), {steps} steps per run.")
    write_json(
        args.json,
        {
            "args": vars(args),
            "steps": steps,
            "results": res,
            "autoencoder": ae_info,
            "total_s": total,
        },
    )


if __name__ == "__main__":
    main()
