"""``flowmatch classify RUN``: class predictions of a symmetrical flow-matching run.

A run trained with ``objective.kind = "symmetric"`` generates given a class *and* classifies
(Caetano et al. 2026): the held-out split of the run's data starts at ``t = 1`` as ``[x,
noise]`` and the joint field is integrated back to ``t = 0``, where the label block is read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any, *, seed: Any, positive: Any) -> None:
    """Add the ``classify`` command to ``sub`` (``seed``/``positive``: the CLI's arg types)."""
    c = sub.add_parser(
        "classify", help="accuracy of a symmetric run's classification on its held-out split"
    )
    c.add_argument("run_dir")
    c.add_argument("--nfe", type=positive, default=10, help="field evaluations (default 10)")
    c.add_argument("--solver", default="euler", help="a fixed-step solver (default euler)")
    c.add_argument("--seed", type=seed, default=0, help="seed of the label block's noise")
    c.add_argument("--no-ema", action="store_true", help="use raw instead of EMA weights")
    c.add_argument("--out", default=None, help="also write the result as JSON to this file")


def cmd_classify(args: argparse.Namespace) -> int:
    """``flowmatch classify``."""
    from flowmatch import api
    from flowmatch.api.symmetric import classify_dataset
    from flowmatch.cli.main import _refuse_run_files
    from flowmatch.utils.io import atomic_write_text

    out = Path(args.out) if args.out else None
    if out is not None:
        if out.suffix != ".json" or out.is_dir():
            raise ValueError(f"--out must be a .json file name, got {str(out)!r}")
        _refuse_run_files(out, args.run_dir)
    run = api.load_run(args.run_dir, use_ema=False if args.no_ema else None)
    _, test_ds = api.load_run_data(run.config, run.info, args.run_dir)
    res = classify_dataset(run, test_ds, solver=args.solver, nfe=args.nfe, seed=args.seed)
    print(
        f"{res['num_samples']} held-out samples, {args.solver} NFE {args.nfe} backwards: "
        f"accuracy {res['accuracy']:.4f}"
    )
    print("per class: " + ", ".join(f"{k}: {a:.3f}" for k, a in enumerate(res["per_class"])))
    if out is not None:
        if out.parent != Path(""):
            out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(res, indent=2))
        print(f"wrote {out}", file=sys.stderr)
    return 0
