"""Symmetrical flow matching on digits: one model generates given the class and classifies.

Caetano et al. (2026), SymmFlow. Digits, MLP 256 x 3, the image preset otherwise (2000 steps,
batch 128, EMA), 3 seeds. Arms: ``symmetric`` (one field on ``[image 64, label 10]``, the label
block running from its code to noise while the image runs from noise to data) and
``conditional FM`` (the same MLP conditioned on the label through its embedding, condition
dropout 0.1, sampled without guidance). Generation (297 samples, classes cycling): FD in the
digits classifier's features vs the 297 held-out digits and the classifier's agreement with
the asked class (``class_acc``), Euler NFE 8 and 32. Classification (symmetric only): start
at ``[x, eps]`` at t = 1 and integrate backwards with 1 and 10 Euler steps, argmax of the
label block, accuracy on the 297 held-out digits; reference: the library's digits classifier.

    .venv/bin/python bench/symmetric_digits.py --json bench/results/symmetric_digits.json
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from common import add_common_args, fmt, machine_info, setup, table, write_json
from flowmatch import api
from flowmatch.api.symmetric import classify
from flowmatch.metrics.digits_features import load_digits_classifier
from methods_common import cached_run

SEEDS = (0, 1, 2)
MLP = ["model.kind=mlp", "model.hidden=256", "model.depth=3"]
ARMS = {
    "symmetric": [*MLP, "objective.kind=symmetric", "source.kind=symmetric_labels"],
    "conditional FM": MLP,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    setup()
    steps = 30 if args.quick else args.steps
    seeds = [0] if args.quick else list(SEEDS)
    print(f"Machine: {machine_info()}")
    _, train, test = api.resolve_config(data="digits")
    t0 = time.perf_counter()
    res: dict[str, list[dict[str, Any]]] = {}
    for arm, over in ARMS.items():
        for seed in seeds:
            tag = "digits_symmetric" if arm == "symmetric" else "digits_condfm"
            run, info = cached_run(tag, "digits", over, steps=steps, seed=seed)
            rep = api.evaluate(
                run, test, nfe=[8, 32], solvers=["euler"], reference=None, num_samples=len(test)
            )
            r: dict[str, Any] = {
                f"{k}_nfe{row['nfe']}": row[k]
                for row in rep["rows"]
                for k in ("fd_digits", "class_acc")
            }
            if arm == "symmetric":
                x = run.to_data_space(test.x)
                for nfe in (1, 10):
                    pred, _ = classify(run, x, nfe=nfe, seed=seed)
                    r[f"cls_acc_{nfe}"] = float((pred == test.labels).float().mean())
            res.setdefault(arm, []).append(r)
            print(f"{arm} seed {seed}: {r}", flush=True)
    total = time.perf_counter() - t0
    keys = [
        "fd_digits_nfe8",
        "class_acc_nfe8",
        "fd_digits_nfe32",
        "class_acc_nfe32",
        "cls_acc_1",
        "cls_acc_10",
    ]
    rows = [
        [arm, *(fmt([r[k] for r in runs], 3) if k in runs[0] else "-" for k in keys)]
        for arm, runs in res.items()
    ]
    clf = load_digits_classifier()
    print()
    print(
        table(
            [
                "arm",
                "FD Euler 8",
                "class acc 8",
                "FD Euler 32",
                "class acc 32",
                "classify 1 step",
                "classify 10 steps",
            ],
            rows,
        )
    )
    print(f"\nreference classifier test accuracy: {clf.test_accuracy:.3f}")
    print(f"Total wall time {total:.0f} s ({total / 60:.1f} min), {steps} steps per run.")
    write_json(
        args.json,
        {
            "args": vars(args),
            "steps": steps,
            "results": res,
            "classifier_acc": clf.test_accuracy,
            "total_s": total,
        },
    )


if __name__ == "__main__":
    main()
