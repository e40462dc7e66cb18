"""Flow maps by self-distillation: Lagrangian (LSD) and Eulerian (ESD) objectives.

Boffi, Albergo & Vanden-Eijnden (2025), "How to build a consistency model: learning flow maps
via self-distillation". The flow map ``X(x, s, t) = x + (t - s) u(x, s, t)`` of the velocity
``b`` is characterised by (our convention, ``t = 0`` noise)::

    Lagrangian : d/dt X(x, s, t) = b(X(x, s, t), t)
    Eulerian   : d/ds X(x, s, t) + grad_x X(x, s, t) b(x, s) = 0

and the diagonal ``u(x, t, t) = b(x, t)`` is trained by flow matching. Self-distillation uses
the network's own diagonal for ``b`` (stop-gradient), read from its **EMA weights** by default
(``self_teacher = "ema"``, the authors' separate teacher parameters): an average kept for it
by the trainer with decay ``teacher_decay`` from step 0 (no warm-up), apart from the EMA the
run samples with. With the current weights LSD's target ``b(X(x, s, t), t)`` feeds the map's own errors back and, on the
checkerboard, diverged in 3 of 3 seeds at lr 1e-3 and at 1e-4; with the run's own EMA, which
follows the weights early (its warm-up), 2 of 3 seeds still diverged (docs/benchmarks.md). With a frozen
``"teacher"`` module its velocity is ``b`` (flow-map distillation of a pretrained run). The progressive variant (PSD)
lives in :mod:`flowmatch.fewstep.splitting`.

Both losses differentiate through a forward-mode JVP (the derivative is the prediction, not a
stop-gradient target as in MeanFlow), so they run on the plain module; DDP is refused (its
gradient synchronisation needs the wrapper's forward).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from flowmatch.data.batch import Batch
from flowmatch.fewstep.base import (
    TwoTimeConfig,
    TwoTimeStep,
    distance,
    draw_time_pair,
    teacher_velocity,
    unwrap,
)
from flowmatch.interfaces import Cond
from flowmatch.objectives.base import (
    OBJECTIVES,
    LossOutput,
    ObjectiveConfig,
    TrainingParts,
    ema_key,
)
from flowmatch.paths.affine import AffinePath
from flowmatch.sources import GaussianSource, Source
from flowmatch.times.samplers import TimeSampler, UniformTime
from flowmatch.utils.checks import check_in_choices
from flowmatch.utils.options import option
from flowmatch.utils.tensor import expand_like

_SELF_TEACHER_DOC = (
    "weights of the self-teacher b = u(., t, t): a slow average of the weights kept for it "
    "('ema', needs train.ema_decay) or the current weights ('current'); unused with a teacher"
)


@dataclass(frozen=True)
class LagrangianConfig(TwoTimeConfig):
    """Options of Lagrangian flow-map self-distillation (LSD)."""

    ratio: float = option(0.5, ge=0, le=1, doc="fraction of the batch with s != t")
    self_teacher: Literal["ema", "current"] = option("ema", doc=_SELF_TEACHER_DOC)
    teacher_decay: float = option(
        0.999, gt=0, lt=1, doc="decay of the self-teacher's average (from step 0, no warm-up)"
    )


@dataclass(frozen=True)
class EulerianConfig(TwoTimeConfig):
    """Options of Eulerian flow-map self-distillation (ESD)."""

    ratio: float = option(0.5, ge=0, le=1, doc="fraction of the batch with s != t")
    self_teacher: Literal["ema", "current"] = option("current", doc=_SELF_TEACHER_DOC)
    teacher_decay: float = option(
        0.999, gt=0, lt=1, doc="decay of the self-teacher's average (from step 0, no warm-up)"
    )


def plain_module(wrapped: Any, method: str) -> Any:
    """The plain module for a loss that differentiates through a JVP (DDP refused).

    Raises:
        TypeError: ``wrapped`` is a ``DistributedDataParallel`` module.
    """
    net = unwrap(wrapped)
    inner = getattr(wrapped, "_orig_mod", wrapped)
    if isinstance(inner, nn.parallel.DistributedDataParallel):
        raise TypeError(
            f"{method} differentiates through a forward-mode JVP, which DDP cannot synchronise; "
            "train it on one process (or use meanflow / splitmeanflow / flowmap_psd under DDP)"
        )
    return net


def lagrangian_terms(
    net: Any, x: Tensor, s: Tensor, t: Tensor, cond: Cond
) -> tuple[Tensor, Tensor]:
    """``(X(x, s, t), d/dt X(x, s, t))`` by one JVP in ``t`` (tangents ``(0, 0, 1)``), with grads."""

    def x_fn(t_: Tensor) -> Tensor:
        return x + expand_like(t_ - s, x) * net(x, s, cond, t_end=t_)

    xt, dxdt = torch.func.jvp(x_fn, (t,), (torch.ones_like(t),))[:2]
    return xt, dxdt


def eulerian_residual(
    net: Any, x: Tensor, s: Tensor, t: Tensor, b: Tensor, cond: Cond
) -> tuple[Tensor, Tensor]:
    """``(u, d/ds X + grad_x X b)`` with ``d/ds X + grad_x X b = b - u + (t - s) du``.

    ``du = b . grad_x u + partial_s u`` is one JVP with tangents ``(b, 1, 0)``; gradients flow
    through both terms.
    """

    def u_fn(x_: Tensor, s_: Tensor) -> Tensor:
        return net(x_, s_, cond, t_end=t)

    u, du = torch.func.jvp(u_fn, (x, s), (b, torch.ones_like(s)))[:2]
    return u, b - u + expand_like(t - s, x) * du


class _SelfDistillationStep(TwoTimeStep):
    variant: ClassVar[Literal["lagrangian", "eulerian"]]
    default_self_teacher: ClassVar[str]

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
        self_teacher: str | None = None,
        teacher_decay: float = 0.999,
    ) -> None:
        self.path = path if path is not None else AffinePath()
        self.time_sampler = time_sampler if time_sampler is not None else UniformTime()
        self.source = source if source is not None else GaussianSource()
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        distance(torch.zeros(1, 1), loss, huber_c)  # validates the loss name
        self.ratio, self.loss, self.huber_c = float(ratio), loss, float(huber_c)
        self.cond_dropout, self.null_label = float(cond_dropout), null_label
        chosen = self.default_self_teacher if self_teacher is None else self_teacher
        self.self_teacher = check_in_choices(chosen, ["ema", "current"], "self_teacher")
        self.reads_ema = ("model",) if self.self_teacher == "ema" else ()
        if not 0.0 < teacher_decay < 1.0:
            raise ValueError(f"teacher_decay must be in (0, 1), got {teacher_decay!r}")
        self.teacher_decay = float(teacher_decay)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, {self.time_sampler!r}, ratio={self.ratio}, "
            f"self_teacher={self.self_teacher!r})"
        )

    def _self_teacher(self, modules: Mapping[str, nn.Module], net: Any) -> Any:
        """The module whose diagonal is ``b``: the EMA weights or the trained net itself."""
        if self.self_teacher == "current":
            return net
        key = ema_key(self.trains[0])
        ema = modules.get(key)
        if ema is None:
            raise ValueError(
                f"self_teacher='ema' reads the EMA weights as modules[{key!r}] (the Trainer "
                "passes them); pass them, or use self_teacher='current'"
            )
        return ema

    def __call__(
        self, modules: Mapping[str, nn.Module], batch: Batch, generator: torch.Generator
    ) -> LossOutput:
        """Per-sample loss ``(B,)``: the LSD/ESD residual where ``s != t``, FM where ``s = t``."""
        net = plain_module(modules[self.trains[0]], f"flowmap_{self.variant[0]}sd")
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
        v = teacher_velocity(modules, p.xs, p.s, p.cond)
        diag = p.v if v is None else v  # the flow-matching target of the diagonal share
        use = expand_like(p.interval, p.xs)
        if self.variant == "lagrangian":
            xt, dxdt = lagrangian_terms(net, p.xs, p.s, p.t, p.cond)
            b = teacher_velocity(modules, xt.detach(), p.t, p.cond)
            if b is None:
                with torch.no_grad():
                    b = self._self_teacher(modules, net)(xt.detach(), p.t, p.cond, t_end=p.t)
            # On the diagonal d/dt X = u(x, s, s): the same formula is flow matching there.
            diff = dxdt - torch.where(use, b, diag)
        else:
            b = v
            if b is None:
                with torch.no_grad():
                    b = self._self_teacher(modules, net)(p.xs, p.s, p.cond, t_end=p.s)
            u, residual = eulerian_residual(net, p.xs, p.s, p.t, b, p.cond)
            diff = torch.where(use, residual, u - diag)
        loss = distance(diff, self.loss, self.huber_c)
        frac = p.interval.float().mean().clamp_min(1e-12)
        return LossOutput(loss=loss, logs={"distill": (loss * p.interval).mean().detach() / frac})


def _builder(cls: type[_SelfDistillationStep]):  # type: ignore[no-untyped-def]
    def build(config: ObjectiveConfig, *, parts: TrainingParts) -> _SelfDistillationStep:
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
            self_teacher=config.self_teacher,  # type: ignore[attr-defined]
            teacher_decay=config.teacher_decay,  # type: ignore[attr-defined]
        )

    return build


class LagrangianStep(_SelfDistillationStep):
    """LSD: ``|| d/dt X(x_s, s, t) - sg(b(X(x_s, s, t), t)) ||^2`` + flow matching on ``s = t``.

    ``b`` is the network's own diagonal ``u(., t, t)`` (self-distillation) or the frozen
    teacher's velocity. No spatial derivative enters the loss (the paper's most stable
    variant); the time derivative is one JVP in ``t``.
    """

    variant = "lagrangian"
    default_self_teacher = "ema"


class EulerianStep(_SelfDistillationStep):
    """ESD: ``|| d/ds X(x_s, s, t) + grad_x X(x_s, s, t) sg(b(x_s, s)) ||^2`` + FM on ``s = t``.

    Equal to ``b - u + (t - s)(b . grad_x u + partial_s u)``: MeanFlow's identity with the
    derivative differentiated instead of stop-gradient (the paper reports it as the least
    stable variant).
    """

    variant = "eulerian"
    default_self_teacher = "current"


OBJECTIVES.add(
    "flowmap_lsd", LagrangianStep, config=LagrangianConfig, build=_builder(LagrangianStep)
)
OBJECTIVES.add("flowmap_esd", EulerianStep, config=EulerianConfig, build=_builder(EulerianStep))
