"""Shared pieces of the few-step objectives: (s, t) draws, losses, teacher velocities, JVPs.

Convention (the library's): time runs from ``0`` (source/noise) to ``1`` (data); a flow map
``X(x, s, t)`` moves a state at time ``s`` to time ``t`` (``s <= t`` when sampling), and a
two-time network ``u(x, s, t)`` is the average velocity over ``[s, t]``,
``X(x, s, t) = x + (t - s) u(x, s, t)``. Papers written in the noise-level convention
(MeanFlow, SplitMeanFlow, SANA-Sprint: ``t = 1`` is noise) are converted here with
``s_ours = 1 - t_theirs``; each objective's docstring states its identity in our convention.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from flowmatch.data.batch import Batch
from flowmatch.interfaces import Cond, cond_batch_size
from flowmatch.models.flow_map import AverageVelocityMap
from flowmatch.objectives.base import ObjectiveConfig, TrainingStep, drop_condition
from flowmatch.paths.affine import AffinePath
from flowmatch.sources import Source
from flowmatch.times.samplers import TimeSampler
from flowmatch.utils.checks import check_batch
from flowmatch.utils.options import option
from flowmatch.utils.tensor import expand_like

#: Loss distances of the few-step objectives.
LOSSES: tuple[str, ...] = ("mse", "pseudo_huber")

#: What a flow-map objective's runs need (merged under a run's own settings by
#: ``flowmatch.api.resolve_config``): a two-time network that is smooth in time (its time
#: derivatives enter the targets; with the default embedding scale 1000 MeanFlow's 1-NFE W2 on
#: the checkerboard is 1.78 instead of 0.54 after 2000 steps), the flow-map sampler at one
#: step, and eval budgets that make sense for it.
FLOW_MAP_RUN_DEFAULTS: Mapping[str, Any] = {
    "model": {"time_inputs": 2, "time_scale": 1.0},
    "sample": {"solver": {"kind": "flow_map", "nfe": 1}},
    "eval": {"nfe": [1, 2, 4], "solvers": ["flow_map"]},
}


@dataclass(frozen=True)
class FewStepConfig(ObjectiveConfig):
    """Options shared by the few-step objectives.

    ``run_defaults`` are run settings the objective needs (e.g. a two-time model); they apply
    unless the run's config sets them itself.
    """

    run_defaults: ClassVar[Mapping[str, Any]] = {}

    loss: Literal["mse", "pseudo_huber"] = option(
        "mse", doc="distance: squared error, or pseudo-Huber sqrt(d^2 + c^2) - c per element"
    )
    huber_c: float = option(1e-3, gt=0, doc="pseudo-Huber constant c (data-scale dependent)")
    init_from_teacher: bool = option(
        True, doc="distill: start the student from the teacher's weights"
    )


@dataclass(frozen=True)
class TwoTimeConfig(FewStepConfig):
    """Options of objectives over pairs of times ``s <= t`` (two-time networks)."""

    run_defaults: ClassVar[Mapping[str, Any]] = FLOW_MAP_RUN_DEFAULTS

    ratio: float = option(
        0.25,
        ge=0,
        le=1,
        doc="fraction of the batch with s != t; the rest (s = t) is plain flow matching",
    )


def distance(diff: Tensor, kind: str, c: float) -> Tensor:
    """Per-sample distance ``(B,)`` of ``diff`` ``(B, *D)``: mean over features.

    ``"mse"``: ``mean(d^2)``; ``"pseudo_huber"``: ``mean(sqrt(d^2 + c^2) - c)`` (Song & Dhariwal
    2023, "Improved Techniques for Training Consistency Models"; elementwise as Rectified Diffusion, Wang et al. 2024).
    """
    d = diff.float() if diff.dtype in (torch.float16, torch.bfloat16) else diff
    if kind == "mse":
        per = d.square()
    elif kind == "pseudo_huber":
        per = torch.sqrt(d.square() + c * c) - c
    else:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {kind!r}")
    return per.reshape(per.shape[0], -1).mean(1)


def unwrap(module: Any) -> Any:
    """The plain module under ``DistributedDataParallel`` and ``torch.compile`` wrappers.

    Forward-mode AD (``torch.func.jvp``) runs on the plain module: DDP's forward hooks and
    compiled graphs do not support it.
    """
    seen = 0
    while seen < 8:
        if hasattr(module, "_orig_mod"):  # torch.compile
            module = module._orig_mod
        elif isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        else:
            return module
        seen += 1
    return module


def is_wrapped(module: Any) -> bool:
    """Whether ``module`` is DDP- or compile-wrapped (its forward is not the plain module's)."""
    return unwrap(module) is not module


@dataclass(frozen=True)
class TimePair:
    """A draw of ``(x_s, s, t)`` on the path with the conditional velocity at ``(x_s, s)``.

    Attributes:
        x0: source samples ``(B, *D)``.
        x1: data samples ``(B, *D)``.
        s: start times ``(B,)``.
        t: end times ``(B,)``, ``t >= s``; ``t == s`` on the flow-matching part of the batch.
        xs: ``alpha_s x1 + sigma_s x0``.
        v: the conditional velocity ``d_alpha_s x1 + d_sigma_s x0`` at ``(xs, s)``.
        interval: ``(B,)`` bool, True where ``t != s`` was drawn.
        cond: the batch's condition after classifier-free dropout.
    """

    x0: Tensor
    x1: Tensor
    s: Tensor
    t: Tensor
    xs: Tensor
    v: Tensor
    interval: Tensor
    cond: Cond


def draw_time_pair(
    batch: Batch,
    path: AffinePath,
    source: Source,
    time_sampler: TimeSampler,
    ratio: float,
    generator: torch.Generator,
    *,
    cond_dropout: float = 0.0,
    null_label: int | None = None,
) -> TimePair:
    """Two times from ``time_sampler``, sorted to ``s <= t``; ``t = s`` on a ``1 - ratio`` share.

    MeanFlow's scheme (Geng et al. 2025): both times from the
    same distribution, ordered, and a fraction of the batch on the diagonal (where the average
    velocity is the instantaneous one and the loss is plain flow matching).
    """
    x1 = batch.x1
    check_batch(x1, "x1")
    n = x1.shape[0]
    cond = batch.cond
    if cond is not None and cond_batch_size(cond) != n:
        raise ValueError(f"cond must have batch size B = {n}, got {cond_batch_size(cond)}")
    x0 = batch.x0 if batch.x0 is not None else source.sample_like(x1, generator)
    a = time_sampler.sample_t(n, generator, device=x1.device, dtype=x1.dtype)
    b = time_sampler.sample_t(n, generator, device=x1.device, dtype=x1.dtype)
    s, t = torch.minimum(a, b), torch.maximum(a, b)
    interval = torch.rand(n, generator=generator, device=x1.device) < ratio
    t = torch.where(interval, t, s)
    cond = drop_condition(cond, cond_dropout, null_label, generator)
    sample = path.sample(x0, x1, s)
    return TimePair(x0, x1, s, t, sample.xt, sample.v_target, interval, cond)


def teacher_velocity(
    modules: Mapping[str, nn.Module], x: Tensor, t: Tensor, cond: Cond
) -> Tensor | None:
    """The frozen teacher's velocity at ``(x, t)`` (no gradients), or ``None`` without one."""
    teacher = modules.get("teacher")
    if teacher is None:
        return None
    with torch.no_grad():
        return teacher(x, t, cond)


class TwoTimeStep(TrainingStep):
    """Base of the training steps of two-time networks; their runs sample a flow map."""

    trains: tuple[str, ...] = ("model",)
    uses: tuple[str, ...] = ()

    def field(self, modules: Mapping[str, nn.Module]) -> Any:
        """The trained network as a flow map ``X(x, s, t) = x + (t - s) u(x, s, t)``."""
        return AverageVelocityMap(modules[self.trains[0]])


def average_velocity(net: Any, x: Tensor, s: Tensor, t: Tensor, cond: Cond) -> Tensor:
    """``u(x, s, t)`` of a two-time network (``net(x, s, cond, t_end=t)``)."""
    return net(x, s, cond, t_end=t)


def jump(net: Any, x: Tensor, s: Tensor, t: Tensor, cond: Cond) -> Tensor:
    """``X(x, s, t) = x + (t - s) u(x, s, t)``."""
    return x + expand_like(t - s, x) * net(x, s, cond, t_end=t)
