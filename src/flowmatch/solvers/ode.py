"""Explicit Runge-Kutta solvers defined by Butcher tableaus: Euler, midpoint, Heun, RK4."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from flowmatch.interfaces import Cond, VelocityField
from flowmatch.solvers import tableaus
from flowmatch.solvers.base import ODESolver
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

    def step(
        self, field: VelocityField, x: Tensor, t: float, t_next: float, cond: Cond = None
    ) -> Tensor:
        """Advance ``x`` ``(B, *D)`` from ``t`` to ``t_next``; returns ``(B, *D)``."""
        tab, h, batch = self.tableau, t_next - t, x.shape[0]
        ks: list[Tensor] = []
        for c_i, a_i in zip(tab.c, tab.a, strict=True):
            xi = x
            for a_ij, k_j in zip(a_i, ks, strict=False):
                if a_ij != 0.0:
                    xi = torch.add(xi, k_j, alpha=h * a_ij)
            ks.append(field(xi, x.new_full((batch,), t + c_i * h), cond))
        out = x
        for b_i, k_i in zip(tab.b, ks, strict=True):
            if b_i != 0.0:
                out = torch.add(out, k_i, alpha=h * b_i)
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
