"""Bellman-optimal time grids (BOSS): the K-step sub-grid of a fine grid with the least cost.

Nguyen, Nguyen & Nguyen (2024), "Bellman Optimal Step-size Straightening of Flow-Matching
Models" (ICLR), Sec. 3.2: on a fine grid ``tau_0 = 0 < ... < tau_M = 1``, let ``c[i, j]``
(``i < j``) be the error of one sampler step from node ``i`` to node ``j`` along a reference
trajectory. The best ``K``-step grid is the path ``0 = i_0 < i_1 < ... < i_K = M`` minimising
``sum_k c[i_{k-1}, i_k]``, found by dynamic programming (Bellman 1957) in ``O(K M^2)``::

    best_1[j] = c[0, j];    best_k[j] = min_{i < j} best_{k-1}[i] + c[i, j]

and read back from ``best_K[M]``. This module is the arithmetic only; the costs of a trained
model come from ``flowmatch.sampling.boss``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowmatch.times.grids import GRIDS
from flowmatch.utils.checks import check_positive_int

__all__ = ["bellman_indices", "boss_grid_placeholder"]


def bellman_indices(cost: Tensor, num_steps: int) -> tuple[list[int], float]:
    """The fine-grid node indices of the cheapest path ``0 -> M`` with exactly ``num_steps`` jumps.

    Args:
        cost: ``(M+1, M+1)`` one-step costs; only ``cost[i, j]`` with ``i < j`` is read (the
            rest may hold anything, e.g. ``inf``). Non-negative and finite above the diagonal.
        num_steps: ``K`` with ``1 <= K <= M``.

    Returns:
        ``(indices, total)``: ``K + 1`` increasing indices from 0 to ``M`` and their total cost.

    Raises:
        TypeError: ``cost`` is not a floating tensor or ``num_steps`` not an int.
        ValueError: ``cost`` is not square with ``M >= 1``, has a negative or non-finite entry
            above the diagonal, or ``num_steps`` is outside ``[1, M]``.

    Example:
        >>> import torch
        >>> c = torch.tensor([[0., 1., 5.], [0., 0., 1.], [0., 0., 0.]])
        >>> bellman_indices(c, 2), bellman_indices(c, 1)
        (([0, 1, 2], 2.0), ([0, 2], 5.0))
    """
    if not isinstance(cost, Tensor) or not cost.is_floating_point():
        raise TypeError(f"cost must be a floating tensor, got {type(cost).__name__}")
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1] or cost.shape[0] < 2:
        raise ValueError(f"cost must be square (M+1, M+1) with M >= 1, got {tuple(cost.shape)}")
    check_positive_int(num_steps, "num_steps")
    last = cost.shape[0] - 1
    if num_steps > last:
        raise ValueError(f"num_steps={num_steps} exceeds the fine grid's {last} intervals")
    upper = torch.triu(torch.ones_like(cost, dtype=torch.bool), diagonal=1)
    c = cost.double()
    vals = c[upper]
    if not bool(torch.isfinite(vals).all()) or bool((vals < 0).any()):
        raise ValueError("cost must be finite and >= 0 above the diagonal")
    c = c.masked_fill(~upper, math.inf)
    best = c[0].clone()  # best[j]: cheapest one-jump path 0 -> j
    parents = []
    for _ in range(num_steps - 1):
        total = best[:, None] + c  # total[i, j] = best_{k-1}[i] + c[i, j]
        best, arg = total.min(dim=0)
        parents.append(arg)
    path = [last]
    for arg in reversed(parents):
        path.append(int(arg[path[-1]]))
    path.append(0)
    return path[::-1], float(best[last])


@GRIDS.register("boss")
def boss_grid_placeholder(
    num_steps: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """BOSS grid stored with a run (``flowmatch grid RUN --method boss --nfe K``).

    A BOSS grid depends on the trained model, so it is computed once per run and stored in
    the run directory; sampling through ``flowmatch.api`` (``grid="boss"``) reads it. Called
    without a run it raises.

    Raises:
        ValueError: always (the grid lives with a run).
    """
    raise ValueError(
        "the 'boss' grid is computed from a trained model and stored with its run: run "
        "`flowmatch grid RUN --method boss --nfe K` (or flowmatch.api.compute_grids), then "
        "sample the run with grid='boss'"
    )


boss_grid_placeholder.stored_in_run = True  # type: ignore[attr-defined]  # read by api.sampling_plan
