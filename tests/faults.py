"""kill -9 a training run again and again, resume it each time, compare with an unbroken run.

Shared by ``tests/train/test_kill_resume.py`` (a short version in the default run, 20 kills
in the slow one) and ``bench/kill_resume.py`` (the figure in docs/training.md).

Each attempt is a fresh process (``_kill_worker.py``) running ``flowmatch train`` (or
``--resume``). It is killed with SIGKILL either by itself at an injected point (half-way
through a checkpoint file, before a checkpoint's rename, half-way through ``latest``, in the
middle of rotating an old checkpoint out, half-way through a ``metrics.jsonl`` line, half-way
through ``config.json``), or by the harness at a random moment of training. After the
planned kills the last attempt runs to the end. The run must then have finished, every
checkpoint must verify (sizes, sha256, step, run id), nothing temporary or locked may be
left, and the final weights, EMA and logged losses must equal those of a run that was never
interrupted, bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

WORKER = Path(__file__).parent / "train" / "_kill_worker.py"
POINTS = ("ckpt_file", "ckpt_rename", "latest", "rotation", "metrics", "config", "random")
ARGS = [
    "--set", "model.hidden=16", "--set", "model.depth=2", "--set", "data.n_train=512",
    "--set", "data.n_test=256", "--set", "train.batch_size=16", "--set", "train.log_every=2",
    "--set", "train.checkpoint_every=4", "--set", "train.keep_checkpoints=2",
    "--set", "sample.num_samples=50", "--set", "train.seed=3",
]  # fmt: skip


def _args(steps: int) -> list[str]:
    return ["--steps", str(steps), *ARGS]


def _attempt(
    run_dir: Path, fault: str, rng: random.Random, cwd: Path, steps: int
) -> tuple[int, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(WORKER), str(run_dir), fault, "--", *_args(steps)]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if fault == "wait":
        assert proc.stdout is not None
        for line in proc.stdout:  # up to "ready": training has started
            if line.strip() == "ready":
                time.sleep(rng.uniform(0.0, 0.2))
                proc.send_signal(signal.SIGKILL)
                break
    out, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _leftovers(run_dir: Path) -> list[str]:
    """What a kill left: temporaries, a torn metrics line, the lock file."""
    seen = []
    for p in run_dir.rglob(".tmp-*"):
        seen.append("tmp_old" if p.name.startswith(".tmp-old-") else "tmp")
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size and not metrics.read_bytes().endswith(b"\n"):
        seen.append("torn_metrics")
    if (run_dir / ".lock").exists():
        seen.append("stale_lock")
    return seen


def reference_run(run_dir: Path, steps: int) -> None:
    """The same run, never interrupted (in this process)."""
    from flowmatch.cli.main import main

    assert main(["train", "--out", str(run_dir), "--quiet", *_args(steps)]) == 0


def kill_resume(
    run_dir: Path, kills: int, *, steps: int, seed: int = 0, points: tuple[str, ...] = POINTS
) -> dict:
    """``kills`` SIGKILLs of a run in ``run_dir``, each followed by a resume; returns facts."""
    rng = random.Random(seed)
    plan = [points[i % len(points)] for i in range(kills)]
    rng.shuffle(plan)
    done_kills, attempts, at_kill = 0, 0, Counter()
    left = Counter()
    for point in plan:
        n = 1 if point == "config" else rng.randint(1, 2)  # config.json: once per attempt
        fault = "wait" if point == "random" else f"{point}:{n}"
        rc, err = _attempt(run_dir, fault, rng, run_dir.parent, steps)
        attempts += 1
        if rc == 0:
            raise AssertionError(f"the run finished before the planned kill {fault}")
        assert rc == -signal.SIGKILL, (fault, rc, err[-3000:])
        done_kills += 1
        at_kill[point] += 1
        left.update(set(_leftovers(run_dir)))
    rc, err = _attempt(run_dir, "none", rng, run_dir.parent, steps)
    attempts += 1
    assert rc == 0, err[-3000:]
    return {
        "kills": done_kills,
        "resumes": attempts - 1,
        "attempts": attempts,
        "kills_by_point": dict(sorted(at_kill.items())),
        "left_behind_by_kills": dict(sorted(left.items())),
    }


def verify(run_dir: Path, reference: Path, steps: int) -> dict:
    """Every checkpoint verifies; weights, EMA and losses equal the reference run's."""
    import torch

    from flowmatch.train import list_checkpoints, load_checkpoint

    info = json.loads((run_dir / "config.json").read_text())
    ckpts = list_checkpoints(run_dir)
    for path in ckpts:
        load_checkpoint(path, run_id=info["run_id"])  # sizes, sha256, checksum, step, run id
    assert not list(run_dir.rglob(".tmp-*")), list(run_dir.rglob(".tmp-*"))
    assert not (run_dir / ".lock").exists()
    assert (run_dir / "samples.png").is_file()
    got, want = load_checkpoint(run_dir), load_checkpoint(reference)
    assert got.step == want.step == steps
    same = all(torch.equal(got.model[k], want.model[k]) for k in want.model)
    same_ema = all(torch.equal(got.ema[k], want.ema[k]) for k in want.ema)

    def losses(d: Path) -> list:
        records = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in records if "loss" in r]

    return {
        "checkpoints_verified": len(ckpts),
        "final_step": got.step,
        "identical_weights": same,
        "identical_ema": same_ema,
        "identical_losses": losses(run_dir) == losses(reference),
    }
