"""Inversion: map data ``x1`` back to source points ``x0`` by integrating the flow backwards.

``invert`` runs any solver on the reversed grid (an approximate inverse of the forward solve,
accurate to the solver's error). ``invert_euler_fixed_point`` inverts *forward Euler on the
same grid* exactly, up to a fixed-point residual, by solving each implicit step
``x_k = x_{k+1} - h_k v(x_k, t_k)`` by fixed-point iteration (a standard construction, not a
specific paper's algorithm). Inverting a field with classifier-free guidance ``> 1`` is
unstable: the guided field does not transport the data distribution.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowmatch.interfaces import Cond, VelocityField
from flowmatch.solvers.base import AdaptiveSolver, ODESolver
from flowmatch.solvers.integrate import solve
from flowmatch.times.grids import grid_values
from flowmatch.utils.checks import check_batch, check_finite, check_positive_int


def _forward_grid_values(grid: Tensor) -> list[float]:
    """Validate an increasing grid (``times.grid_values``, one host read); return its times."""
    times = grid_values(grid)
    if times[0] > times[-1]:
        raise ValueError(
            f"grid must be increasing (the forward grid used for sampling, source -> data); "
            f"got first={times[0]}, last={times[-1]}. The inversion reverses it."
        )
    return times


def invert(
    field: VelocityField,
    x1: Tensor,
    grid: Tensor,
    solver: ODESolver | AdaptiveSolver,
    *,
    cond: Cond = None,
) -> Tensor:
    """Integrate ``dx/dt = v(x, t)`` backwards along the reversed forward ``grid``.

    Starting from ``x1`` at ``grid[-1]``, the solver takes negative steps through
    ``grid[::-1]`` and returns the state at ``grid[0]``. The round trip
    ``solve(field, invert(field, x1, grid, s), grid, s)`` reproduces ``x1`` up to twice the
    solver's global error (``O(h^order)`` for fixed steps, the tolerance for ``Dopri5``), not
    exactly; for an exact inverse of Euler sampling use ``invert_euler_fixed_point``.

    Args:
        field: velocity field ``(x (B, *D), t (B,), cond) -> (B, *D)``.
        x1: points at time ``grid[-1]`` (usually data, ``t = 1``), ``(B, *D)``.
        grid: the increasing forward grid ``(N+1,)`` (e.g. ``make_grid("uniform", N)``).
        solver: any ``ODESolver`` or ``AdaptiveSolver``.
        cond: conditioning passed unchanged to ``field``.

    Returns:
        The states at time ``grid[0]``, ``(B, *D)``.

    Raises:
        ValueError: if ``grid`` is not a valid increasing grid.
        TypeError: if ``x1`` or ``solver`` has the wrong type.
        FloatingPointError: if the solve produced NaN/inf.

    Example:
        >>> import torch
        >>> from flowmatch.solvers import Euler
        >>> from flowmatch.times import make_grid
        >>> field = lambda x, t, cond=None: torch.ones_like(x)  # x1 = x0 + 1
        >>> invert(field, torch.ones(2, 3), make_grid("uniform", 4), Euler()).tolist()
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    check_batch(x1, "x1")
    _forward_grid_values(grid)
    return solve(field, x1, grid.flip(0), solver, cond=cond).x


def invert_euler_fixed_point(
    field: VelocityField,
    x1: Tensor,
    grid: Tensor,
    *,
    cond: Cond = None,
    iterations: int = 5,
) -> Tensor:
    """Invert forward Euler on ``grid`` step by step with a fixed-point iteration.

    Forward Euler maps ``x_k -> x_{k+1} = x_k + h_k v(x_k, t_k)``, ``h_k = t_{k+1} - t_k``.
    Walking the grid backwards, each ``x_k`` solves ``x_k = x_{k+1} - h_k v(x_k, t_k)``;
    starting from ``y = x_{k+1}`` the iteration ``y <- x_{k+1} - h_k v(y, t_k)`` contracts
    with factor ``h_k L`` (``L`` the Lipschitz constant of ``v`` in ``x``), so after ``n``
    iterations the forward Euler step from ``y`` misses ``x_{k+1}`` by at most
    ``(h_k L)^n h_k |v|`` (Banach fixed-point theorem). Convergence needs ``h_k L < 1``.
    Costs ``iterations`` field evaluations per step.

    Args:
        field: velocity field ``(x (B, *D), t (B,), cond) -> (B, *D)``.
        x1: the result of forward Euler on ``grid``, ``(B, *D)``.
        grid: the increasing forward grid ``(N+1,)`` the Euler sampler used.
        cond: conditioning passed unchanged to ``field``.
        iterations: fixed-point iterations per step, ``>= 1`` (3-10 is typical).

    Returns:
        ``x0`` ``(B, *D)`` such that forward Euler on ``grid`` from ``x0`` returns ``x1`` up to
        the fixed-point residual.

    Raises:
        ValueError: if ``grid`` is not a valid increasing grid or ``iterations < 1``.
        TypeError: if ``x1`` is not a floating tensor or ``iterations`` not an int.
        FloatingPointError: if the iteration diverged to NaN/inf (steps too large for ``v``).

    Example:
        >>> import torch
        >>> from flowmatch.solvers import Euler, integrate
        >>> from flowmatch.times import make_grid
        >>> field = lambda x, t, cond=None: -x * (1 + t[:, None])
        >>> grid = make_grid("uniform", 8, dtype=torch.float64)
        >>> x0 = torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(3, 2)
        >>> x1 = integrate(field, x0, grid, Euler())
        >>> back = invert_euler_fixed_point(field, x1, grid, iterations=30)
        >>> bool(torch.allclose(back, x0, atol=1e-12))
        True
    """
    check_batch(x1, "x1")
    times = _forward_grid_values(grid)  # one host copy; the loops below never sync
    check_positive_int(iterations, "iterations")
    x, batch = x1, x1.shape[0]
    for t, t_next in zip(reversed(times[:-1]), reversed(times[1:]), strict=True):
        h, t_vec = t_next - t, x.new_full((batch,), t)
        y = x
        for _ in range(iterations):
            y = torch.add(x, field(y, t_vec, cond), alpha=-h)
        x = y
    return check_finite(x, "inverted x0", hint="the fixed-point iteration needs h * Lip(v) < 1")
