"""MeanFlow: one-step generation by regressing the average velocity (Geng et al. 2025).

In the library's convention (``t = 0`` noise; the state ``x_s`` at time ``s`` flows to time
``t >= s``) the average velocity ``u(x_s, s, t) = (x_t - x_s) / (t - s)`` obeys the MeanFlow
identity (Geng et al. 2025, with ``s = 1 - t_MF`` and ``t = 1 - r_MF``)::

    u(x_s, s, t) = v(x_s, s) + (t - s) d/ds u(x_s, s, t),
    d/ds u = v . grad_x u + partial_s u          (t held fixed)

obtained by differentiating ``x_s + (t - s) u(x_s, s, t) = x_t`` along the trajectory. The total
derivative is one forward-mode Jacobian-vector product with tangents ``(v, 1, 0)`` for
``(x, s, t)``. The loss regresses ``u_theta`` onto the stop-gradient target
``sg(v + (t - s) d/ds u_theta)``; ``v`` is the conditional velocity of the path (the target is
linear in ``v``, so its conditional expectation is the marginal one) or a teacher's velocity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from flowmatch.data.batch import Batch
from flowmatch.fewstep.base import (
    TwoTimeConfig,
    TwoTimeStep,
    distance,
    draw_time_pair,
    is_wrapped,
    teacher_velocity,
    unwrap,
)
from flowmatch.interfaces import Cond, as_condition
from flowmatch.objectives.base import OBJECTIVES, LossOutput, ObjectiveConfig, TrainingParts
from flowmatch.paths.affine import AffinePath
from flowmatch.sources import GaussianSource, Source
from flowmatch.times.samplers import TimeSampler, UniformTime
from flowmatch.utils.options import OptionError, option
from flowmatch.utils.tensor import expand_like


@dataclass(frozen=True)
class MeanFlowConfig(TwoTimeConfig):
    """Options of MeanFlow (defaults: the authors' PyTorch CIFAR-10 setting).

    That setting (75 % of the batch with ``s != t``, ``p = 0.75``) beat their ImageNet one
    (25 %, ``p = 1``) on the 2-D checkerboard (docs/benchmarks.md, "Few-step generation").
    """

    ratio: float = option(
        0.75,
        ge=0,
        le=1,
        doc="fraction of the batch with s != t; the rest (s = t) is plain flow matching",
    )
    norm_p: float = option(0.75, ge=0, doc="adaptive weight 1 / (loss + eps)^p (0: plain loss)")
    norm_eps: float = option(1e-3, gt=0, doc="eps of the adaptive weight")
    guidance: float = option(
        1.0, doc="CFG scale omega folded into the target (1: none; needs labels)"
    )
    guidance_kappa: float = option(0.0, doc="kappa: weight of the model's own conditional term")
    guidance_interval: tuple[float, ...] = option(
        (0.0, 1.0), doc="times s where the target is guided, (lo, hi)"
    )

    def validate(self) -> None:
        """A guidance interval is a pair ``0 <= lo < hi <= 1``."""
        lo_hi = self.guidance_interval
        if len(lo_hi) != 2 or not 0.0 <= lo_hi[0] < lo_hi[1] <= 1.0:
            raise OptionError("guidance_interval", f"must be (lo, hi) in [0, 1], got {lo_hi}")


def _build_meanflow(config: ObjectiveConfig, *, parts: TrainingParts) -> MeanFlowStep:
    assert isinstance(config, MeanFlowConfig)  # guaranteed by Registry.build
    conditional = parts.cond.conditional
    dropout = config.cond_dropout if conditional else 0.0
    if config.guidance != 1.0 and parts.cond.kinds != ("labels",):
        raise OptionError(
            "objective.guidance",
            f"={config.guidance} needs a run conditioned on labels only (this one has "
            f"{list(parts.cond.kinds) or 'no conditions'}); use 1.0",
        )
    return MeanFlowStep(
        parts.path,
        parts.time_sampler,
        parts.source,
        ratio=config.ratio,
        norm_p=config.norm_p,
        norm_eps=config.norm_eps,
        loss=config.loss,
        huber_c=config.huber_c,
        cond_dropout=dropout,
        null_label=parts.cond.num_classes,
        guidance=config.guidance,
        guidance_kappa=config.guidance_kappa,
        guidance_interval=(config.guidance_interval[0], config.guidance_interval[1]),
    )


def meanflow_target(
    net: Any, x: Tensor, s: Tensor, t: Tensor, v: Tensor, cond: Cond
) -> tuple[Tensor, Tensor]:
    """``(u, sg(v + (t - s) du/ds))`` by one ``torch.func.jvp`` with tangents ``(v, 1, 0)``.

    Args:
        net: a plain (unwrapped) two-time network ``(x, s, cond, t_end) -> u``.
        x: states ``(B, *D)`` at times ``s``.
        s: start times ``(B,)``.
        t: end times ``(B,)``.
        v: the velocity at ``(x, s)`` (the JVP's tangent for ``x``).
        cond: the condition.

    Returns:
        The prediction ``u(x, s, t)`` (with gradients) and the detached target.
    """

    def u_fn(x_: Tensor, s_: Tensor, t_: Tensor) -> Tensor:
        return net(x_, s_, cond, t_end=t_)

    # Tangent of s is 1 and of t is 0: the derivative along the trajectory with the end time
    # fixed. Getting these wrong trains a different identity without any error (pitfall 1).
    u, dudt = torch.func.jvp(u_fn, (x, s, t), (v, torch.ones_like(s), torch.zeros_like(t)))[:2]
    target = v + expand_like(t - s, x) * dudt
    return u, target.detach()


@OBJECTIVES.register("meanflow", config=MeanFlowConfig, build=_build_meanflow)
class MeanFlowStep(TwoTimeStep):
    """MeanFlow (Geng et al. 2025, Alg. 1): ``|| u_theta(x_s, s, t) - sg(u_tgt) ||^2``, adaptive weight.

    ``u_tgt = v + (t - s) (v . grad_x u_theta + partial_s u_theta)`` by ``torch.func.jvp``;
    the per-sample squared error (summed over features, as the paper) is divided by
    ``sg((L + eps)^p)`` (the paper's adaptive loss weighting). With a frozen ``"teacher"``
    module, ``v`` is the teacher's velocity (distillation) instead of the path's conditional
    velocity. With ``guidance = omega != 1`` (labels) the velocity is replaced in the target by
    ``omega v + (1 - omega - kappa) u_theta(x, s, s | null) + kappa u_theta(x, s, s | c)`` for
    conditioned samples with ``s`` in ``guidance_interval`` (the paper's CFG training): the guided
    field is learned and sampling costs 1 NFE without CFG.

    Under DDP or ``torch.compile`` the JVP runs on the plain module without gradients and the
    prediction goes through the wrapper (so DDP synchronises the gradient); otherwise one JVP
    gives both.

    Args:
        path: the affine path (any; the identity holds for the marginal velocity of any path).
        time_sampler: distribution of both times (the paper: logit-normal).
        source: the source distribution.
        ratio: fraction of the batch with ``s != t``.
        norm_p: power ``p`` of the adaptive weight (0: unweighted).
        norm_eps: its ``eps``.
        loss: ``"mse"`` or ``"pseudo_huber"`` (then the adaptive weight applies to that loss).
        huber_c: pseudo-Huber constant.
        cond_dropout: classifier-free dropout probability.
        null_label: the null label id.
        guidance: ``omega``; guidance_kappa: ``kappa``; guidance_interval: ``(lo, hi)`` of ``s``.

    Example:
        >>> import torch
        >>> from flowmatch.data import Batch
        >>> from flowmatch.models import MLP
        >>> step = MeanFlowStep(ratio=0.5)
        >>> net = MLP(2, hidden=16, depth=2, time_inputs=2)
        >>> out = step({"model": net}, Batch(torch.randn(8, 2)), torch.Generator().manual_seed(0))
        >>> out.loss.shape
        torch.Size([8])
    """

    name: ClassVar[str]

    def __init__(
        self,
        path: AffinePath | None = None,
        time_sampler: TimeSampler | None = None,
        source: Source | None = None,
        *,
        ratio: float = 0.75,
        norm_p: float = 0.75,
        norm_eps: float = 1e-3,
        loss: str = "mse",
        huber_c: float = 1e-3,
        cond_dropout: float = 0.0,
        null_label: int | None = None,
        guidance: float = 1.0,
        guidance_kappa: float = 0.0,
        guidance_interval: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.path = path if path is not None else AffinePath()
        self.time_sampler = time_sampler if time_sampler is not None else UniformTime()
        self.source = source if source is not None else GaussianSource()
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        if norm_p < 0 or norm_eps <= 0:
            raise ValueError(f"norm_p must be >= 0 and norm_eps > 0, got {norm_p}, {norm_eps}")
        if guidance != 1.0 and null_label is None:
            raise ValueError("guidance != 1 needs null_label (a label-conditional model)")
        self.ratio, self.norm_p, self.norm_eps = float(ratio), float(norm_p), float(norm_eps)
        self.loss, self.huber_c = loss, float(huber_c)
        distance(torch.zeros(1, 1), loss, huber_c)  # validates the loss name
        self.cond_dropout, self.null_label = float(cond_dropout), null_label
        self.guidance, self.kappa = float(guidance), float(guidance_kappa)
        self.interval = guidance_interval

    def __repr__(self) -> str:
        return (
            f"MeanFlowStep({self.path!r}, {self.time_sampler!r}, ratio={self.ratio}, "
            f"norm_p={self.norm_p}, guidance={self.guidance})"
        )

    def _guided(self, net: Any, x: Tensor, s: Tensor, v: Tensor, cond: Cond) -> Tensor:
        """The velocity of the target with CFG folded in (Geng et al. 2025)."""
        c = as_condition(cond)
        labels = None if c is None else c.labels
        if labels is None or self.guidance == 1.0:
            return v
        null = torch.full_like(labels, self.null_label)  # type: ignore[arg-type]
        with torch.no_grad():
            u_null = net(x, s, null, t_end=s)
            u_cond = net(x, s, labels, t_end=s) if self.kappa != 0.0 else u_null
        guided = self.guidance * v + (1 - self.guidance - self.kappa) * u_null
        guided = guided + self.kappa * u_cond
        lo, hi = self.interval
        use = (labels != self.null_label) & (s >= lo) & (s <= hi)
        return torch.where(expand_like(use, x), guided, v)

    def __call__(
        self, modules: Mapping[str, nn.Module], batch: Batch, generator: torch.Generator
    ) -> LossOutput:
        """Per-sample MeanFlow loss ``(B,)``; logs the unweighted error and the JVP term."""
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
        v = teacher_velocity(modules, p.xs, p.s, p.cond)
        v = self._guided(net, p.xs, p.s, p.v if v is None else v, p.cond)
        if is_wrapped(wrapped):
            with torch.no_grad():
                _, target = meanflow_target(net, p.xs, p.s, p.t, v, p.cond)
            u = wrapped(p.xs, p.s, p.cond, t_end=p.t)
        else:
            u, target = meanflow_target(net, p.xs, p.s, p.t, v, p.cond)
        err = distance(u - target, self.loss, self.huber_c)
        # distance() averages over features; the paper sums them, which sets the scale eps
        # is compared with in the adaptive weight.
        raw = err * u[0].numel()
        loss = raw / (raw.detach() + self.norm_eps) ** self.norm_p if self.norm_p else raw
        return LossOutput(loss=loss, logs={"mse": err.detach().mean()})
