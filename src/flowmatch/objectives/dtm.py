"""Difference Transition Matching (DTM): discrete-time transitions, each sampled by a flow head.

Shaul, Singer, Gat & Lipman (2025), "Transition Matching", arXiv:2506.23589. The supervising
process is the linear interpolation ``X_t = (1 - t/T) X_0 + (t/T) X_T`` on ``T`` steps
(``X_0`` from the source, ``X_T`` data); the latent of a transition is the difference
``Y = X_T - X_0`` and the transition is ``X_{t+1} = X_t + Y / T``. A backbone reads ``X_t``
once per transition; a small head learns ``p(Y | X_t)`` by flow matching inside the transition:

    train:  k ~ U{0..T-1}, t = k / T, X = (1 - t) x0 + t x1, Y = x1 - x0
            h = backbone(X, t, c); s ~ U[0, 1], y0 ~ N(0, I), y_s = (1 - s) y0 + s Y
            L = |head(y_s, s, h) - (Y - y0)|^2
    sample: X ~ p0; for k = 0..T-1: h = backbone(X, k/T, c);
            Y = Euler_S(head(., ., h)) from y0 ~ N(0, I); X <- X + Y / T

Unlike a deterministic ODE step, a transition draws ``Y`` from (an approximation of) its
conditional law, so ``T = 2`` already keeps the data's spread (the Gaussian check in the
tests); as ``T -> inf`` ``E[Y | X_t]`` is the flow-matching velocity and DTM tends to FM.
The model is trained only on the grid ``k / T``: sample it with ``T`` transitions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from flowmatch.data.batch import Batch
from flowmatch.interfaces import Cond
from flowmatch.objectives.base import (
    OBJECTIVES,
    LossOutput,
    ObjectiveConfig,
    TrainingParts,
    TrainingStep,
    drop_condition,
)
from flowmatch.objectives.common import per_sample_mse
from flowmatch.objectives.flow_matching import check_fixed_source
from flowmatch.paths.schedules import LinearSchedule
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import OptionError, option

__all__ = ["DTMConfig", "DTMField", "DTMStep"]


@dataclass(frozen=True)
class DTMConfig(ObjectiveConfig):
    """Options of Difference Transition Matching."""

    steps: int = option(8, ge=1, doc="number T of transitions (the model is valid on t = k / T)")
    head_steps: int = option(4, ge=1, doc="Euler steps S of the flow head per transition")


class DTMField(nn.Module):
    """A DTM run as a transition field: ``X_{t'} = X_t + (t' - t) Y``, ``Y`` from the head.

    ``field(x, t, t_next, cond, noise)`` with times ``(B,)`` on the training grid ``k / T`` and
    ``t' - t = 1 / T``; ``noise`` ``(B, *D)`` standard normal is the head's starting point
    ``y0``, integrated with ``head_steps`` Euler steps of ``head(y, s, h)``,
    ``h = backbone(x, t, cond)``: one backbone and ``S`` head evaluations per transition.

    Args:
        backbone: ``(x, t, cond) -> h``.
        head: ``(y, s, h) -> (B, *D)``.
        steps: ``T``.
        head_steps: ``S``.

    Raises:
        ValueError: times off the training grid (other budgets need another ``T``).
    """

    field_kind: Literal["transition"] = "transition"

    def __init__(
        self,
        backbone: Callable[..., Tensor],
        head: Callable[..., Tensor],
        steps: int,
        head_steps: int = 4,
    ) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.steps = check_positive_int(steps, "steps")
        self.head_steps = check_positive_int(head_steps, "head_steps")

    def _check(self, t: float, t_next: float) -> None:
        k = t * self.steps
        if abs(k - round(k)) > 1e-5 or abs((t_next - t) * self.steps - 1) > 1e-5:
            raise ValueError(
                f"this DTM model was trained on T = {self.steps} transitions (times k / "
                f"{self.steps}); sample it with solver 'transition', nfe = {self.steps} on the "
                f"uniform grid, got a step from {t:.6g} to {t_next:.6g}"
            )

    def forward(
        self, x: Tensor, t: Tensor, t_next: Tensor, cond: Cond = None, noise: Tensor | None = None
    ) -> Tensor:
        """The state after one transition, ``(B, *D)``."""
        self._check(float(t[0]), float(t_next[0]))
        h = self.backbone(x, t, cond)
        y = torch.randn_like(x) if noise is None else noise
        ds = 1.0 / self.head_steps
        for j in range(self.head_steps):
            s = torch.full_like(t, j * ds)
            y = y + ds * self.head(y, s, h)
        return x + (t_next - t).reshape(-1, *([1] * (x.ndim - 1))).to(x) * y


class DTMStep(TrainingStep):
    """The DTM loss (see the module docstring) on the run's source and condition dropout.

    Args:
        parts: the run's parts (linear path, velocity prediction, independent coupling).
        config: the options.

    Raises:
        OptionError: another path, prediction or coupling (DTM's supervising process is the
            linear interpolation of independent pairs).
    """

    def __init__(self, parts: TrainingParts, config: DTMConfig) -> None:
        if not isinstance(parts.path.schedule, LinearSchedule):
            raise OptionError(
                "path.kind", "'dtm' uses the linear supervising process: set path.kind = 'linear'"
            )
        if parts.prediction != "velocity":
            raise OptionError(
                "path.prediction", "'dtm' learns the difference Y itself: use 'velocity'"
            )
        if parts.coupling.pairs:
            raise OptionError("coupling.kind", "'dtm' needs the independent coupling")
        check_fixed_source(parts.source, "dtm")
        self.source = parts.source
        self.steps, self.head_steps = config.steps, config.head_steps
        conditional = parts.cond.conditional
        self.cond_dropout = config.cond_dropout if conditional else 0.0
        self.null_label = parts.cond.num_classes if self.cond_dropout > 0 else None

    def __repr__(self) -> str:
        return f"DTMStep(T={self.steps}, head_steps={self.head_steps})"

    def field(self, modules: Mapping[str, nn.Module]) -> Any:
        """The transition field of the trained network."""
        net = modules["model"]
        backbone, head = getattr(net, "backbone", None), getattr(net, "head", None)
        if backbone is None or head is None:
            raise TypeError(
                f"'dtm' needs a network with backbone() and head() (model.kind = 'dtm'), got "
                f"{type(net).__name__}"
            )
        return DTMField(backbone, head, self.steps, self.head_steps)

    def __call__(
        self, modules: Mapping[str, nn.Module], batch: Batch, generator: torch.Generator
    ) -> LossOutput:
        """Per-sample losses ``(B,)`` of the flow head on ``Y``."""
        net = modules["model"]
        x1 = batch.x1
        b = x1.shape[0]
        x0 = self.source.sample_like(x1, generator) if batch.x0 is None else batch.x0
        k = torch.randint(0, self.steps, (b,), generator=generator, device=x1.device)
        t = k.to(x1.dtype) / self.steps
        tt = t.reshape(-1, *([1] * (x1.ndim - 1)))
        x = (1 - tt) * x0 + tt * x1
        y = x1 - x0
        cond = drop_condition(batch.cond, self.cond_dropout, self.null_label, generator)
        h = net(x, t, cond)  # the backbone (through DDP/compile when wrapped)
        s = torch.rand(b, generator=generator, device=x1.device, dtype=x1.dtype)
        y0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        ss = s.reshape(-1, *([1] * (x1.ndim - 1)))
        ys = (1 - ss) * y0 + ss * y
        head = getattr(getattr(net, "module", net), "head", None)
        if head is None:
            raise TypeError("'dtm' needs a network with backbone() and head() (model.kind = 'dtm')")
        return LossOutput(loss=per_sample_mse(head(ys, s, h), y - y0))


def _build_dtm(config: ObjectiveConfig, *, parts: TrainingParts) -> DTMStep:
    assert isinstance(config, DTMConfig)  # guaranteed by Registry.build
    return DTMStep(parts, config)


OBJECTIVES.add("dtm", DTMStep, config=DTMConfig, build=_build_dtm)
