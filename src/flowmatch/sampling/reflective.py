"""Reflective Flow Sampling for conditional models (RF-Sampling).

Zhou et al. (2026), "Reflective Flow Sampling" (arXiv 2603.06165; no code was available, the
procedure below follows the paper's summary and is [inferred] in its details): at selected
early steps, take a forward step with an *amplified* condition, invert it with a *weak*
condition, then take the ordinary step::

    x_f = x + h u_hi(x, t)            (strong: CFG scale beta_hi)
    x   = x_f - h u_lo(x_f, t + h)    (weak:   CFG scale beta_lo; repeat R times)
    x   = x + h u(x, t)               (ordinary: CFG scale ``scale``)

The reflection moves ``x`` by ``h (u_hi(x, t) - u_lo(x_f, t + h))``, a guidance-like
direction evaluated at two nearby points. Conditions are amplified through classifier-free
guidance of label-conditional models (a mixture of label embeddings would need the model's
internals). NFE counts network evaluations per sample: a two-branch CFG call counts 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from flowmatch.guidance.cfg import ClassifierFreeGuidance
from flowmatch.interfaces import Cond
from flowmatch.solvers.base import SAMPLERS, SamplerConfig, StepOutput
from flowmatch.solvers.context import ContextualSampler, SamplingContext
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import option

__all__ = ["ReflectiveConfig", "ReflectiveSampler"]


def _passes(scale: float) -> int:
    return 1 if scale in (0.0, 1.0) else 2


class ReflectiveSampler(ContextualSampler):
    """Euler steps with reflections (strong forward, weak inverse) before ``until``.

    Args:
        beta_hi: CFG scale of the amplified condition.
        beta_lo: CFG scale of the weak condition (0: unconditional).
        scale: CFG scale of the ordinary step (1: the plain conditional model).
        until: reflect on steps starting at ``t < until``.
        repeats: reflections per step ``R``.
        null_label: the null label (``None``: bound from the run).
    """

    order = 1
    stages = 1
    requires = ("null_label",)

    def __init__(
        self,
        beta_hi: float = 3.0,
        beta_lo: float = 0.0,
        scale: float = 1.0,
        until: float = 0.4,
        repeats: int = 1,
        *,
        null_label: int | None = None,
    ) -> None:
        self.beta_hi, self.beta_lo, self.scale = float(beta_hi), float(beta_lo), float(scale)
        if not 0.0 <= until <= 1.0:
            raise ValueError(f"until must be in [0, 1], got {until}")
        self.until, self.repeats = float(until), check_positive_int(repeats, "repeats")
        self.null_label = null_label

    def __repr__(self) -> str:
        return (
            f"ReflectiveSampler(beta_hi={self.beta_hi}, beta_lo={self.beta_lo}, scale={self.scale}, "
            f"until={self.until}, repeats={self.repeats})"
        )

    def bind(self, context: SamplingContext) -> ReflectiveSampler:
        """A copy with the run's null label (conditional runs only)."""
        null = self.null_label if self.null_label is not None else context.null_label
        if null is None:
            raise ValueError(
                f"reflective sampling needs a label-conditional model; {context.name} is not"
            )
        return ReflectiveSampler(
            self.beta_hi, self.beta_lo, self.scale, self.until, self.repeats, null_label=null
        )

    def nfe_per_step(self, t: float) -> int:
        """Network evaluations per sample of a step starting at ``t``."""
        reflect = self.repeats * (_passes(self.beta_hi) + _passes(self.beta_lo))
        return _passes(self.scale) + (reflect if t < self.until else 0)

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
        """Reflections (before ``until``), then an Euler step of the ordinary field."""
        if self.null_label is None:
            raise ValueError("reflective sampling needs the null label: pass null_label= or bind")
        h, b = t_next - t, x.shape[0]
        tt, tn = x.new_full((b,), t), x.new_full((b,), t_next)
        if t < self.until:
            hi = ClassifierFreeGuidance(field, self.beta_hi, self.null_label)
            lo = ClassifierFreeGuidance(field, self.beta_lo, self.null_label)
            for _ in range(self.repeats):
                x_f = x + h * hi(x, tt, cond)
                x = x_f - h * lo(x_f, tn, cond)
        base = ClassifierFreeGuidance(field, self.scale, self.null_label)
        return StepOutput(x + h * base(x, tt, cond), self.nfe_per_step(t))


@dataclass(frozen=True)
class ReflectiveConfig(SamplerConfig):
    """Options of reflective flow sampling (Euler steps)."""

    budget_fields: ClassVar[tuple[str, ...]] = ("steps",)
    steps: int = option(16, ge=1, doc="Euler steps")
    beta_hi: float = option(3.0, doc="CFG scale of the amplified condition")
    beta_lo: float = option(0.0, doc="CFG scale of the weak condition (0: unconditional)")
    scale: float = option(1.0, doc="CFG scale of the ordinary step")
    until: float = option(0.4, ge=0, le=1, doc="reflect on steps that start before this time")
    repeats: int = option(1, ge=1, doc="reflections per step")

    def num_steps(self) -> int:
        """``steps`` grid intervals."""
        return self.steps


SAMPLERS.add("reflective", ReflectiveSampler, config=ReflectiveConfig)
