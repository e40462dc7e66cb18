"""FlowTurbo: a lightweight velocity refiner and its Heun / pseudo-corrector / refiner sampler.

Zhao, Shi et al. (2024), "FlowTurbo: Towards Real-time Flow-Based Image Generation with
Velocity Refiner" (NeurIPS). Late in sampling the velocity changes slowly, so a tiny network
can predict its change. Training (Sec. 3.2, the repository's ``training_losses``) on a frozen
predictor ``v``::

    x_t on the path, v_t = v(x_t, t);   dt ~ U[0, max_dt];   x' = x_t + dt v_t
    L = || v_t + r(x', t + dt, v_t) - v(x', t + dt) ||^2

Sampling on a grid of ``n_heun + n_pseudo + n_refine`` steps (Sec. 3.3):

1. ``n_heun`` Heun steps (2 NFE each);
2. ``n_pseudo`` pseudo-corrector steps: Heun whose velocity at the predicted point is reused as
   the next step's first velocity (1 NFE per step after the first);
3. ``n_refine`` refiner steps (no predictor NFE): ``d_i = d + r(x_i, t_i, d)``,
   ``x~ = x_i + h d_i``, ``d' = d_i + r(x~, t_{i+1}, d_i)``, ``x_{i+1} = x_i + h (d_i + d') / 2``,
   with ``d`` the previous step's last velocity.

``StepOutput.nfe`` counts predictor evaluations only; the refiner's are cheap by design and
show in wall time. The refiner is only trained for small steps late in sampling: keep the
refiner steps at the data end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from flowmatch.data.batch import Batch
from flowmatch.interfaces import Cond
from flowmatch.objectives.base import LossOutput, TrainingStep
from flowmatch.paths.affine import AffinePath
from flowmatch.solvers.base import SAMPLERS, SamplerConfig, StepOutput
from flowmatch.solvers.context import ContextualSampler, SamplingContext
from flowmatch.sources import Source
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import OptionError, option

__all__ = ["FlowTurboSampler", "RefinerStep", "VelocityRefiner"]


class VelocityRefiner(nn.Module):
    """``r(x, t, v) -> dv``: an MLP on ``[x, v, time features]`` (any sample shape, flattened).

    The last layer starts at zero, so an untrained refiner returns ``v`` unchanged.

    Args:
        sample_shape: shape ``D`` of one sample.
        hidden: width.
        depth: hidden layers (FlowTurbo's refiner is one block deep).
        time_features: number of ``sin/cos(pi k t)`` pairs.
    """

    def __init__(
        self,
        sample_shape: tuple[int, ...],
        hidden: int = 64,
        depth: int = 1,
        time_features: int = 4,
    ) -> None:
        super().__init__()
        self.sample_shape = tuple(sample_shape)
        self.config = {"hidden": hidden, "depth": depth, "time_features": time_features}
        dim = math.prod(self.sample_shape)
        self.freqs: Tensor
        self.register_buffer(
            "freqs", math.pi * torch.arange(1, time_features + 1, dtype=torch.float32)
        )
        layers: list[nn.Module] = []
        width = 2 * dim + 2 * time_features + 1
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        last = nn.Linear(width, dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, x: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """The velocity change ``(B, *D)`` at ``x`` ``(B, *D)``, ``t`` ``(B,)`` given ``v``."""
        b = x.shape[0]
        angles = t[:, None].to(x.dtype) * self.freqs.to(x.dtype)
        feats = [
            x.reshape(b, -1),
            v.reshape(b, -1),
            t[:, None].to(x.dtype),
            angles.sin(),
            angles.cos(),
        ]
        return self.net(torch.cat(feats, 1)).reshape(x.shape)


class RefinerStep(TrainingStep):
    """Train a :class:`VelocityRefiner` (``"refiner"``) on a frozen predictor (``"model"``).

    Args:
        field: ``field(modules) -> velocity field`` of the frozen predictor (the run's field).
        path: the predictor's path.
        source: its source.
        max_dt: largest refinement step ``dt ~ U[0, max_dt]`` (FlowTurbo: 0.12).
    """

    trains = ("refiner",)
    uses = ("model",)

    def __init__(self, field: Any, path: AffinePath, source: Source, max_dt: float = 0.12) -> None:
        if not 0 < max_dt < 1:
            raise ValueError(f"max_dt must be in (0, 1), got {max_dt}")
        self.predictor, self.path, self.source, self.max_dt = field, path, source, float(max_dt)

    def __call__(
        self, modules: Mapping[str, nn.Module], batch: Batch, generator: torch.Generator
    ) -> LossOutput:
        """Per-sample refiner loss ``(B,)``."""
        x1, cond = batch.x1, batch.cond
        b = x1.shape[0]
        x0 = self.source.sample_like(x1, generator)
        u = torch.rand(2, b, generator=generator, device=x1.device, dtype=x1.dtype)
        dt = self.max_dt * u[1]
        t = (1 - dt) * u[0]  # t + dt stays in [0, 1]
        field = self.predictor(modules)
        with torch.no_grad():
            xt = self.path.sample(x0, x1, t).xt
            v = field(xt, t, cond)
            shape = (b, *([1] * (x1.ndim - 1)))
            x_next = xt + dt.reshape(shape) * v
            target = field(x_next, t + dt, cond)
        pred = v + modules["refiner"](x_next, t + dt, v)
        loss = (pred - target).square().reshape(b, -1).mean(1)
        return LossOutput(loss)

    def field(self, modules: Mapping[str, nn.Module]) -> Any:
        """The frozen predictor's field (the refiner is sampled by ``FlowTurboSampler``)."""
        return self.predictor(modules)


class FlowTurboSampler(ContextualSampler):
    """FlowTurbo's Heun -> pseudo-corrector -> refiner schedule (module docstring).

    Args:
        n_heun: Heun steps first.
        n_pseudo: pseudo-corrector steps next.
        n_refine: refiner steps last.
        refiner: the trained refiner (``None``: bound from the run's ``refiner`` module).

    Raises:
        ValueError: no step at all; at a step: no refiner for refiner steps, or a grid with a
            different number of steps.
    """

    order = 2
    stages = 2
    requires = ("refiner",)

    def __init__(
        self, n_heun: int = 1, n_pseudo: int = 5, n_refine: int = 3, *, refiner: Any = None
    ) -> None:
        for name, v in (("n_heun", n_heun), ("n_pseudo", n_pseudo), ("n_refine", n_refine)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        check_positive_int(n_heun + n_pseudo + n_refine, "n_heun + n_pseudo + n_refine")
        self.n_heun, self.n_pseudo, self.n_refine = n_heun, n_pseudo, n_refine
        self.refiner = refiner

    @property
    def num_steps(self) -> int:
        """Grid intervals of the schedule."""
        return self.n_heun + self.n_pseudo + self.n_refine

    def __repr__(self) -> str:
        return f"FlowTurboSampler({self.n_heun}, {self.n_pseudo}, {self.n_refine})"

    def bind(self, context: SamplingContext) -> FlowTurboSampler:
        """A copy with the run's refiner (required when ``n_refine > 0``)."""
        refiner = self.refiner if self.refiner is not None else context.modules.get("refiner")
        if refiner is None and self.n_refine:
            raise ValueError(
                f"flowturbo needs a trained refiner for its {self.n_refine} refiner steps: run "
                f"`flowmatch refine RUN` first ({context.name} has none), or set n_refine = 0"
            )
        return FlowTurboSampler(self.n_heun, self.n_pseudo, self.n_refine, refiner=refiner)

    def init_state(self) -> Any:
        """``(step index, last velocity or None)``."""
        return (0, None)

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
        """One step of the kind the step index selects."""
        k, d = state if state is not None else (0, None)
        if k >= self.num_steps:
            raise ValueError(f"flowturbo has {self.num_steps} steps; the grid has more")
        h, b = t_next - t, x.shape[0]
        tt, tn = x.new_full((b,), t), x.new_full((b,), t_next)
        nfe = 0
        if k < self.n_heun:  # Heun
            d = field(x, tt, cond)
            d2 = field(x + h * d, tn, cond)
            return StepOutput(x + 0.5 * h * (d + d2), 2, (k + 1, None))
        if k < self.n_heun + self.n_pseudo:  # pseudo corrector: reuse the predicted point's v
            if d is None:
                d, nfe = field(x, tt, cond), 1
            d2 = field(x + h * d, tn, cond)
            return StepOutput(x + 0.5 * h * (d + d2), nfe + 1, (k + 1, d2))
        if self.refiner is None:
            raise ValueError("flowturbo refiner steps need a refiner (see bind)")
        if d is None:
            d, nfe = field(x, tt, cond), 1
        d = d + self.refiner(x, tt, d)
        d2 = d + self.refiner(x + h * d, tn, d)
        return StepOutput(x + 0.5 * h * (d + d2), nfe, (k + 1, d2))


@dataclass(frozen=True)
class FlowTurboConfig(SamplerConfig):
    """Options of FlowTurbo sampling (the step counts are the budget)."""

    n_heun: int = option(1, ge=0, doc="Heun steps (2 NFE each)")
    n_pseudo: int = option(5, ge=0, doc="pseudo-corrector steps (1 NFE each after the first)")
    n_refine: int = option(3, ge=0, doc="refiner steps (no predictor NFE)")
    budget_fields: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        """At least one step."""
        if self.n_heun + self.n_pseudo + self.n_refine < 1:
            raise OptionError("n_heun", "n_heun + n_pseudo + n_refine must be >= 1")

    def num_steps(self) -> int:
        """``n_heun + n_pseudo + n_refine`` grid intervals."""
        return self.n_heun + self.n_pseudo + self.n_refine


SAMPLERS.add("flowturbo", FlowTurboSampler, config=FlowTurboConfig)
