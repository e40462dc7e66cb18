"""Drive any sampler over a time grid: ``solve`` (full result) and ``integrate`` (final state)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowmatch.interfaces import Cond
from flowmatch.solvers.base import Sampler, steps_for_nfe
from flowmatch.times.grids import grid_values
from flowmatch.utils.checks import check_batch, check_finite, signature_error

__all__ = ["Solution", "integrate", "solve", "steps_for_nfe"]


@dataclass(frozen=True)
class Solution:
    """Result of ``solve``.

    Attributes:
        x: the state at the last grid time, ``(B, *D)``.
        trajectory: states at every grid time ``(N+1, B, *D)`` if requested, else ``None``.
        nfe: number of field evaluations.
        num_steps: accepted steps.
        num_rejected: rejected steps (adaptive solvers only).
        log_probs: for stochastic samplers with ``return_log_probs``, the log-density of each
            step's transition at the state it produced, summed over dimensions, ``(N, B)``.
    """

    x: Tensor
    trajectory: Tensor | None
    nfe: int
    num_steps: int
    num_rejected: int = 0
    log_probs: Tensor | None = None


class _CheckedField:
    """Calls ``field`` and checks its first output (one check per solve, not per step).

    The output must be a tensor of ``x``'s exact shape on ``x``'s device: a ``(B, 1)``,
    ``(1, D)``, ``(B,)`` or scalar output would broadcast silently in the solver's updates.
    A ``TypeError`` of the first call is explained when the field's signature is the cause
    (e.g. a network whose ``forward(x, t)`` lacks ``cond``).
    """

    __slots__ = ("field", "checked", "params")

    def __init__(self, field: Any, params: tuple[str, ...]) -> None:
        self.field, self.checked, self.params = field, False, params

    def __call__(self, x: Tensor, *args: Any) -> Tensor:
        if self.checked:
            return self.field(x, *args)
        try:
            out = self.field(x, *args)
        except TypeError as err:
            wrong = signature_error(self.field, self.params, "field")
            if wrong is not None:
                raise wrong from err
            raise
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"field must return a tensor shaped like x {tuple(x.shape)}, got {got} "
                "(a (B, 1), (1, D) or scalar output would broadcast silently)"
            )
        if out.device != x.device:
            raise ValueError(
                f"field must return a tensor on x's device {x.device}, got {out.device}"
            )
        self.checked = True
        return out


def solve(
    field: Any,
    x: Tensor,
    grid: Tensor,
    solver: Sampler,
    *,
    cond: Cond = None,
    save_trajectory: bool = False,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    return_log_probs: bool = False,
) -> Solution:
    """Move ``x`` along ``grid`` with ``solver``: integrate ``dx/dt = field(x, t, cond)``.

    A fixed-step solver takes one step per grid interval; an adaptive solver chooses its own
    steps and lands on every grid time; a stochastic sampler draws one standard-normal noise
    tensor per interval (from ``generator``, or ``noise[k]``); a flow-map sampler evaluates
    the two-time map once per interval. A decreasing grid integrates backwards (inversion).

    Args:
        field: the velocity field ``(x (B, *D), t (B,), cond) -> (B, *D)`` (a ``FlowMap``
            ``(x, s, t, cond)`` for samplers with ``field_kind == "flow_map"``).
        x: initial state at ``grid[0]``, ``(B, *D)``.
        grid: strictly monotone times ``(N+1,)`` in ``[0, 1]`` (see ``times.make_grid``).
        solver: a :class:`~flowmatch.solvers.base.Sampler` (``Euler``, ``Midpoint``, ``Heun``,
            ``RK4``, ``Dopri5``, ...).
        cond: conditioning passed unchanged to ``field``.
        save_trajectory: also return the states at every grid time.
        generator: randomness of stochastic samplers.
        noise: explicit noise of stochastic samplers, ``(N, B, *D)``.
        return_log_probs: stochastic samplers: also return each step's transition log-prob.

    Returns:
        A ``Solution``; ``Solution.x`` is ``(B, *D)``.

    Raises:
        TypeError: if ``field`` is not callable (or cannot take ``(x, t, cond)``; the message
            names the expected ``forward(x, t, cond=None)``), ``solver`` is not a sampler, or
            ``x``/``grid`` have the wrong type.
        ValueError: if ``x`` is not ``(B, *D)``, ``grid`` is not a valid grid, the field's
            first output is not a tensor of ``x``'s exact shape and device (no broadcasting of
            ``(B, 1)``, ``(1, D)`` or scalar outputs), ``noise`` has the wrong shape, or noise /
            log-probs are asked of a deterministic sampler.
        RuntimeError: if an adaptive solver exceeds its ``max_steps``.
        FloatingPointError: if the final state has NaN/inf (checked once, after the solve;
            the message says whether the initial state ``x`` already had them).

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
    x0 = x
    if not isinstance(solver, Sampler):
        raise TypeError(
            f"solver must be an ODESolver or AdaptiveSolver, got {type(solver).__name__}"
        )
    _check_field_kind(field, solver)
    times = grid_values(grid)  # validated on one host copy; the loop below never syncs
    num = len(times) - 1
    noises = _noises(solver, x, num, generator, noise, return_log_probs)
    states = [x] if save_trajectory else None
    log_probs: list[Tensor] | None = [] if return_log_probs else None
    if solver.adaptive:  # it reads the device every step anyway; its step control needs x
        check_finite(x, "x (the initial state)")
    x_finite = torch.isfinite(x).all()  # read with the result's check: one host sync per solve
    params = ("x", "s", "t", "cond") if solver.field_kind == "flow_map" else ("x", "t", "cond")
    state, nfe, f = solver.init_state(), 0, _CheckedField(field, params)
    for k in range(num):
        out = solver.advance(f, x, times[k], times[k + 1], cond, noises[k], state)
        x, state, nfe = out.x, out.state, nfe + out.nfe
        if k == 0:
            f = field  # the first step checked the output shape
        if states is not None:
            states.append(x)
        if log_probs is not None:
            log_probs.append(_gaussian_log_prob(x, out.mean, out.std))
    if not bool(torch.isfinite(x).all()):
        if not bool(x_finite):
            check_finite(x0, "x (the initial state)")
        check_finite(x, "solution", hint="the field produced NaN/inf; check the model and the grid")
    steps, rejected = solver.finish(state, num)
    return Solution(
        x,
        None if states is None else torch.stack(states),
        nfe=nfe,
        num_steps=steps,
        num_rejected=rejected,
        log_probs=None if log_probs is None else torch.stack(log_probs),
    )


