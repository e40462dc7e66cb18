"""Shared pieces of the sampling-suite benchmarks: cached trained runs, metrics, seeds.

Every run is trained once through the flowmatch API into ``bench/results/runs/<name>``
(git-ignored) and reused by every script (pass ``--retrain`` to a script to start over).
Reductions, stated in docs/benchmarks.md: one training seed per run; the three seeds of each
table are sampling seeds (noise, SDE noise, search randomness).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import RESULTS_DIR
from flowmatch import api

RUNS_DIR = RESULTS_DIR / "runs"
SEEDS = (0, 1, 2)

#: name -> (data, steps, --set overrides). Chosen to train in a few minutes on one core.
RUNS: dict[str, tuple[str, int, list[str]]] = {
    "checkerboard": ("checkerboard", 5000, []),
    "moons": ("moons", 5000, []),
    "digits": (
        "digits",
        8000,
        [
            "model.kind=mlp",
            "model.hidden=512",
            "model.depth=3",
            "train.batch_size=256",
            "train.lr=1e-3",
            "train.ema_decay=0.999",
            "train.checkpoint_every=0",
        ],
    ),
    "digits_small": (
        "digits",
        8000,
        [
            "model.kind=mlp",
            "model.hidden=128",
            "model.depth=2",
            "train.batch_size=256",
            "train.lr=1e-3",
            "train.ema_decay=0.999",
            "train.checkpoint_every=0",
        ],
    ),
    "series": (
        str(RESULTS_DIR / "series.npy"),
        6000,
        [
            "model.hidden=256",
            "model.depth=4",
            "data.standardize=global",
            "train.checkpoint_every=0",
        ],
    ),
}


def series_data(n: int = 6000, length: int = 64, seed: int = 0) -> np.ndarray:
    """Sums of three sinusoids with random frequencies, phases and amplitudes, ``(n, length)``.

    ``x_j = sum_c a_c sin(2 pi f_c j / length + phi_c)`` with ``f_c ~ U[1, 6]``,
    ``phi_c ~ U[0, 2 pi)``, ``a_c ~ U[0.3, 1]`` (the "sines" family of time-series benchmarks).
    """
    rng = np.random.default_rng(seed)
    j = np.arange(length)[None, None, :]
    f = rng.uniform(1, 6, (n, 3, 1))
    phi = rng.uniform(0, 2 * np.pi, (n, 3, 1))
    a = rng.uniform(0.3, 1.0, (n, 3, 1))
    return (a * np.sin(2 * np.pi * f * j / length + phi)).sum(1).astype(np.float32)


def trained_run(name: str, *, retrain: bool = False) -> tuple[Any, float]:
    """The cached run ``name`` (trained now if missing) and its training wall time (0 if cached)."""
    out = RUNS_DIR / name
    if retrain and out.exists():
        shutil.rmtree(out)
    if (out / "config.json").is_file() and any((out / "checkpoints").glob("step_*")):
        return api.load_run(out), 0.0
    data, steps, extra = RUNS[name]
    if name == "series" and not Path(data).is_file():
        np.save(data, series_data())
    cfg, train_ds, test_ds = api.resolve_config(overrides=extra, data=data, steps=steps)
    start = time.perf_counter()
    api.train_run(cfg, train_ds, out_dir=out, test_ds=None)
    return api.load_run(out), time.perf_counter() - start


def test_data(run: Any) -> torch.Tensor:
    """The run's held-out split in data space."""
    _, test = api.load_data(run.config.data)
    return run.to_data_space(test.x)


def score(run: Any, samples: torch.Tensor, reference: torch.Tensor) -> float:
    """W2 for vectors (2-D, series), digits FD for 8x8 images."""
    if samples.ndim == 4:
        from flowmatch.metrics.digits_features import digits_frechet_distance

        return float(digits_frechet_distance(samples, reference))
    from flowmatch.metrics.wasserstein import wasserstein2

    g = torch.Generator().manual_seed(0)
    return float(wasserstein2(samples, reference, generator=g))


def metric_name(run: Any) -> str:
    """``"FD"`` for digits, ``"W2"`` otherwise."""
    return "FD" if len(run.sample_shape) == 3 else "W2"


def ratio_text(a: float, b: float) -> str:
    """``a / b`` as text."""
    return f"{a / b:.3f}" if b and math.isfinite(b) else "n/a"
