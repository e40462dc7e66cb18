"""The sampler protocol: one step maps ``(field, x, t, t_next, cond, noise)`` to the next state.

Every way of moving a sample along the time grid is a :class:`Sampler`: fixed-step
Runge-Kutta methods, the adaptive Dopri5 (one "step" per output interval, its own inner steps),
stochastic samplers (whose step also returns its Gaussian transition, for log-probabilities)
and flow-map samplers (one evaluation of a two-time map per interval). ``solve`` drives any of
them with the same loop and never inspects which kind it got.

Samplers know nothing about paths or models; they integrate any ``VelocityField`` (or, for
``field_kind = "flow_map"``, any ``FlowMap``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

from torch import Tensor

from flowmatch.interfaces import Cond, VelocityField
from flowmatch.registry import ComponentConfig, Entry, Registry
from flowmatch.utils.options import OptionError, option


class StepOutput(NamedTuple):
    """Result of one :meth:`Sampler.advance`.

    Attributes:
        x: the state at ``t_next``, ``(B, *D)``.
        nfe: field evaluations this step spent.
        state: the sampler's state to pass to the next step (``None`` for stateless ones).
        mean: for stochastic steps, the mean of the Gaussian transition
            ``x ~ N(mean, std^2 I)`` that produced ``x``, ``(B, *D)``; else ``None``.
        std: its standard deviation (a tensor broadcastable to ``x``), else ``None``.
    """

    x: Tensor
    nfe: int
    state: Any = None
    mean: Tensor | None = None
    std: Tensor | None = None


class Sampler(ABC):
    """One step of a sampler on a time grid (pure: state is passed in and returned).

    Attributes:
        name: registry name (set by the registration).
        order: order of convergence of the deterministic part.
        stages: field evaluations per step (for adaptive samplers: per attempted step).
        adaptive: chooses its own inner steps; ``solve`` reports the NFE it spent.
        stochastic: consumes a noise tensor per step and returns its Gaussian transition.
        field_kind: ``"velocity"`` (a ``VelocityField``), ``"flow_map"`` (a ``FlowMap``) or
            ``"transition"`` (a learned transition ``(x, t, t_next, cond, noise) -> x_next``).
    """

    name: ClassVar[str]
    order: ClassVar[int]
    stages: ClassVar[int]
    adaptive: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    field_kind: ClassVar[Literal["velocity", "flow_map", "transition"]] = "velocity"

    def init_state(self) -> Any:
        """The state before the first step (``None`` for stateless samplers)."""
        return None

    @abstractmethod
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
        """Move ``x`` ``(B, *D)`` from time ``t`` to ``t_next`` (either direction).

        Times are Python floats because one grid is shared by the batch; the field is always
        called with ``(B,)`` time tensors. ``noise`` (``(B, *D)``, standard normal) is given
        to stochastic samplers only.
        """

    def finish(self, state: Any, num_intervals: int) -> tuple[int, int]:
        """``(accepted steps, rejected steps)`` of a solve over ``num_intervals`` intervals."""
        return num_intervals, 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ODESolver(Sampler):
    """A fixed-step one-step method: a pure function ``step(field, x, t, t_next) -> x_next``."""

    @abstractmethod
    def step(
        self, field: VelocityField, x: Tensor, t: float, t_next: float, cond: Cond = None
    ) -> Tensor:
        """Advance ``x`` ``(B, *D)`` from time ``t`` to ``t_next`` (either direction)."""

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
        """One :meth:`step`, spending :attr:`stages` evaluations."""
        return StepOutput(self.step(field, x, t, t_next, cond), self.stages)


@dataclass
class AdaptiveStats:
    """Counters of an adaptive solve: function evaluations, accepted and rejected steps."""

    nfe: int = 0
    accepted: int = 0
    rejected: int = 0
    next_step: float | None = None  # step size carried from one output interval to the next


class AdaptiveSolver(Sampler):
    """An error-controlled solver that chooses its own steps between two output times."""

    adaptive = True

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

    def init_state(self) -> AdaptiveStats:
        """Fresh counters (they also carry the step size from one interval to the next)."""
        return AdaptiveStats()

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
        """Integrate one output interval with error control; ``state`` is the counters."""
        stats = state if state is not None else AdaptiveStats()
        before = stats.nfe
        x = self.solve_interval(field, x, t, t_next, cond, stats=stats)
        return StepOutput(x, stats.nfe - before, stats)

    def finish(self, state: Any, num_intervals: int) -> tuple[int, int]:
        """Accepted and rejected inner steps from the counters."""
        return state.accepted, state.rejected


# ---------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class SamplerConfig(ComponentConfig):
    """A sampler and its budget (``sample.solver``): ``kind`` names the sampler.

    ``num_steps()`` is the number of grid intervals the budget buys (1 for adaptive samplers,
    which choose their own inner steps).
    """

    #: Fields that set the budget rather than the sampler object (not passed to it).
    budget_fields: ClassVar[tuple[str, ...]] = ()

    def num_steps(self) -> int:
        """Grid intervals of this budget (adaptive samplers: one output interval)."""
        return 1


@dataclass(frozen=True)
class FixedStepConfig(SamplerConfig):
    """A fixed-step sampler spending exactly ``nfe`` evaluations per sample."""

    budget_fields: ClassVar[tuple[str, ...]] = ("nfe",)
    nfe: int = option(16, ge=1, doc="evaluations per sample; a multiple of the sampler's stages")

    def validate(self) -> None:
        """``nfe`` must be a multiple of the sampler's evaluations per step."""
        stages = SAMPLERS[self.kind].stages
        if self.nfe % stages:
            raise OptionError(
                "nfe",
                f"must be a multiple of {self.kind}'s {stages} evaluations per step, got "
                f"{self.nfe}; use one of {[stages * k for k in range(1, 5)]}, ...",
            )

    def num_steps(self) -> int:
        """``nfe / stages`` grid intervals."""
        return self.nfe // SAMPLERS[self.kind].stages


def _build_sampler(entry: Entry[Any], config: ComponentConfig) -> Sampler:
    assert isinstance(config, SamplerConfig)  # guaranteed by Registry.build
    kwargs = {k: v for k, v in config.options().items() if k not in config.budget_fields}
    return entry.target(**kwargs)


#: Samplers by name (``SAMPLERS["rk4"]`` is ``RK4``); a config also carries the budget.
SAMPLERS: Registry[Sampler, SamplerConfig] = Registry(
    "sampler", SamplerConfig, default="midpoint", build=_build_sampler
)


def steps_for_nfe(solver: Sampler, nfe: int) -> int:
    """Number of steps of a fixed-step ``solver`` that spends exactly ``nfe`` evaluations.

    Raises:
        TypeError: if ``solver`` is adaptive (it chooses its own NFE) or ``nfe`` is not an int.
        ValueError: if ``nfe < 1`` or not a multiple of the solver's stages.
    """
    from flowmatch.utils.checks import check_positive_int

    if not isinstance(solver, Sampler) or solver.adaptive:
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
