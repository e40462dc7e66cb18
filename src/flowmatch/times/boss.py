"""BOSS: the Bellman-optimal K-step time grid over a fine reference trajectory.

Nguyen, Nguyen & Nguyen (2024), "Bellman Optimal Step-size Straightening of Flow-Matching
Models": given a trajectory ``x_i`` of a flow on a fine grid ``tau_0 < ... < tau_M``
with velocities ``v_i``, the cost of one Euler jump from node ``i`` to node ``j > i`` is

    c[i, j] = mean_n || x_j - (x_i + (tau_j - tau_i) v_i) ||^2

and the best ``K``-step grid is the minimum-cost path from node 0 to node ``M`` with exactly
``K`` jumps, found by dynamic programming in ``O(K M^2)``. The result is a plain time grid for
the Euler sampler. This module only does the arithmetic on a given trajectory (no model):
``flowmatch.fewstep.boss.boss_grid`` makes the trajectory with a model.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowmatch.times.grids import grid_values
from flowmatch.utils.checks import check_positive_int


def euler_jump_costs(times: Tensor, states: Tensor, velocities: Tensor) -> Tensor:
    """The ``(M+1, M+1)`` matrix of one-Euler-jump costs ``c[i, j]`` (``inf`` for ``j <= i``).

    Args:
        times: the fine grid ``(M+1,)``, increasing.
        states: the trajectory ``(M+1, N, *D)`` at those times (``N`` samples).
        velocities: the velocities ``(M+1, N, *D)`` (or ``(M, N, *D)``: the last node's is
            never used) at those states.

    Returns:
        ``c`` in float64: ``c[i, j] = mean_n ||x_j - x_i - (tau_j - tau_i) v_i||^2``.

    Raises:
        ValueError: inconsistent shapes or a non-increasing grid.
    """
    values = grid_values(times, name="times")
    if values[1] < values[0]:
        raise ValueError(f"times must increase, got {values[:3]}...")
    m1 = len(values)
    if states.shape[0] != m1 or velocities.shape[0] not in (m1, m1 - 1):
        raise ValueError(
            f"states must be (M+1, N, *D) and velocities (M+1 or M, N, *D) for M+1 = {m1} "
            f"times, got {tuple(states.shape)} and {tuple(velocities.shape)}"
        )
    if states.shape[1:] != velocities.shape[1:]:
        raise ValueError(
            f"states {tuple(states.shape)} and velocities {tuple(velocities.shape)} differ in "
            "(N, *D)"
        )
    tau = torch.as_tensor(values, dtype=torch.float64)
    x = states.double().reshape(m1, states.shape[1], -1)
    v = velocities.double().reshape(velocities.shape[0], states.shape[1], -1)
    cost = torch.full((m1, m1), math.inf, dtype=torch.float64)
    for i in range(m1 - 1):
        h = (tau[i + 1 :] - tau[i])[:, None, None]
        err = x[i + 1 :] - (x[i][None] + h * v[i][None])
        cost[i, i + 1 :] = err.square().sum(-1).mean(-1)
    return cost


def bellman_path(cost: Tensor, num_steps: int) -> list[int]:
    """Node indices ``0 = i_0 < ... < i_K = M`` of the cheapest path with exactly ``K`` jumps.

    ``dp[k][i] = min_{j > i} c[i, j] + dp[k-1][j]`` with ``dp[0][M] = 0`` (Bellman 1957; as in BOSS).

    Args:
        cost: ``(M+1, M+1)`` jump costs (``inf`` where a jump is not allowed).
        num_steps: ``K``, ``1 <= K <= M``.

    Raises:
        ValueError: ``num_steps`` outside ``[1, M]`` or a non-square cost.
    """
    check_positive_int(num_steps, "num_steps")
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"cost must be square (M+1, M+1), got {tuple(cost.shape)}")
    last = cost.shape[0] - 1
    if num_steps > last:
        raise ValueError(f"num_steps={num_steps} exceeds the {last} intervals of the fine grid")
    c = cost.double()
    inf = torch.full((last + 1,), math.inf, dtype=torch.float64)
    dp = inf.clone()
    dp[last] = 0.0
    choices = []
    for _ in range(num_steps):
        total = c + dp[None, :]  # total[i, j] = c[i, j] + dp_{k-1}[j]
        best, arg = total.min(dim=1)
        dp = best
        choices.append(arg)
    path, node = [0], 0
    for arg in reversed(choices):
        node = int(arg[node])
        path.append(node)
    return path


def bellman_grid(times: Tensor, states: Tensor, velocities: Tensor, num_steps: int) -> Tensor:
    """The BOSS grid: the ``K + 1`` fine-grid times of the cheapest ``K``-jump Euler path.

    Args:
        times: the fine grid ``(M+1,)`` from 0 to 1.
        states: the reference trajectory ``(M+1, N, *D)``.
        velocities: its velocities ``(M+1 or M, N, *D)``.
        num_steps: ``K``.

    Returns:
        The grid ``(K+1,)`` (dtype of ``times``), a subset of ``times`` with both endpoints.

    Example:
        >>> import torch
        >>> times = torch.linspace(0, 1, 5)
        >>> x = (times ** 2)[:, None, None]  # dx/dt = 2t: Euler errs least late on
        >>> bellman_grid(times, x, (2 * times)[:, None, None], 2).tolist()
        [0.0, 0.5, 1.0]
    """
    path = bellman_path(euler_jump_costs(times, states, velocities), num_steps)
    return times[torch.as_tensor(path)]
