"""Merge the ``bench/results/fewstep_<data>*.json`` files of ``fewstep.py`` into one table.

W2 (and, on digits, FD in the digit classifier's features) per method at NFE 1 and 2, the
teacher's at 100 Euler steps, and the per-seed ratio of each method's NFE-1 figure (NFE 2 for
BOSS) to its own seed's teacher at NFE 100 (FD on digits, W2 otherwise).

.venv/bin/python bench/fewstep_table.py --data checkerboard
.venv/bin/python bench/fewstep_table.py --data digits
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from common import fmt, table

RESULTS = Path(__file__).resolve().parent / "results"
#: Row order: the teacher, distilled students, then methods trained from data.
ORDER = [
    "teacher", "reflow_1step", "reflow", "flowmap", "scm", "scm_ladd", "boss", "freeflow",
    "splitmeanflow", "meanflow", "meanflow_imagenet", "flowmap_esd", "flowmap_psd",
    "flowmap_lsd", "flowmap_lsd_ema_warmup", "flowmap_lsd_current", "flowmap_lsd_current_lr1e-4",
]  # fmt: skip
COLUMNS = [
    ("NFE 1", ("euler_1", "flow_map_1")),
    ("NFE 2", ("euler_2", "flow_map_2")),
    ("NFE 2 (re-noised)", ("flow_map_renoise_2",)),
    ("Euler NFE 100", ("euler_100",)),
]


def _values(recs: list[dict], keys: tuple[str, ...]) -> list[float]:
    for key in keys:
        vals = [r[key] for r in recs if key in r and math.isfinite(r[key])]
        if vals:
            return vals
    return []


def _cell(recs: list[dict], keys: tuple[str, ...]) -> str:
    vals = _values(recs, keys)
    return fmt(vals, 3) if vals else ""


def _ratio(per: dict, teacher: dict, metric: str) -> str:
    """Mean ± std over seeds of (method's NFE-1 figure) / (same seed's teacher at NFE 100)."""
    keys = [metric + k for k in ("euler_1", "flow_map_1", "euler_2")]
    out = []
    for seed, rec in per.items():
        base = teacher.get(seed, {}).get(metric + "euler_100")
        val = next((rec[k] for k in keys if k in rec and math.isfinite(rec[k])), None)
        if base and val is not None:
            out.append(val / base)
    if not out:
        return ""
    sd = statistics.stdev(out) if len(out) > 1 else 0.0
    return f"{statistics.fmean(out):.3f} ± {sd:.3f}x"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="checkerboard")
    args = p.parse_args()
    merged: dict[str, dict] = {}
    floor: dict[str, float] = {}
    files = [RESULTS / f"fewstep_{args.data}.json", *RESULTS.glob(f"fewstep_{args.data}_*.json")]
    for f in sorted(x for x in files if x.is_file()):
        if f.stem.endswith("_quick"):
            continue
        res = json.loads(f.read_text())
        floor.update(res.get("floor") or {})
        for method, per in res["results"].items():
            merged.setdefault(method, {}).update(per)
    metrics = [("W2", "")] + ([("FD", "fd:")] if args.data == "digits" else [])
    main_metric = metrics[-1][1]
    rows = []
    rank = {m: i for i, m in enumerate(ORDER)}
    for method, per in sorted(merged.items(), key=lambda kv: rank.get(kv[0], len(ORDER))):
        recs = list(per.values())
        steps = {r.get("steps", 5000) for r in recs}
        name = method + (f" ({steps.pop()} steps)" if steps != {5000} else "")
        cells = [name]
        for _, prefix in metrics:
            cells += [_cell(recs, tuple(prefix + k for k in keys)) for _, keys in COLUMNS]
        cells.append(
            _ratio(per, merged.get("teacher", {}), main_metric) if method != "teacher" else ""
        )
        cost = [r["s_per_step"] * 1000 for r in recs if "s_per_step" in r]
        total = [r["train_s"] for r in recs if "train_s" in r]
        div = sum(1 for r in recs if r.get("diverged"))
        cells += [
            fmt(cost, 1) if cost else "",
            fmt(total, 0) if total else "",
            f"{div}/{len(recs)}",
        ]
        rows.append(cells)
    heads = ["method"]
    for label, _ in metrics:
        heads += [f"{label} {c}" for c, _ in COLUMNS]
    vs = metrics[-1][0]
    heads += [f"{vs} / teacher NFE 100", "ms/step", "train s", "diverged"]
    print(table(heads, rows))
    if floor:
        print(
            "\nfloor (training vs held-out data): "
            + ", ".join(f"{k} {v:.3f}" for k, v in floor.items())
        )


if __name__ == "__main__":
    main()
