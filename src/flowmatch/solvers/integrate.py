"""Integrate a velocity field over a time grid with a fixed-step or adaptive solver."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flowmatch.interfaces import Cond, VelocityField
from flowmatch.solvers.base import AdaptiveSolver, AdaptiveStats, ODESolver
from flowmatch.times.grids import grid_values
from flowmatch.utils.checks import check_batch, check_finite, check_positive_int


@dataclass(frozen=True)
class Solution:
    """Result of ``solve``.

    Attributes:
        x: the state at the last grid time, ``(B, *D)``.
        trajectory: states at every grid time ``(N+1, B, *D)`` if requested, else ``None``.
        nfe: number of field evaluations.
        num_steps: accepted steps.
        num_rejected: rejected steps (adaptive solvers only).
    """

    x: Tensor
    trajectory: Tensor | None
    nfe: int
    num_steps: int
    num_rejected: int = 0


def solve(
    field: VelocityField,
    x: Tensor,
    grid: Tensor,
    solver: ODESolver | AdaptiveSolver,
    *,
    cond: Cond = None,
    save_trajectory: bool = False,
) -> Solution:
    """Integrate ``dx/dt = field(x, t, cond)`` from ``grid[0]`` to ``grid[-1]``.

    A fixed-step solver takes one step per grid interval; an adaptive solver chooses its own
    steps and lands on every grid time. A decreasing grid integrates backwards (inversion).

    Args:
        field: the velocity field ``(x (B, *D), t (B,), cond) -> (B, *D)``.
        x: initial state at ``grid[0]``, ``(B, *D)``.
        grid: strictly monotone times ``(N+1,)`` in ``[0, 1]`` (see ``times.make_grid``).
        solver: an ``ODESolver`` (``Euler``, ``Midpoint``, ``Heun``, ``RK4``) or ``Dopri5``.
        cond: conditioning passed unchanged to ``field``.
        save_trajectory: also return the states at every grid time.

    Returns:
        A ``Solution``; ``Solution.x`` is ``(B, *D)``.

    Raises:
        TypeError: if ``field`` is not callable, ``solver`` is not a solver, or ``x``/``grid``
            have the wrong type.
        ValueError: if ``x`` is not ``(B, *D)`` or ``grid`` is not a valid grid
            (``times.check_grid``).
        RuntimeError: if an adaptive solver exceeds its ``max_steps``.
        FloatingPointError: if the final state has NaN/inf (checked once, after the solve).

    Example:
        >>> import torch
        >>> from flowmatch.solvers import Midpoint, solve
        >>> from flowmatch.times import make_grid
        >>> sol = solve(lambda x, t, cond=None: torch.ones_like(x), torch.zeros(2, 3),
        ...             make_grid("uniform", 4), Midpoint())
        >>> sol.x[0].tolist(), sol.nfe
        ([1.0, 1.0, 1.0], 8)
    """
    if not callable(field):
        raise TypeError(
            f"field must be callable (x, t, cond) -> (B, *D), got {type(field).__name__}"
        )
    check_batch(x, "x")
    if not isinstance(solver, ODESolver | AdaptiveSolver):
        raise TypeError(
            f"solver must be an ODESolver or AdaptiveSolver, got {type(solver).__name__}"
        )
    times = grid_values(grid)  # validated on one host copy; the loop below never syncs
    states = [x] if save_trajectory else None
    stats = AdaptiveStats()
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        if isinstance(solver, ODESolver):
            x = solver.step(field, x, t, t_next, cond)
        else:
            x = solver.solve_interval(field, x, t, t_next, cond, stats=stats)
        if states is not None:
            states.append(x)
    check_finite(x, "solution", hint="the field produced NaN/inf; check the model and the grid")
    if isinstance(solver, ODESolver):
        steps = len(times) - 1
        return Solution(x, _stack(states), nfe=steps * solver.stages, num_steps=steps)
    return Solution(
        x, _stack(states), nfe=stats.nfe, num_steps=stats.accepted, num_rejected=stats.rejected
    )


def integrate(
    field: VelocityField,
    x: Tensor,
    grid: Tensor,
    solver: ODESolver | AdaptiveSolver,
    *,
    cond: Cond = None,
) -> Tensor:
    """Like ``solve`` but returns only the final state ``(B, *D)``.

    Raises:
        TypeError, ValueError, RuntimeError, FloatingPointError: as ``solve``.
    """
    return solve(field, x, grid, solver, cond=cond).x


def steps_for_nfe(solver: ODESolver, nfe: int) -> int:
    """Number of steps of a fixed-step ``solver`` that spends exactly ``nfe`` evaluations.

    Raises:
        TypeError: if ``solver`` is not a fixed-step ``ODESolver`` or ``nfe`` is not an int.
        ValueError: if ``nfe < 1`` or not a multiple of the solver's stages.
    """
    if not isinstance(solver, ODESolver):
        raise TypeError(
            f"solver must be a fixed-step ODESolver (adaptive solvers choose their own NFE), "
            f"got {type(solver).__name__}"
        )
    check_positive_int(nfe, "nfe")
    if nfe % solver.stages != 0:
        raise ValueError(
            f"nfe={nfe} is not a multiple of {solver.name}'s {solver.stages} evaluations per step; "
            f"use one of {[solver.stages * k for k in range(1, 5)]}, ..."
        )
    return nfe // solver.stages


def _stack(states: list[Tensor] | None) -> Tensor | None:
    return None if states is None else torch.stack(states)
