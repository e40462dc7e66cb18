"""Directional source pruning fitted once per run (``flowmatch prune RUN``), reused by sampling."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import torch

from flowmatch.api.config import load_run_data
from flowmatch.api.run import Run
from flowmatch.api.train import prepare_dataset
from flowmatch.sampling.pruning import PrunedGaussian, fit_sparse_axes
from flowmatch.sources import GaussianSource
from flowmatch.train.lock import RunLock
from flowmatch.utils.io import atomic_write_text
from flowmatch.utils.options import OptionError

PRUNING_FILE = "pruning.json"


def fit_pruning(
    run: Run, *, threshold: float = 0.01, tau: float | None = None, save: bool = True
) -> dict:
    """Fit the data-sparse axes of the run's training data (model space) and store them.

    Args:
        run: a Gaussian-source run loaded from a directory.
        threshold: the axis rule ``max_n cos <= threshold``.
        tau: the sampling cosine (default ``2.5 / sqrt(D)``, SourceFM's CIFAR value 0.048 is
            ``2.7 / sqrt(3072)``).
        save: write ``RUN/pruning.json``.

    Returns:
        ``{"axes": [[...]], "threshold": ..., "tau": ..., "step": ...}``.
    """
    if type(run.source) is not GaussianSource:
        raise OptionError("source", f"pruning needs a N(0, I) source, the run has {run.source!r}")
    where = run.directory if run.directory is not None else "(live run)"
    train_ds, _ = load_run_data(run.config, run.info, where)  # refuses changed data
    x = prepare_dataset(run.config, train_ds).x
    axes = fit_sparse_axes(x, threshold)
    dim = math.prod(run.sample_shape)
    info = {
        "axes": axes.tolist(),
        "threshold": threshold,
        "tau": 2.5 / math.sqrt(dim) if tau is None else tau,
        "num_candidates": 2 * min(len(x), dim),
    }
    if save:
        if run.directory is None:
            raise OptionError("save", "needs a run loaded from a directory")
        with RunLock(run.directory):  # one writer per run directory
            atomic_write_text(run.directory / PRUNING_FILE, json.dumps(info))
    return info


def pruned_run(run: Run, *, tau: float | None = None) -> Run:
    """``run`` whose source rejects draws along its stored data-sparse axes.

    Raises:
        OptionError: the run has no stored pruning (``flowmatch prune RUN``).
    """
    path = run.directory / PRUNING_FILE if run.directory is not None else None
    if path is None or not path.is_file():
        raise OptionError("prune", "the run has no pruning axes: run `flowmatch prune RUN` first")
    info = json.loads(path.read_text())
    dim = math.prod(run.sample_shape)
    axes = torch.tensor(info["axes"], dtype=torch.float64).reshape(-1, dim)
    return replace(run, source=PrunedGaussian(axes, info["tau"] if tau is None else tau))


__all__ = ["fit_pruning", "pruned_run"]
