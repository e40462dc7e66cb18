"""Explicit Runge-Kutta solvers defined by Butcher tableaus: Euler, midpoint, Heun, RK4."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from flowmatch.interfaces import Cond, VelocityField
from flowmatch.solvers import tableaus
from flowmatch.solvers.base import SAMPLERS, FixedStepConfig, ODESolver, StepOutput
from flowmatch.solvers.tableaus import ButcherTableau


class ExplicitRK(ODESolver):
    """One step of an explicit Runge-Kutta method given by ``tableau``.

    ``k_i = v(x + h sum_j a_ij k_j, t + c_i h)``, ``x_next = x + h sum_i b_i k_i`` with
    ``h = t_next - t`` (Hairer et al., Solving ODEs I, eq. II.1.8). Zero weights are skipped,
    so Euler costs exactly one field call and one fused add.
    """

    tableau: ClassVar[ButcherTableau]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        tab = cls.__dict__.get("tableau")
        if tab is not None:
            cls.name, cls.order, cls.stages = tab.name, tab.order, tab.stages

    def advance(
        self,
        field: Any,
        x: Tensor,
        t: float,
        t_next: float,
        cond: Cond = None,
        noise: Tensor | None = None,
        state: Any = None,
    ) -> StepOutput:
        """One Runge-Kutta step from ``t`` to ``t_next``, spending ``stages`` evaluations."""
        h = t_next - t
        ks, _ = _rk_stages(self.tableau, field, x, t, h, cond)
        return StepOutput(_weighted_sum(x, self.tableau.b, ks, h), self.stages)

    def step(
        self, field: VelocityField, x: Tensor, t: float, t_next: float, cond: Cond = None
    ) -> Tensor:
        """Advance ``x`` ``(B, *D)`` from ``t`` to ``t_next``; returns ``(B, *D)``."""
        return self.advance(field, x, t, t_next, cond).x


def _rk_stages(
    tableau: ButcherTableau,
    field: VelocityField,
    x: Tensor,
    t: float,
    h: float,
    cond: Cond = None,
    k1: Tensor | None = None,
) -> tuple[list[Tensor], Tensor]:
    """The stages ``k_i = v(x + h sum_j a_ij k_j, t + c_i h)`` of one explicit RK step.

    Shared by the fixed-step methods and ``Dopri5`` (one stage loop for both).

    Args:
        tableau: the method.
        field: the velocity field.
        x: the state at ``t``, ``(B, *D)``.
        t: the step's start time.
        h: the signed step ``t_next - t``.
        cond: conditioning passed unchanged to ``field``.
        k1: the first stage when already known (first-same-as-last); it costs no evaluation.

    Returns:
        ``(ks, x_s)``: the ``s`` stages, each ``(B, *D)``, and the input of the last stage
        (for a first-same-as-last pair such as Dormand-Prince, the new solution).
    """
    batch, xi = x.shape[0], x
    ks: list[Tensor] = [] if k1 is None else [k1]
    for i in range(len(ks), tableau.stages):
        xi = _weighted_sum(x, tableau.a[i], ks, h)
        ks.append(field(xi, x.new_full((batch,), t + tableau.c[i] * h), cond))
    return ks, xi


def _weighted_sum(x: Tensor, weights: tuple[float, ...], ks: list[Tensor], h: float) -> Tensor:
    """``x + h sum_j w_j k_j`` with fused adds; zero weights cost nothing (Euler: one add)."""
    out = x
    for w_j, k_j in zip(weights, ks, strict=False):
        if w_j != 0.0:
            out = torch.add(out, k_j, alpha=h * w_j)
    return out


class Euler(ExplicitRK):
    """Forward Euler, order 1, 1 NFE per step."""

    tableau = tableaus.EULER


class Midpoint(ExplicitRK):
    """Explicit midpoint rule, order 2, 2 NFE per step."""

    tableau = tableaus.MIDPOINT


class Heun(ExplicitRK):
    """Heun's method (explicit trapezoid), order 2, 2 NFE per step."""

    tableau = tableaus.HEUN


class RK4(ExplicitRK):
    """Classical 4th-order Runge-Kutta, 4 NFE per step."""

    tableau = tableaus.RK4


for _solver in (Euler, Midpoint, Heun, RK4):
    SAMPLERS.add(_solver.tableau.name, _solver, config=FixedStepConfig)
