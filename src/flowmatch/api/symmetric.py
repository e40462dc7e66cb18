"""Classification with a symmetrical flow-matching run: integrate the joint field backwards."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flowmatch.api.run import Run
from flowmatch.data.batch import ArrayDataset
from flowmatch.latent.space import JointLabelSpace
from flowmatch.solvers import solve
from flowmatch.solvers.base import SAMPLERS
from flowmatch.times.grids import make_grid
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import OptionError
from flowmatch.utils.tensor import step_generator

__all__ = ["classify", "classify_dataset"]


def classify(
    run: Run, x: Tensor, *, solver: str = "euler", nfe: int = 10, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Class predictions of data-space samples ``x`` ``(N, *D)`` by a symmetric run.

    Starts at ``t = 1`` from ``[x, eps_y]`` (``eps_y`` standard normal, seeded) and integrates
    the joint field back to ``t = 0`` with ``nfe`` evaluations of ``solver``; the label block
    there is the class code (Caetano et al. 2026); the prediction is its argmax.

    Returns:
        ``(labels (N,), label block (N, K))``.

    Raises:
        OptionError: the run is not a symmetrical flow-matching run.
        ValueError: an unknown or adaptive ``solver``, ``nfe`` not a positive multiple of the
            solver's stages, or ``x`` not shaped ``(N, *D)``.
    """
    space = run.latent
    if not isinstance(space, JointLabelSpace):
        raise OptionError("run", "classify needs a run trained with objective.kind = 'symmetric'")
    if solver not in SAMPLERS.names():
        raise ValueError(f"unknown solver {solver!r}; choose one of {SAMPLERS.names()}")
    kind = SAMPLERS[solver]
    if kind.adaptive or kind.stochastic or getattr(kind, "field_kind", "velocity") != "velocity":
        raise ValueError(f"classify integrates a fixed grid backwards: solver {solver!r} is not")
    check_positive_int(nfe, "nfe")
    if nfe % kind.stages:
        raise ValueError(f"nfe must be a multiple of {solver}'s {kind.stages} stages, got {nfe}")
    if not isinstance(x, Tensor) or x.ndim < 2 or tuple(x.shape[1:]) != space.sample_shape:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be (N, *{space.sample_shape}) data-space samples, got {got}")
    sampler = SAMPLERS.build(SAMPLERS.config(solver, nfe=nfe))
    steps = nfe // kind.stages
    z = space.encode(run.standardizer.transform(x.to(torch.float32))).to(run.device)
    k = space.num_classes
    eps = torch.randn(z.shape[0], k, generator=step_generator(seed, 0x5C), dtype=z.dtype)
    z = torch.cat([z[:, :-k], eps.to(z.device)], dim=1)
    grid = make_grid("uniform", steps, dtype=z.dtype).flip(0)  # t = 1 -> 0
    with torch.no_grad():
        out = solve(run.field, z, grid, sampler).x
    block = space.labels(out).cpu()
    return block.argmax(1), block


def classify_dataset(
    run: Run, ds: ArrayDataset, *, solver: str = "euler", nfe: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Classify a labelled data set (model space, e.g. the held-out split) with a symmetric run.

    Returns:
        ``{"accuracy", "num_samples", "solver", "nfe", "per_class": [accuracy of class k]}``.

    Raises:
        OptionError: the run is not symmetric, or ``ds`` has no labels.
    """
    if ds.labels is None:
        raise OptionError("data", "classification accuracy needs a labelled data set")
    pred, _ = classify(run, run.to_data_space(ds.x), solver=solver, nfe=nfe, seed=seed)
    labels = ds.labels.cpu()
    hit = (pred == labels).to(torch.float64)
    k = run.latent.num_classes  # type: ignore[union-attr]  # checked by classify
    per_class = [
        float(hit[labels == c].mean()) if bool((labels == c).any()) else float("nan")
        for c in range(k)
    ]
    return {
        "accuracy": float(hit.mean()),
        "num_samples": len(labels),
        "solver": solver,
        "nfe": nfe,
        "per_class": per_class,
    }
