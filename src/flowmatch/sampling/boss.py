"""BOSS step costs of a trained field: one sampler step between every pair of fine-grid nodes.

Nguyen, Nguyen & Nguyen (2024), "Bellman Optimal Step-size Straightening of Flow-Matching
Models", Sec. 3.2 and Alg. 1: integrate the field on a fine grid ``tau_0..tau_M`` from ``N``
source samples (the reference trajectory ``x_i``), then measure the error of one step of the
sampler from node ``i`` to node ``j``:

    c[i, j] = mean_n || x_j - step(x_i, tau_i, tau_j) ||^2

The paper uses Euler for both the reference and the jumps; here the jump is one step of any
fixed-step sampler (midpoint, Heun, ...) and the reference defaults to RK4 on the fine grid.
``flowmatch.times.boss.bellman_indices`` then picks the best ``K``-step sub-grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from flowmatch.interfaces import Cond
from flowmatch.solvers.base import Sampler
from flowmatch.solvers.integrate import solve
from flowmatch.solvers.ode import RK4
from flowmatch.times.boss import bellman_indices
from flowmatch.times.grids import uniform_grid
from flowmatch.utils.checks import check_batch, check_positive_int

__all__ = ["boss_grids", "step_costs"]


def step_costs(
    field: Any,
    x0: Tensor,
    sampler: Sampler,
    *,
    fine_steps: int = 100,
    cond: Cond = None,
    reference: Sampler | None = None,
) -> tuple[Tensor, Tensor]:
    """``(cost, fine_grid)``: the ``(M+1, M+1)`` one-step costs (``inf`` for ``j <= i``).

    Args:
        field: the velocity field.
        x0: source samples ``(N, *D)``.
        sampler: the deterministic fixed-step sampler whose steps are costed.
        fine_steps: ``M``, intervals of the uniform fine grid.
        cond: conditioning of the samples.
        reference: the sampler of the reference trajectory (default ``RK4()``).

    Raises:
        TypeError: ``sampler`` is adaptive or stochastic.
        ValueError: bad ``x0`` or ``fine_steps``.
    """
    check_batch(x0, "x0")
    check_positive_int(fine_steps, "fine_steps")
    if not isinstance(sampler, Sampler) or sampler.adaptive or sampler.stochastic:
        raise TypeError(f"sampler must be a deterministic fixed-step sampler, got {sampler!r}")
    fine = uniform_grid(fine_steps, dtype=torch.float64)
    tau = fine.tolist()
    with torch.no_grad():
        states = solve(
            field, x0, fine.to(x0.dtype), reference or RK4(), cond=cond, save_trajectory=True
        ).trajectory
        assert states is not None
        cost = torch.full((fine_steps + 1, fine_steps + 1), float("inf"), dtype=torch.float64)
        for i in range(fine_steps):
            for j in range(i + 1, fine_steps + 1):
                y = sampler.advance(field, states[i], tau[i], tau[j], cond).x
                err = (states[j] - y).double().reshape(len(y), -1).square().sum(1)
                cost[i, j] = err.mean()
    return cost, fine


def boss_grids(
    field: Any,
    x0: Tensor,
    sampler: Sampler,
    num_steps: Sequence[int],
    *,
    fine_steps: int = 100,
    cond: Cond = None,
    reference: Sampler | None = None,
) -> dict[int, tuple[Tensor, float]]:
    """BOSS grids for several step counts from one cost matrix: ``{K: (grid (K+1,), cost)}``.

    The grids are float64 sub-grids of the uniform fine grid with both endpoints.

    Example:
        >>> import torch
        >>> from flowmatch.solvers import Euler
        >>> field = lambda x, t, cond=None: 3 * t[:, None] ** 2 * torch.ones_like(x)
        >>> grids = boss_grids(field, torch.zeros(4, 1), Euler(), [2], fine_steps=10)
        >>> grids[2][0].tolist()  # x = t^3 bends late: the step lands late
        [0.0, 0.7, 1.0]
    """
    cost, fine = step_costs(
        field, x0, sampler, fine_steps=fine_steps, cond=cond, reference=reference
    )
    out = {}
    for k in num_steps:
        idx, total = bellman_indices(cost, k)
        out[k] = (fine[torch.tensor(idx)], total)
    return out
