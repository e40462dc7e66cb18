"""Interval-splitting objectives without JVP: SplitMeanFlow and progressive self-distillation.

Both rest on the semigroup property of the flow map, for ``s <= m <= t``::

    X(x, s, t) = X(X(x, s, m), m, t)
    (t - s) u(x, s, t) = (m - s) u(x, s, m) + (t - m) u(x_m, m, t),   x_m = x + (m - s) u(x, s, m)

(the additivity of the integral of the velocity; SplitMeanFlow, Guo et al. 2025, in the
noise-level convention with ``s = 1 - t_MF``; Boffi, Albergo & Vanden-Eijnden 2025, "PSD").
The right-hand side is evaluated without gradients and regressed onto; the diagonal ``s = t``
is trained by plain flow matching (without it the identity admits trivial solutions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from flowmatch.data.batch import Batch
from flowmatch.fewstep.base import (
    TwoTimeConfig,
    TwoTimeStep,
    average_velocity,
    distance,
    draw_time_pair,
    teacher_velocity,
    unwrap,
)
from flowmatch.interfaces import Cond
from flowmatch.objectives.base import OBJECTIVES, LossOutput, ObjectiveConfig, TrainingParts
from flowmatch.paths.affine import AffinePath
from flowmatch.sources import GaussianSource, Source
from flowmatch.times.samplers import TimeSampler, UniformTime
from flowmatch.utils.options import option
from flowmatch.utils.tensor import expand_like


@dataclass(frozen=True)
class SplitMeanFlowConfig(TwoTimeConfig):
    """Options of SplitMeanFlow (``ratio``: share of split samples; the rest is the FM boundary)."""

    ratio: float = option(0.5, ge=0, le=1, doc="fraction of the batch with s != t (split)")


@dataclass(frozen=True)
class ProgressiveConfig(TwoTimeConfig):
    """Options of progressive flow-map self-distillation (PSD)."""

    ratio: float = option(0.5, ge=0, le=1, doc="fraction of the batch with s != t (split)")


def split_target(
    net: nn.Module, x: Tensor, s: Tensor, t: Tensor, lam: Tensor, cond: Cond
) -> Tensor:
    """``lam u(x, s, m) + (1 - lam) u(x_m, m, t)`` with ``m = s + lam (t - s)``, no gradients.

    ``lam = (m - s) / (t - s)``: the two sub-intervals' average velocities weighted by their
    lengths (SplitMeanFlow, Guo et al. 2025).
    """
    with torch.no_grad():
        m = s + lam * (t - s)
        u1 = average_velocity(net, x, s, m, cond)
        xm = x + expand_like(m - s, x) * u1
        u2 = average_velocity(net, xm, m, t, cond)
        w = expand_like(lam, x)
        return w * u1 + (1 - w) * u2


class _SplittingStep(TwoTimeStep):
    """``u_theta(x_s, s, t)`` vs ``sg(split target)`` on the interval share, FM on the diagonal."""

    #: ``"velocity"``: error in average velocity (SplitMeanFlow); ``"map"``: in the map
    #: ``X = x + (t - s) u``, i.e. weighted by ``(t - s)^2`` (PSD).
    space: ClassVar[Literal["velocity", "map"]] = "velocity"

    def __init__(
        self,
        path: AffinePath | None = None,
        time_sampler: TimeSampler | None = None,
        source: Source | None = None,
        *,
        ratio: float = 0.5,
        loss: str = "mse",
        huber_c: float = 1e-3,
        cond_dropout: float = 0.0,
        null_label: int | None = None,
    ) -> None:
        self.path = path if path is not None else AffinePath()
        self.time_sampler = time_sampler if time_sampler is not None else UniformTime()
        self.source = source if source is not None else GaussianSource()
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        distance(torch.zeros(1, 1), loss, huber_c)  # validates the loss name
        self.ratio, self.loss, self.huber_c = float(ratio), loss, float(huber_c)
        self.cond_dropout, self.null_label = float(cond_dropout), null_label

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, {self.time_sampler!r}, ratio={self.ratio})"

    def __call__(
        self, modules: Mapping[str, nn.Module], batch: Batch, generator: torch.Generator
    ) -> LossOutput:
        """Per-sample loss ``(B,)``: splitting on ``s != t`` samples, FM where ``s = t``."""
        wrapped = modules[self.trains[0]]
        net = unwrap(wrapped)
        p = draw_time_pair(
            batch,
            self.path,
            self.source,
            self.time_sampler,
            self.ratio,
            generator,
            cond_dropout=self.cond_dropout,
            null_label=self.null_label,
        )
        lam = torch.rand(p.s.shape, generator=generator, device=p.s.device, dtype=p.s.dtype)
        v = teacher_velocity(modules, p.xs, p.s, p.cond)
        boundary = p.v if v is None else v
        target = split_target(net, p.xs, p.s, p.t, lam, p.cond)
        target = torch.where(expand_like(p.interval, p.xs), target, boundary)
        u = wrapped(p.xs, p.s, p.cond, t_end=p.t)
        diff = u - target
        if self.space == "map":
            diff = torch.where(
                expand_like(p.interval, diff), expand_like(p.t - p.s, diff) * diff, diff
            )
        loss = distance(diff, self.loss, self.huber_c)
        frac = p.interval.float().mean().clamp_min(1e-12)
        logs = {"split": (loss * p.interval).mean().detach() / frac}
        return LossOutput(loss=loss, logs=logs)


def _builder(cls: type[_SplittingStep]):  # type: ignore[no-untyped-def]
    def build(config: ObjectiveConfig, *, parts: TrainingParts) -> _SplittingStep:
        assert isinstance(config, TwoTimeConfig)  # guaranteed by Registry.build
        dropout = config.cond_dropout if parts.cond.conditional else 0.0
        return cls(
            parts.path,
            parts.time_sampler,
            parts.source,
            ratio=config.ratio,
            loss=config.loss,
            huber_c=config.huber_c,
            cond_dropout=dropout,
            null_label=parts.cond.num_classes,
        )

    return build


class SplitMeanFlowStep(_SplittingStep):
    """SplitMeanFlow (Guo et al. 2025): ``|| u(x_s, s, t) - sg(lam u1 + (1 - lam) u2) ||^2``.

    ``lam ~ U(0, 1)``, ``m = s + lam (t - s)``, ``u1 = u(x_s, s, m)``, ``u2 = u(x_m, m, t)``
    with ``x_m = x_s + (m - s) u1`` (two gradient-free forwards, no JVP: works with any
    operator and hardware). On the ``1 - ratio`` share with ``s = t`` the loss is flow matching
    ``|| u(x_s, s, s) - v ||^2`` with the path's conditional velocity, or the frozen
    ``"teacher"``'s velocity when there is one (distillation).

    Example:
        >>> import torch
        >>> from flowmatch.data import Batch
        >>> from flowmatch.models import MLP
        >>> net = MLP(2, hidden=16, depth=2, time_inputs=2)
        >>> out = SplitMeanFlowStep()({"model": net}, Batch(torch.randn(8, 2)),
        ...                           torch.Generator().manual_seed(0))
        >>> out.loss.shape
        torch.Size([8])
    """

    space = "velocity"


class ProgressiveStep(_SplittingStep):
    """Progressive flow-map self-distillation, PSD (Boffi, Albergo & Vanden-Eijnden 2025).

    ``|| X(x_s, s, t) - sg(X(X(x_s, s, m), m, t)) ||^2`` with ``m`` uniform in ``[s, t]``: the
    splitting identity measured on the map, i.e. SplitMeanFlow's error weighted by
    ``(t - s)^2``; flow matching (or the teacher's velocity) on the diagonal.
    """

    space = "map"


OBJECTIVES.add(
    "splitmeanflow",
    SplitMeanFlowStep,
    config=SplitMeanFlowConfig,
    build=_builder(SplitMeanFlowStep),
)
OBJECTIVES.add(
    "flowmap_psd", ProgressiveStep, config=ProgressiveConfig, build=_builder(ProgressiveStep)
)
