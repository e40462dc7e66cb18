"""Reflective Flow Sampling vs classifier-free guidance on conditional digits at equal NFE.

NFE counts network evaluations per sample (a two-branch CFG call counts 2).

    .venv/bin/python bench/rfs.py --json bench/results/rfs.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, fmt, machine_info, setup, table, write_json  # noqa: E402
from flowmatch import api  # noqa: E402
from flowmatch.metrics.digits_features import digits_classifier_accuracy  # noqa: E402
from suite_common import SEEDS, score, test_data, trained_run  # noqa: E402


def arms(budget):
    """(label, generate kwargs) pairs spending ``budget`` network passes per sample."""
    k_cfg = budget // 2
    out = [
        (f"CFG s={s}, Euler {k_cfg} steps", {"solver": "euler", "nfe": k_cfg, "guidance": s})
        for s in (1.5, 2.0, 3.0)
    ]
    out.insert(0, (f"no guidance, Euler {budget} steps", {"solver": "euler", "nfe": budget}))
    for beta_hi in (2.0, 3.0):
        # K + 3 m = budget with m reflected steps (hi: 2 passes, lo = unconditional: 1)
        k = budget - 3 * (budget // 5)
        m = (budget - k) // 3
        opts = {"steps": k, "beta_hi": beta_hi, "beta_lo": 0.0, "until": (m - 0.5) / k}
        out.append(
            (
                f"RFS beta_hi={beta_hi}, {k} steps, {m} reflected",
                {"solver": "reflective", "solver_options": opts},
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_args(parser)
    args = parser.parse_args()
    setup()
    print(f"Machine: {machine_info()}\n")
    t0 = time.perf_counter()
    run, _ = trained_run("digits")
    ref = test_data(run)
    n = 300 if args.quick else 1000
    rows, raw = [], []
    for budget in (20,) if args.quick else (20, 40):
        for label, kw in arms(budget):
            fd, acc, gated, nfe = [], [], [], set()
            for s in SEEDS:
                res = api.generate(run, n, seed=s, **kw)
                fd.append(score(run, res.samples, ref))
                acc.append(digits_classifier_accuracy(res.samples, res.labels))
                # counted only on the real-digit manifold (the form flowmatch eval reports)
                gated.append(digits_classifier_accuracy(res.samples, res.labels, reference=ref))
                nfe.add(res.nfe * (2 if kw.get("guidance", 1.0) != 1.0 else 1))
            rows.append([budget, label, sorted(nfe)[0], fmt(acc, 3), fmt(gated, 3), fmt(fd, 2)])
            raw.append(
                {
                    "budget": budget,
                    "arm": label,
                    "class_acc": acc,
                    "class_acc_gated": gated,
                    "fd": fd,
                    "nfe": sorted(nfe),
                }
            )
    print(
        f"### conditional digits, {n} samples (labels cycled), seeds {SEEDS}\n\n"
        + table(
            ["budget", "sampler", "network passes", "class acc", "class acc on manifold", "FD"],
            rows,
        )
        + "\n"
    )
    print(f"total wall {time.perf_counter() - t0:.0f} s")
    write_json(args.json, {"rows": raw})


if __name__ == "__main__":
    main()
