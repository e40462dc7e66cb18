"""Solver interfaces: fixed-step ``ODESolver`` and adaptive ``AdaptiveSolver``.

Solvers know nothing about paths or models; they integrate any ``VelocityField``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from flowmatch.interfaces import Cond, VelocityField


class ODESolver(ABC):
    """A fixed-step one-step method: a pure function ``step(field, x, t, t_next) -> x_next``.

    Attributes:
        name: registry name.
        order: order of convergence (global error ``O(h^order)``).
        stages: function evaluations per step (NFE per step).
    """

    name: ClassVar[str]
    order: ClassVar[int]
    stages: ClassVar[int]

    @abstractmethod
    def step(
        self, field: VelocityField, x: Tensor, t: float, t_next: float, cond: Cond = None
    ) -> Tensor:
        """Advance ``x`` ``(B, *D)`` from time ``t`` to ``t_next`` (either direction).

        Times are Python floats because one grid is shared by the batch; the field is always
        called with a ``(B,)`` time tensor.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass
class AdaptiveStats:
    """Counters of an adaptive solve: function evaluations, accepted and rejected steps."""

    nfe: int = 0
    accepted: int = 0
    rejected: int = 0
    next_step: float | None = None  # step size carried from one output interval to the next


class AdaptiveSolver(ABC):
    """An error-controlled solver that chooses its own steps between two output times.

    Attributes:
        name: registry name.
        order: order of the propagated solution.
    """

    name: ClassVar[str]
    order: ClassVar[int]

    @abstractmethod
    def solve_interval(
        self,
        field: VelocityField,
        x: Tensor,
        t0: float,
        t1: float,
        cond: Cond = None,
        *,
        stats: AdaptiveStats,
    ) -> Tensor:
        """Integrate ``x`` ``(B, *D)`` from ``t0`` to ``t1``; update ``stats`` in place."""
