"""Directional source pruning (SourceFM) on digits: FD at Euler NFE 5, 10, 20 with and without.

.venv/bin/python bench/pruning.py --json bench/results/pruning.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, fmt, machine_info, setup, table, write_json  # noqa: E402
from flowmatch import api  # noqa: E402
from flowmatch.metrics.digits_features import digits_classifier_accuracy  # noqa: E402
from suite_common import SEEDS, score, test_data, trained_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_args(parser)
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--tau-scale", type=float, default=2.5, help="tau = c / sqrt(D)")
    args = parser.parse_args()
    setup()
    print(f"Machine: {machine_info()}\n")
    t0 = time.perf_counter()
    run, _ = trained_run("digits")
    ref = test_data(run)
    tau = args.tau_scale / math.sqrt(64)
    info = api.fit_pruning(run, threshold=args.threshold, tau=tau)
    pruned = api.pruned_run(run)
    cand = torch.randn(100_000, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    accept = float(pruned.source.accepts(cand).double().mean())
    n = 300 if args.quick else 1000
    rows, raw = [], []
    for nfe in (5, 10, 20):
        out = {}
        for label, r in (("Gaussian", run), ("pruned", pruned)):
            fd, acc = [], []
            for s in SEEDS:
                res = api.generate(r, n, solver="euler", nfe=nfe, seed=s)
                fd.append(score(run, res.samples, ref))
                # counted only on the real-digit manifold (the form flowmatch eval reports)
                acc.append(digits_classifier_accuracy(res.samples, res.labels, reference=ref))
            out[label] = (fd, acc)
            raw.append({"nfe": nfe, "source": label, "fd": fd, "class_acc": acc})
        rows.append(
            [
                nfe,
                fmt(out["Gaussian"][0], 2),
                fmt(out["pruned"][0], 2),
                fmt(out["Gaussian"][1], 3),
                fmt(out["pruned"][1], 3),
            ]
        )
    print(f"### digits run (conditional MLP, labels cycled), Euler, {n} samples, seeds {SEEDS}\n")
    print(
        f"{len(info['axes'])} of {info['num_candidates']} PCA axes data-sparse (max cos <= "
        f"{args.threshold}); tau = {tau:.3f}; acceptance rate of N(0, I) draws {accept:.3f}\n"
    )
    print(
        table(["NFE", "FD Gaussian", "FD pruned", "gated acc Gaussian", "gated acc pruned"], rows)
        + "\n"
    )
    print(f"total wall {time.perf_counter() - t0:.0f} s")
    write_json(args.json, {"rows": raw, "axes": len(info["axes"]), "tau": tau, "accept": accept})


if __name__ == "__main__":
    main()
