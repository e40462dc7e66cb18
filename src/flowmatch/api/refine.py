"""Train a FlowTurbo velocity refiner on a trained run (``flowmatch refine RUN``).

The refiner lives in ``RUN/refiner/`` (its own checkpoints and ``refiner.json``); sampling the
run with ``solver="flowturbo"`` loads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowmatch.api.config import load_run_data
from flowmatch.api.run import Run, load_run
from flowmatch.api.train import prepare_dataset
from flowmatch.sampling.flowturbo import RefinerStep, VelocityRefiner
from flowmatch.train.checkpoint import latest_checkpoint, load_checkpoint
from flowmatch.train.config import TrainConfig
from flowmatch.utils.io import atomic_write_text

REFINER_DIR = "refiner"
REFINER_FILE = "refiner.json"


def refine(
    run_dir: str | Path,
    *,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    hidden: int = 64,
    depth: int = 1,
    max_dt: float = 0.12,
    seed: int = 0,
    callbacks: Any = (),
) -> Path:
    """Train a refiner for the run in ``run_dir`` on its training data; returns its directory.

    The run's model is frozen (its EMA weights when it has them, like sampling); the trainer
    (AdamW, cosine schedule, checkpoints, NaN stop) trains only the refiner.
    """
    from flowmatch.train import Trainer

    run = load_run(run_dir)
    train_ds, _ = load_run_data(run.config, run.info, run_dir)  # refuses changed data
    train_ds = prepare_dataset(run.config, train_ds)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        refiner = VelocityRefiner(run.sample_shape, hidden=hidden, depth=depth)
    step = RefinerStep(lambda modules: run.field, run.path, run.source, max_dt)
    cfg = TrainConfig(
        steps=steps,
        batch_size=min(batch_size, len(train_ds)),
        lr=lr,
        seed=seed,
        log_every=max(1, min(100, steps)),
        checkpoint_every=0,
        ema_decay=None,
    )
    out = Path(run_dir) / REFINER_DIR
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "sample_shape": list(run.sample_shape),
        **refiner.config,
        "max_dt": max_dt,
        "predictor_step": run.step,
    }
    with Trainer(
        {"refiner": refiner},
        step,
        train_ds,
        cfg,
        frozen={"model": run.model},
        out_dir=out,
        run_config={"refiner": meta},
        callbacks=callbacks,
    ) as trainer:
        trainer.fit()
    atomic_write_text(out / REFINER_FILE, json.dumps(meta, indent=2))
    return out


def load_refiner(run: Run) -> nn.Module | None:
    """The run's trained refiner (``None`` when it has none), on the run's device, eval mode."""
    if run.directory is None:
        return None
    folder = run.directory / REFINER_DIR
    if not (folder / REFINER_FILE).is_file() or latest_checkpoint(folder) is None:
        return None
    meta = json.loads((folder / REFINER_FILE).read_text())
    net = VelocityRefiner(
        tuple(meta["sample_shape"]), meta["hidden"], meta["depth"], meta["time_features"]
    )
    ckpt = load_checkpoint(folder)
    net.load_state_dict(ckpt.modules["refiner"])
    return net.to(run.device).eval().requires_grad_(False)


__all__ = ["load_refiner", "refine"]
