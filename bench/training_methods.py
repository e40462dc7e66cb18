"""Training methods from the literature against plain CFM, same network, data and budget.

Tasks (all unconditional): ``checkerboard`` (N(0, I) -> checkerboard), ``8gaussians->moons``
(the 8-Gaussians toy as the source: ``source.kind = "dataset"``), ``digits`` (8x8, 64-D, MLP
256 x 3 on the flattened pixels). Every arm is one ``flowmatch train`` run with the same
steps, batch, optimiser and EMA (TrainConfig defaults; digits: the image preset with the MLP),
3 training seeds, trained once and cached (``methods_common.cached_run``).

Arms: ``cfm`` (independent coupling), ``ot_cfm`` (exact minibatch OT, Tong et al. 2024),
``wcfm`` (Gibbs pair weights, epsilon = 0.5 x median pair cost), ``pafm`` (16 candidate
endpoints), ``vecor`` (bounded contrastive repulsion, lambda = 0.05), ``norm_aligned``
(source N(0, s^2 I), s = E|x1| / E|eps|; not for the 8-Gaussians source), ``blockwise``
(4 blocks of 256 x 2, about 40 % of the baseline's FLOPs per evaluation), and on digits
``repa`` / ``repa_cka`` (alignment of the MLP's second hidden layer to the codes of a
library-trained 16-d autoencoder, cosine / CKA, weight 0.5).

Metrics: W2 (2-D, 2000 samples vs 2000 held-out, exact) or FD in the digits classifier's
features (297 samples vs the 297 held-out digits), Euler with NFE 2, 4, 8, 32; straightness
(RK4, 100 steps, 500 samples); training time per step (median over logging windows).

    .venv/bin/python bench/training_methods.py --json bench/results/training_methods.json
    .venv/bin/python bench/training_methods.py --quick      # smoke run
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from common import add_common_args, fmt, machine_info, setup, table, write_json
from methods_common import CACHE, cached_run, quality, run_straightness, test_data

SEEDS = (0, 1, 2)
NFES = (2, 4, 8, 32)
TASKS: dict[str, tuple[str, list[str]]] = {
    "checkerboard": ("checkerboard", []),
    "8gaussians->moons": ("moons", ["source.kind=dataset", "source.toy=8gaussians"]),
    "digits": (
        "digits",
        ["model.kind=mlp", "model.hidden=256", "model.depth=3", "model.conditional=no"],
    ),
}
METHODS: dict[str, list[str]] = {
    "cfm": [],
    "ot_cfm": ["coupling.kind=exact_ot"],
    "wcfm": ["objective.kind=wcfm", "objective.epsilon=0.5"],
    "pafm": ["objective.kind=pafm", "objective.num_candidates=16"],
    "vecor": ["objective.kind=vecor", "objective.weight=0.05"],
    "norm_aligned": ["source.kind=norm_aligned"],
    "blockwise": ["model.kind=blockwise", "model.blocks=4", "model.hidden=256", "model.depth=2"],
    "repa": ["objective.kind=repa", "objective.layer=net.3", "objective.feature_dim=16"],
    "repa_cka": [
        "objective.kind=repa",
        "objective.layer=net.3",
        "objective.feature_dim=16",
        "objective.measure=cka",
    ],
}
ONLY = {"repa": {"digits"}, "repa_cka": {"digits"}}
SKIP = {"norm_aligned": {"8gaussians->moons"}}


def autoencoder_dir(steps: int) -> str:
    """A 16-d autoencoder on digits (the REPA teacher), trained once and cached."""
    from flowmatch import api
    from flowmatch.api.latent import AutoencoderConfig, train_autoencoder

    out = CACHE / f"ae_digits_16_s{steps}"
    if not (out / "latent.json").is_file():
        _, train, test = api.resolve_config(data="digits")
        train_autoencoder(train, out, AutoencoderConfig(latent_dim=16, steps=steps), test_ds=test)
    return str(out)


def overrides_for(task: str, method: str, ae: str | None) -> list[str]:
    """The run's overrides: the task's, then the method's (blockwise replaces the MLP)."""
    base = list(TASKS[task][1])
    if method == "blockwise":
        base = [o for o in base if not o.startswith(("model.kind", "model.hidden", "model.depth"))]
    extra = list(METHODS[method])
    if method.startswith("repa"):
        extra.append(f"objective.teacher=autoencoder:{ae}")
    return base + extra


def evaluate_arm(task: str, method: str, seed: int, steps: int, ae: str | None) -> dict[str, Any]:
    """Train (or load) one arm and score it."""
    data = TASKS[task][0]
    run, info = cached_run(
        f"{task.replace('>', '').replace('-', '_')}_{method}",
        data,
        overrides_for(task, method, ae),
        steps=steps,
        seed=seed,
    )
    ref = test_data(data)
    if data != "digits":
        ref = ref[:2000]
    scores = {nfe: quality(run, ref, solver="euler", nfe=nfe, seed=100 + seed) for nfe in NFES}
    return {
        "quality": scores,
        "straightness": run_straightness(run),
        "sec_per_step": info["sec_per_step"],
        "params": sum(p.numel() for p in run.model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    args = parser.parse_args()
    setup()
    steps = 30 if args.quick else args.steps
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    tasks, methods = args.tasks.split(","), args.methods.split(",")
    print(f"Machine: {machine_info()}")
    t_start = time.perf_counter()
    ae = autoencoder_dir(60 if args.quick else 3000) if "digits" in tasks else None
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for task in tasks:
        for method in methods:
            if task in SKIP.get(method, set()) or (method in ONLY and task not in ONLY[method]):
                continue
            for seed in seeds:
                res = evaluate_arm(task, method, seed, steps, ae)
                results.setdefault(task, {}).setdefault(method, []).append(res)
                print(f"{task} {method} seed {seed}: {res['quality']}", flush=True)
    total = time.perf_counter() - t_start
    print()
    print(summary(results))
    print(f"\nTotal wall time {total:.0f} s ({total / 60:.1f} min), {steps} steps per run.")
    write_json(
        args.json, {"args": vars(args), "steps": steps, "results": results, "total_s": total}
    )


def summary(results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """One table: per task and method, quality at each NFE, straightness, ms per step."""
    headers = ["task", "method", *[f"NFE {k}" for k in NFES], "straightness", "ms/step", "params"]
    rows = []
    for task, by_method in results.items():
        for method, runs in by_method.items():
            row: list[Any] = [task, method]
            row += [fmt([r["quality"][k] for r in runs], 3) for k in NFES]
            row.append(fmt([r["straightness"] for r in runs], 3))
            row.append(fmt([1e3 * r["sec_per_step"] for r in runs], 1))
            row.append(runs[0]["params"])
            rows.append(row)
    return table(headers, rows)


if __name__ == "__main__":
    main()