def _check_field_kind(field: Any, solver: Sampler) -> None:
    kind = getattr(field, "field_kind", "velocity")
    if kind != solver.field_kind:
        raise TypeError(
            f"{type(solver).__name__} integrates a {solver.field_kind} field, but the field is a "
            f"{kind} ({type(field).__name__}); use a sampler for {kind} fields"
        )


def _noises(
    solver: Sampler,
    x: Tensor,
    num: int,
    generator: torch.Generator | None,
    noise: Tensor | None,
    return_log_probs: bool,
) -> list[Tensor | None]:
    """One noise tensor per interval for stochastic samplers, ``None`` for deterministic ones."""
    if not solver.stochastic:
        if noise is not None or return_log_probs:
            raise ValueError(
                f"{type(solver).__name__} is deterministic: it takes no noise and has no "
                "transition log-probabilities"
            )
        return [None] * num
    if noise is not None:
        if noise.shape != (num, *x.shape):
            raise ValueError(
                f"noise must have shape (N, B, *D) = {(num, *x.shape)}, got {tuple(noise.shape)}"
            )
        return list(noise.unbind(0))
    return [
        torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        for _ in range(num)
    ]


def _gaussian_log_prob(x: Tensor, mean: Tensor | None, std: Tensor | None) -> Tensor:
    """``log N(x; mean, std^2 I)`` summed over all dimensions but the batch, ``(B,)``."""
    if mean is None or std is None:
        raise ValueError("the sampler did not return its Gaussian transition (mean, std)")
    z = (x - mean) / std
    logp = -0.5 * z.square() - torch.log(std.expand_as(x)) - 0.5 * math.log(2 * math.pi)
    return logp.reshape(x.shape[0], -1).sum(1)


def integrate(
    field: Any,
    x: Tensor,
    grid: Tensor,
    solver: Sampler,
    *,
    cond: Cond = None,
) -> Tensor:
    """Like ``solve`` but returns only the final state ``(B, *D)``.

    Raises:
        TypeError, ValueError, RuntimeError, FloatingPointError: as ``solve``.
    """
    return solve(field, x, grid, solver, cond=cond).x
