"""Merge the ``bench/results/fewstep_<data>*.json`` files of ``fewstep.py`` into one table.

.venv/bin/python bench/fewstep_table.py --data checkerboard
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from common import fmt, table

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = [
    ("NFE 1", ("euler_1", "flow_map_1")),
    ("NFE 2", ("euler_2", "flow_map_2")),
    ("NFE 2 (re-noised)", ("flow_map_renoise_2",)),
    ("Euler NFE 100", ("euler_100",)),
]


def _cell(recs: list[dict], keys: tuple[str, ...]) -> str:
    for key in keys:
        vals = [r[key] for r in recs if key in r and math.isfinite(r[key])]
        if vals:
            return fmt(vals, 3)
    return ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="checkerboard")
    args = p.parse_args()
    merged: dict[str, dict] = {}
    for f in sorted(RESULTS.glob(f"fewstep_{args.data}_*.json")):
        if f.stem.endswith("_quick"):
            continue
        for method, per in json.loads(f.read_text())["results"].items():
            merged.setdefault(method, {}).update(per)
    rows = []
    for method, per in merged.items():
        recs = list(per.values())
        steps = {r.get("steps", 5000) for r in recs}
        name = method + (f" ({steps.pop()} steps)" if steps != {5000} else "")
        cells = [name, *(_cell(recs, keys) for _, keys in COLUMNS)]
        cost = [r["s_per_step"] * 1000 for r in recs if "s_per_step" in r]
        total = [r["train_s"] for r in recs if "train_s" in r]
        div = sum(1 for r in recs if r.get("diverged"))
        cells += [
            fmt(cost, 1) if cost else "",
            fmt(total, 0) if total else "",
            f"{div}/{len(recs)}",
        ]
        rows.append(cells)
    heads = ["method", *(f"W2 {c}" for c, _ in COLUMNS), "ms/step", "train s", "diverged"]
    print(table(heads, rows))


if __name__ == "__main__":
    main()
