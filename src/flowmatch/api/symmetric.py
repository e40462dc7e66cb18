"""Classification with a symmetrical flow-matching run: integrate the joint field backwards."""

from __future__ import annotations

import torch
from torch import Tensor

from flowmatch.api.run import Run
from flowmatch.latent.space import JointLabelSpace
from flowmatch.solvers import solve
from flowmatch.solvers.base import SAMPLERS
from flowmatch.times.grids import make_grid
from flowmatch.utils.options import OptionError
from flowmatch.utils.tensor import step_generator

__all__ = ["classify"]


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
    """
    space = run.latent
    if not isinstance(space, JointLabelSpace):
        raise OptionError("run", "classify needs a run trained with objective.kind = 'symmetric'")
    sampler = SAMPLERS.build(SAMPLERS.config(solver, nfe=nfe))
    steps = nfe // SAMPLERS[solver].stages
    z = space.encode(run.standardizer.transform(x.to(torch.float32))).to(run.device)
    k = space.num_classes
    eps = torch.randn(z.shape[0], k, generator=step_generator(seed, 0x5C), dtype=z.dtype)
    z = torch.cat([z[:, :-k], eps.to(z.device)], dim=1)
    grid = make_grid("uniform", steps, dtype=z.dtype).flip(0)  # t = 1 -> 0
    with torch.no_grad():
        out = solve(run.field, z, grid, sampler).x
    block = space.labels(out).cpu()
    return block.argmax(1), block
