"""Shared pieces of the training-method benchmarks (issue 9): cached runs and their scores.

Every run is trained end to end through ``flowmatch.api`` (what ``flowmatch train`` does),
cached under ``bench/results/cache/`` (git-ignored) keyed by its resolved configuration (every
option, defaults included, so a change of the library's defaults trains anew), and reused by
every script that asks for the same settings, so the tables share baselines and a rerun costs
only the evaluation. Time per step is the median of ``1 / steps_per_sec`` over the run's logging
windows (the trainer's own clock, excluding evaluation and checkpoints).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from typing import Any

import torch
from torch import Tensor

from common import RESULTS_DIR
from flowmatch import api
from flowmatch.config import to_dict
from flowmatch.metrics.digits_features import digits_frechet_distance
from flowmatch.metrics.straightness import straightness
from flowmatch.metrics.wasserstein import wasserstein2

CACHE = RESULTS_DIR / "cache"
#: One data split for every run (the API's fixed data seed) and the evaluation sizes.
EVAL_SAMPLES_2D, EVAL_SAMPLES_DIGITS = 2000, 297


def run_key(config: dict[str, Any]) -> str:
    """A short hash of the run's resolved configuration (so a change of defaults retrains)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_run(
    tag: str, data: str, overrides: list[str], *, steps: int, seed: int, log: Any = print
) -> tuple[api.Run, dict[str, Any]]:
    """Train (or load from the cache) one run; returns the run and ``{wall_s, sec_per_step}``."""
    base = [f"train.seed={seed}", "train.checkpoint_every=0", f"train.log_every={min(100, steps)}"]
    base += ["sample.num_samples=16"]
    full = base + list(overrides)
    cfg, train, test = api.resolve_config(data=data, steps=steps, overrides=full)
    out = CACHE / f"{tag}_seed{seed}_{run_key(to_dict(cfg))}"
    done = out / "bench.json"
    if done.is_file():
        return api.load_run(out), json.loads(done.read_text())
    t0 = time.perf_counter()
    api.train_run(cfg, train, out_dir=out, overwrite=out.exists())  # an interrupted run
    wall = time.perf_counter() - t0
    rates = [
        json.loads(line).get("steps_per_sec")
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    rates = [r for r in rates if r]
    info = {
        "tag": tag,
        "data": data,
        "overrides": full,
        "steps": steps,
        "seed": seed,
        "wall_s": wall,
        "sec_per_step": statistics.median(1.0 / r for r in rates) if rates else math.nan,
    }
    done.write_text(json.dumps(info, indent=2))
    log(f"trained {tag} seed {seed} ({steps} steps) in {wall:.0f} s")
    return api.load_run(out), info


def test_data(data: str) -> Tensor:
    """The held-out split in data space (the API's fixed split)."""
    _, _, test = api.resolve_config(data=data)
    std = test.standardizer
    return test.x if std is None else std.inverse(test.x)


def quality(run: api.Run, reference: Tensor, *, solver: str, nfe: int, seed: int = 0) -> float:
    """W2 (2-D) or FD in the digits classifier's features (images) of ``len(reference)`` samples."""
    n = len(reference)
    res = api.generate(run, n, solver=solver, nfe=nfe, seed=seed)
    return score(res.samples, reference)


def score(samples: Tensor, reference: Tensor) -> float:
    """The task's distance between two sample sets (W2 for 2-D points, FD for digits)."""
    if samples.ndim == 2 and samples.shape[1] == 2:
        return wasserstein2(samples, reference, max_samples=len(reference))
    return digits_frechet_distance(samples, reference)


def run_straightness(run: api.Run, *, n: int = 500, seed: int = 1) -> float:
    """Straightness of the learned flow (RK4, 100 steps; 0 = straight lines)."""
    with torch.no_grad():
        return straightness(run.field, run.noise(n, seed=seed), num_steps=100)


def dopri5_nfe(run: api.Run, *, n: int = 500, seed: int = 2) -> int:
    """Evaluations dopri5 (atol = rtol = 1e-5) spends on ``n`` samples."""
    return api.generate(run, n, solver="dopri5", seed=seed).nfe
