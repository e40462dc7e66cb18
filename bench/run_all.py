"""Run every benchmark script in bench/ in sequence and keep each one's markdown output.

Runs ``sampling_overhead.py``, ``dopri5_nfe.py``, ``quality.py``, ``train_overhead.py`` and
``ot_throughput.py`` (those present), then any other ``bench/*.py`` script, each in its own
process with the same Python. Each script's output goes to the terminal and, in a full run,
to ``bench/results/<script>.md`` with the command and date on top. ``--quick`` is passed to the
scripts that accept it; the two scripts without a quick mode get short settings from
``QUICK_ARGS``; any other script without one is skipped in a quick run (with a note). Exits
non-zero if any script failed.

    .venv/bin/python bench/run_all.py            # the full figures (tens of minutes)
    .venv/bin/python bench/run_all.py --quick    # smoke run of every script
    make bench                                   # installs the anchors, then the full run
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

from common import BENCH_DIR, RESULTS_DIR, machine_info, setup

ORDER = (
    "sampling_overhead.py",
    "dopri5_nfe.py",
    "quality.py",
    "train_overhead.py",
    "ot_throughput.py",
)
NOT_BENCHMARKS = {"common.py", "methods_common.py", "run_all.py", "suite_common.py"}
# Short settings for scripts that have no --quick flag (used only when they lack one).
QUICK_ARGS = {
    "train_overhead.py": ["--blocks", "3", "--block", "10"],
    "ot_throughput.py": ["--steps", "20", "--warmup", "5", "--repeats", "3"],
}


def scripts() -> list[Path]:
    """The benchmark scripts: the known ones in ``ORDER``, then any others alphabetically."""
    found = {p.name: p for p in BENCH_DIR.glob("*.py") if p.name not in NOT_BENCHMARKS}
    known = [found.pop(name) for name in ORDER if name in found]
    return known + [found[name] for name in sorted(found)]


def supports_quick(path: Path) -> bool:
    """Whether the script's ``--help`` lists a ``--quick`` flag."""
    out = subprocess.run(
        [sys.executable, str(path), "--help"], cwd=BENCH_DIR.parent, capture_output=True, text=True
    )
    return out.returncode == 0 and "--quick" in out.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: --quick to each script")
    parser.add_argument("--only", default="", help="comma-separated script names to run")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/*.md")
    args = parser.parse_args()
    setup()
    todo = scripts()
    if args.only:
        wanted = {n if n.endswith(".py") else f"{n}.py" for n in args.only.split(",")}
        unknown = wanted - {p.name for p in todo}
        if unknown:
            parser.error(f"unknown script(s) {sorted(unknown)}; have {[p.name for p in todo]}")
        todo = [p for p in todo if p.name in wanted]
    print(f"Machine: {machine_info()}\n")
    status: list[tuple[str, str, float]] = []
    for path in todo:
        cmd = [sys.executable, str(path)]
        if args.quick:
            if supports_quick(path):
                cmd.append("--quick")
            elif path.name in QUICK_ARGS:
                cmd += QUICK_ARGS[path.name]
            else:
                status.append((path.name, "skipped (no --quick mode)", 0.0))
                continue
        shown = " ".join([".venv/bin/python", f"bench/{path.name}", *cmd[2:]])
        print(f"## {path.name}\n\n`{shown}`\n", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=BENCH_DIR.parent, capture_output=True, text=True)
        secs = time.perf_counter() - t0
        print(proc.stdout, flush=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr, flush=True)
        status.append(
            (path.name, "ok" if proc.returncode == 0 else f"FAILED ({proc.returncode})", secs)
        )
        if not (args.no_save or args.quick) and proc.returncode == 0:
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            header = (
                f"# {path.name}\n\nCommand: `{shown}`\n\nDate: "
                f"{dt.datetime.now().isoformat(timespec='seconds')}\n\n"
            )
            (RESULTS_DIR / f"{path.stem}.md").write_text(header + proc.stdout)
    print("## Summary\n\n| script | status | wall s |\n|---|---|---|")
    for name, state, secs in status:
        print(f"| {name} | {state} | {secs:.0f} |")
    return 0 if all(s in ("ok", "skipped (no --quick mode)") for _, s, _ in status) else 1


if __name__ == "__main__":
    sys.exit(main())
