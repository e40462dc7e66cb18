"""Straightness of a flow along its own ODE trajectories (Liu et al. 2023)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from flowmatch.interfaces import Cond, VelocityField
from flowmatch.solvers import SOLVERS, solve
from flowmatch.times import make_grid
from flowmatch.utils.checks import check_batch, check_in_choices, check_positive_int

StraightnessSolver = Literal["euler", "rk4"]
_SOLVERS = {name: SOLVERS[name] for name in ("euler", "rk4")}  # fixed-step: uniform grid


def straightness(
    field: VelocityField,
    x0: Tensor,
    *,
    num_steps: int = 100,
    solver: StraightnessSolver = "rk4",
    cond: Cond = None,
) -> float:
    """Straightness ``S`` of the flow of ``field`` started at the source samples ``x0``.

    ``S = int_0^1 E ||(X_1 - X_0) - v(X_t, t)||^2 dt`` along the model's own trajectories
    ``dX_t/dt = v(X_t, t)``, ``X_0 = x0`` (Liu, Gong & Liu 2023, "Flow Straight and Fast",
    eq. 3 / Definition 3.4). ``S = 0`` iff every trajectory is a straight line travelled at
    constant speed, which is when one Euler step is exact. Because ``int_0^1 v dt = X_1 - X_0``
    along an exact trajectory, ``S = E int_0^1 ||v||^2 dt - E ||X_1 - X_0||^2``: kinetic energy
    minus that of the straight path with the same ends.

    Discretisation: the trajectory is computed with ``solver`` on the uniform grid
    ``t_k = k / N`` (``flowmatch.solvers.solve`` with ``save_trajectory=True``), ``X_1`` is
    its last state, ``v`` is re-evaluated at the ``N + 1`` trajectory points, and the time
    integral is the composite trapezoidal rule (error ``O(1/N^2)``; with ``"rk4"`` the
    trajectory error ``O(1/N^4)`` is negligible, with ``"euler"`` it is ``O(1/N)``). The
    expectation is the mean over the rows of ``x0``; norms are summed over all features.
    Cost: ``N * stages + N + 1`` field evaluations and an ``(N + 1, B, *D)`` trajectory.

    Args:
        field: velocity field ``(x (B, *D), t (B,), cond) -> (B, *D)``.
        x0: source samples ``(B, *D)`` (e.g. ``N(0, I)`` draws).
        num_steps: number of steps ``N`` of the uniform grid.
        solver: ``"rk4"`` (default) or ``"euler"``.
        cond: conditioning passed unchanged to ``field`` (e.g. labels ``(B,)``).

    Returns:
        ``S >= 0`` as a Python float (accumulated in float64).

    Raises:
        TypeError: if ``x0`` is not a floating tensor or ``num_steps`` is not an int.
        ValueError: if ``num_steps < 1``, ``solver`` is unknown, or ``field`` returns a
            tensor whose shape differs from ``x0``'s.
        FloatingPointError: if the trajectory becomes non-finite.

    Example:
        >>> import torch
        >>> x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
        >>> s = straightness(lambda x, t, cond=None: torch.ones_like(x), x0)  # straight lines
        >>> s < 1e-9  # 0 up to float32 round-off
        True
    """
    check_batch(x0, "x0")
    check_positive_int(num_steps, "num_steps")
    check_in_choices(solver, _SOLVERS, "solver")
    grid = make_grid("uniform", num_steps, dtype=x0.dtype, device=x0.device)
    times = grid.tolist()  # one host copy; the loop below never syncs
    # Evaluate v once at t = 0 before solving: a wrong output shape could otherwise
    # broadcast silently inside the solver (e.g. (B,) against (B, D) when B == D).
    v = field(x0, x0.new_full((x0.shape[0],), times[0]), cond)
    if v.shape != x0.shape:
        raise ValueError(f"field must return shape {tuple(x0.shape)}, got {tuple(v.shape)}")
    traj = solve(field, x0, grid, _SOLVERS[solver](), cond=cond, save_trajectory=True).trajectory
    assert traj is not None  # save_trajectory=True always returns one
    chord = (traj[-1] - traj[0]).to(torch.float64)
    # Composite trapezoid: weight (t_{k+1} - t_{k-1}) / 2, half intervals at both ends.
    lo, hi = [times[0], *times[:-1]], [*times[1:], times[-1]]
    total = x0.new_zeros((), dtype=torch.float64)
    for k in range(len(times)):
        if k > 0:
            v = field(traj[k], x0.new_full((x0.shape[0],), times[k]), cond)
        total = total + (hi[k] - lo[k]) / 2 * (chord - v.to(torch.float64)).square().sum()
    return float(total) / x0.shape[0]
