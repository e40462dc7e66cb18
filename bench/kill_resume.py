"""Crash recovery: kill -9 a training run N times, resume it each time, compare with an unbroken run.

Setting: ``flowmatch train`` on the 2-D checkerboard (MLP hidden 16, depth 2, batch 16,
``log_every=2``, ``checkpoint_every=4``, ``keep_checkpoints=2``, ``seed=3``), ONE torch thread,
CPU. Each attempt is a new process; it is killed with SIGKILL (no cleanup of any kind) either
at an injected point chosen in turn from: half-way through a checkpoint file, a complete
temporary checkpoint before its rename, half-way through ``checkpoints/latest``, in the middle
of rotating an old checkpoint out, half-way through a ``metrics.jsonl`` line, half-way through
``config.json`` -- or by this script at a random moment 0-0.2 s into training. The next
attempt is ``flowmatch train --resume``. After N kills the last attempt runs to the end.

Checks: the run finished; every checkpoint verifies (sizes, sha256, state checksum, step,
run id); no temporary or lock file is left; final weights, EMA weights and the logged losses
equal those of the same run never interrupted, bit for bit (CPU). The harness is
``tests/faults.py``, shared with ``tests/train/test_kill_resume.py`` (2 kills in the default
test run, 20 in ``pytest -m slow``).

    .venv/bin/python bench/kill_resume.py --kills 20 --seeds 0 1 2   # ~4 min per seed
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from faults import kill_resume, reference_run, verify  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "kill_resume.json"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference"
        reference_run(reference, args.steps)
        for seed in args.seeds:
            run = Path(tmp) / f"run{seed}"
            t0 = time.perf_counter()
            facts = kill_resume(run, args.kills, steps=args.steps, seed=seed)
            checks = verify(run, reference, args.steps)
            rows.append({"seed": seed, **facts, **checks, "seconds": time.perf_counter() - t0})
    print(f"{'seed':>4} {'kills':>5} {'resumes':>7} {'ckpts ok':>8} {'weights':>9} {'ema':>5} "
          f"{'losses':>6}  kills by point / left behind")  # fmt: skip
    for r in rows:
        print(
            f"{r['seed']:>4} {r['kills']:>5} {r['resumes']:>7} {r['checkpoints_verified']:>8} "
            f"{'identical' if r['identical_weights'] else 'DIFFER':>9} "
            f"{'same' if r['identical_ema'] else 'DIFF':>5} "
            f"{'same' if r['identical_losses'] else 'DIFF':>6}  "
            f"{r['kills_by_point']} / {r['left_behind_by_kills']}"
        )
    Path(args.out).write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
