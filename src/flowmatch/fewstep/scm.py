"""Continuous-time consistency (sCM) distillation of a linear-path teacher through TrigFlow.

TrigFlow (Lu & Song 2024, "Simplifying, Stabilizing and Scaling Continuous-Time Consistency
Models"): ``x_tau = cos(tau) x1 + sin(tau) z``, ``z ~ N(0, sigma_d^2 I)``, ``tau`` from
``pi/2`` (noise) to ``0`` (data); a network ``F(x_tau / sigma_d, tau)`` predicts
``(dx_tau / dtau) / sigma_d`` and the consistency function is
``f(x_tau, tau) = cos(tau) x_tau - sin(tau) sigma_d F``.

**Exact FM -> TrigFlow adapter** (SANA-Sprint, Chen et al. 2025, written for any sigma_d): a
velocity field ``u`` of the linear path ``x_t = t x1 + (1 - t) x0`` (``x0 ~ N(0, I)``) gives
``x_tau = k x_t`` with ``k = cos + sigma_d sin`` and ``t = cos / k``, so

    F(y, tau) = (-sin(tau) x1_hat + cos(tau) sigma_d x0_hat) / sigma_d,
    x_t = sigma_d y / k,  x1_hat = x_t + (1 - t) u(x_t, t),  x0_hat = x_t - t u(x_t, t)

reproduces the teacher's ODE exactly (:class:`FlowToTrigFlow`, :class:`TrigFlowODE`). The
consistency function is then ``x_t + (1 - t) u(x_t, t)``: one Euler jump to ``t = 1``, so an
sCM-trained velocity net samples as ``flowmatch.models.EulerJumpMap``.

**sCM loss** (Lu & Song 2024, with tangent normalisation and warm-up; SANA-Sprint's
``train_scm_ladd.py`` as digested): with ``dxdt = sigma_d F_teacher`` and one JVP of the
student ``(F^-, dF) = jvp(F, (x/sigma_d, tau), (cos sin dxdt / sigma_d, cos sin))``,
``g = -cos^2 (sigma_d F^- - dxdt) - r (cos sin x_tau + sigma_d dF)``, ``g <- g / (||g|| + c)``,
``L = w(tau) || F - F^- - g ||^2`` with ``r = min(1, step / warmup)``.

**Adversarial term** (``adversarial > 0``; SANA-Sprint's LADD term, :mod:`flowmatch.fewstep.ladd`):
the student's consistency output from ``x_tau`` (or, with probability ``adv_one_step``, from
pure noise) and real data are noised to a logit-normal level and scored by a discriminator
on the teacher's velocity there; the generator adds ``adversarial * (-D(fake))`` to the sCM
loss, the discriminator (a second trained module) its hinge loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from flowmatch.data.batch import Batch
from flowmatch.fewstep.base import FewStepConfig, unwrap
from flowmatch.fewstep.ladd import (
    NoisedDiscriminator,
    adversarial_terms,
    check_adversarial,
    noise_level,
)
from flowmatch.interfaces import PREDICTIONS, Cond, CondSpec, Prediction, index_cond
from flowmatch.models.flow_map import EulerJumpMap
from flowmatch.objectives.base import (
    OBJECTIVES,
    LossOutput,
    ObjectiveConfig,
    TrainingParts,
    TrainingStep,
    drop_condition,
)
from flowmatch.paths.affine import AffinePath
from flowmatch.paths.schedules import LinearSchedule
from flowmatch.sources import GaussianSource, Source
from flowmatch.utils.checks import check_batch, check_in_choices, check_positive_float
from flowmatch.utils.options import OptionError, option
from flowmatch.utils.tensor import expand_like


def trig_from_fm_time(t: Tensor, sigma_d: float) -> Tensor:
    """TrigFlow angle ``tau = atan2(1 - t, sigma_d t)`` of the linear-path time ``t``."""
    return torch.atan2(1 - t, sigma_d * t)


def fm_from_trig_time(tau: Tensor, sigma_d: float) -> Tensor:
    """Linear-path time ``t = cos(tau) / (cos(tau) + sigma_d sin(tau))`` of the angle ``tau``."""
    c, s = torch.cos(tau), torch.sin(tau)
    return c / (c + sigma_d * s)


class FlowToTrigFlow(nn.Module):
    """The TrigFlow network ``F(y, tau, cond)`` of a linear-path velocity field (exact).

    Args:
        field: a velocity field of the linear path, ``(x, t, cond) -> u`` (``t = 0`` noise).
        sigma_d: the data scale of TrigFlow (noise ``z ~ N(0, sigma_d^2 I)``), ``> 0``.

    Raises:
        TypeError: ``field`` is not callable.
        ValueError: ``sigma_d`` is not a finite number ``> 0``.
    """

    def __init__(self, field: Any, sigma_d: float = 1.0) -> None:
        super().__init__()
        if not callable(field):
            raise TypeError(f"field must be a callable velocity field, got {type(field).__name__}")
        self.field = field
        self.sigma_d = check_positive_float(sigma_d, "sigma_d")

    def forward(self, y: Tensor, tau: Tensor, cond: Cond = None) -> Tensor:
        """``F(y, tau)`` ``(B, *D)`` at ``y = x_tau / sigma_d`` and angles ``tau`` ``(B,)``."""
        sd = self.sigma_d
        c, s = expand_like(torch.cos(tau), y), expand_like(torch.sin(tau), y)
        k = c + sd * s
        t = fm_from_trig_time(tau, sd)
        x_t = sd * y / k
        u = self.field(x_t, t, cond)
        tt = expand_like(t, y)
        x1_hat, x0_hat = x_t + (1 - tt) * u, x_t - tt * u
        return (-s * x1_hat + c * sd * x0_hat) / sd


class TrigFlowODE:
    """The TrigFlow ODE ``dx/dtau = sigma_d F(x / sigma_d, tau)`` as a library velocity field.

    Library time ``t' in [0, 1]`` maps to ``tau = (pi / 2)(1 - t')``, so integrating from
    ``t' = 0`` (``x = sigma_d z``) to ``t' = 1`` with any sampler solves the TrigFlow ODE from
    noise to data: ``dx/dt' = -(pi / 2) sigma_d F(x / sigma_d, tau(t'))``.
    """

    def __init__(self, trig: FlowToTrigFlow) -> None:
        self.trig = trig

    def __call__(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """Velocity ``(B, *D)`` in library time."""
        tau = (math.pi / 2) * (1 - t)
        sd = self.trig.sigma_d
        return -(math.pi / 2) * sd * self.trig(x / sd, tau, cond)


@dataclass(frozen=True)
class SCMConfig(FewStepConfig):
    """Options of sCM distillation (defaults: SANA-Sprint's angle sampler, sCM's constants)."""

    run_defaults: ClassVar[Mapping[str, Any]] = {
        "sample": {"solver": {"kind": "flow_map", "nfe": 1}},
        "eval": {"nfe": [1, 2, 4], "solvers": ["flow_map", "flow_map_renoise"]},
    }

    sigma_d: float = option(1.0, gt=0, doc="TrigFlow data scale (1 for standardised data)")
    tau_mean: float = option(0.2, doc="mean of log(sigma_d tan tau) (logit-normal angle sampler)")
    tau_std: float = option(1.6, gt=0, doc="std of log(sigma_d tan tau)")
    warmup: int = option(1000, ge=0, doc="tangent warm-up steps (r = min(1, step / warmup))")
    tangent_c: float = option(0.1, gt=0, doc="c of the tangent normalisation g / (||g|| + c)")
    weighting: Literal["tan", "none"] = option(
        "tan", doc="loss weight 1 / (sigma_d tan tau) ('tan') or 1"
    )
    teacher_guidance: float = option(1.0, doc="CFG scale of the teacher's velocity")
    adversarial: float = option(
        0.0,
        ge=0,
        doc="weight of the LADD adversarial term on noised samples (0: off; SANA-Sprint 0.5)",
    )
    adv_one_step: float = option(
        0.5, ge=0, le=1, doc="probability that the adversarial sample starts from pure noise"
    )
    adv_tau_mean: float = option(-0.6, doc="mean of log(sigma_d tan tau) of the discriminator")
    adv_tau_std: float = option(1.0, gt=0, doc="std of log(sigma_d tan tau) of the discriminator")
    adv_hidden: int = option(256, ge=1, doc="width of the discriminator's 2 hidden layers")
    adv_features: Literal["teacher", "none"] = option(
        "teacher", doc="the discriminator reads the teacher's velocity at the noised sample, or not"
    )

    def extra_modules(
        self, model: nn.Module, sample_shape: tuple[int, ...], cond: CondSpec
    ) -> dict[str, nn.Module]:
        """The discriminator, when the adversarial term is on."""
        if not self.adversarial:
            return {}
        numel = math.prod(sample_shape)
        feats = numel if self.adv_features == "teacher" else 0
        return {
            "discriminator": NoisedDiscriminator(numel, feature_numel=feats, hidden=self.adv_hidden)
        }


def _build_scm(config: ObjectiveConfig, *, parts: TrainingParts) -> SCMStep:
    assert isinstance(config, SCMConfig)  # guaranteed by Registry.build
    if not isinstance(parts.path.schedule, LinearSchedule):
        raise OptionError(
            "path.kind",
            f"sCM's exact TrigFlow adapter needs a linear-path teacher, got {parts.path!r}",
        )
    dropout = config.cond_dropout if parts.cond.conditional else 0.0
    return SCMStep(
        parts.path,
        parts.source,
        prediction=parts.prediction,
        sigma_d=config.sigma_d,
        tau_mean=config.tau_mean,
        tau_std=config.tau_std,
        warmup=config.warmup,
        tangent_c=config.tangent_c,
        weighting=config.weighting,
        cond_dropout=dropout,
        null_label=parts.cond.num_classes,
        adversarial=config.adversarial,
        adv_one_step=config.adv_one_step,
        adv_tau_mean=config.adv_tau_mean,
        adv_tau_std=config.adv_tau_std,
        adv_features=config.adv_features,
    )


@OBJECTIVES.register("scm", config=SCMConfig, build=_build_scm)
class SCMStep(TrainingStep):
    """sCM distillation of the frozen ``"teacher"`` (a linear-path velocity field) into ``model``.

    The student is a one-time network in the run's parameterisation, read through
    :class:`FlowToTrigFlow` (so initialising it from the teacher's weights starts it at the
    teacher); the loss is the sCM objective with tangent normalisation and warm-up (module
    docstring). The warm-up needs the step index: batches from
    ``flowmatch.fewstep.store.WithStep`` carry it (without it ``r = 1``). The run samples the
    consistency function as an :class:`~flowmatch.models.EulerJumpMap` (1-4 steps; with more
    than one step the multistep consistency sampler ``flow_map_renoise`` re-noises with fresh
    noise between jumps, the deterministic ``flow_map`` composes the jumps).

    With ``adversarial > 0`` it also trains ``modules["discriminator"]`` (a
    :class:`~flowmatch.fewstep.ladd.NoisedDiscriminator`) and adds the LADD terms (module
    docstring); the student runs once on the sCM and the adversarial states together.

    Raises:
        ValueError: no frozen ``"teacher"`` module (or no ``"discriminator"`` with
            ``adversarial > 0``).
    """

    uses = ("teacher",)
    name: ClassVar[str]

    def __init__(
        self,
        path: AffinePath | None = None,
        source: Source | None = None,
        *,
        prediction: Prediction = "velocity",
        sigma_d: float = 1.0,
        tau_mean: float = 0.2,
        tau_std: float = 1.6,
        warmup: int = 1000,
        tangent_c: float = 0.1,
        weighting: str = "tan",
        cond_dropout: float = 0.0,
        null_label: int | None = None,
        adversarial: float = 0.0,
        adv_one_step: float = 0.5,
        adv_tau_mean: float = -0.6,
        adv_tau_std: float = 1.0,
        adv_features: str = "teacher",
    ) -> None:
        self.path = path if path is not None else AffinePath()
        self.source = source if source is not None else GaussianSource()
        check_in_choices(prediction, [p for p in PREDICTIONS if p != "score"], "prediction")
        self.prediction: Prediction = prediction
        self.sigma_d = check_positive_float(sigma_d, "sigma_d")
        self.tau_mean, self.tau_std = float(tau_mean), check_positive_float(tau_std, "tau_std")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.warmup, self.tangent_c = int(warmup), check_positive_float(tangent_c, "tangent_c")
        self.weighting = check_in_choices(weighting, ["tan", "none"], "weighting")
        self.cond_dropout, self.null_label = float(cond_dropout), null_label
        self.adversarial, self.adv_one_step = check_adversarial(adversarial, adv_one_step)
        self.adv_tau_mean = float(adv_tau_mean)
        self.adv_tau_std = check_positive_float(adv_tau_std, "adv_tau_std")
        self.adv_features = check_in_choices(adv_features, ["teacher", "none"], "adv_features")
        self.trains = ("model", "discriminator") if self.adversarial else ("model",)

    def __repr__(self) -> str:
        return (
            f"SCMStep(sigma_d={self.sigma_d}, warmup={self.warmup}, weighting={self.weighting!r}"
            + (f", adversarial={self.adversarial})" if self.adversarial else ")")
        )

    def velocity(self, net: Any) -> Any:
        """``net`` as a velocity field (converted when it predicts ``x1``/``x0``)."""
        if self.prediction == "velocity":
            return net
        from flowmatch.models.adapters import PredictionAdapter

        return PredictionAdapter(net, self.path, self.prediction)

    def field(self, modules: Mapping[str, nn.Module]) -> Any:
        """The consistency function as a flow map: ``X(x, s, t) = x + (t - s) u(x, s)``."""
        return EulerJumpMap(self.velocity(modules[self.trains[0]]))

    def __call__(
        self, modules: Mapping[str, nn.Module], batch: Batch, generator: torch.Generator
    ) -> LossOutput:
        """Per-sample sCM loss ``(B,)``."""
        teacher = modules.get("teacher")
        if teacher is None:
            raise ValueError(
                "scm distils a frozen teacher (modules['teacher']): use `flowmatch distill "
                "TEACHER_RUN --method scm`"
            )
        x1 = check_batch(batch.x1, "x1")
        n, sd = x1.shape[0], self.sigma_d
        wrapped = modules[self.trains[0]]
        student = FlowToTrigFlow(self.velocity(unwrap(wrapped)), sd)
        cond = drop_condition(batch.cond, self.cond_dropout, self.null_label, generator)
        normal = torch.randn(n, generator=generator, device=x1.device, dtype=x1.dtype)
        tau = torch.atan(torch.exp(self.tau_mean + self.tau_std * normal) / sd)
        # The run's source, scaled: x_tau / k is then a point of the teacher's own path
        # t x1 + (1 - t) x0 (TrigFlow's z ~ N(0, sigma_d^2 I) for the Gaussian source).
        z = sd * self.source.sample_like(x1, generator)
        c, s = expand_like(torch.cos(tau), x1), expand_like(torch.sin(tau), x1)
        x_tau = c * x1 + s * z
        with torch.no_grad():
            dxdt = sd * FlowToTrigFlow(teacher, sd)(x_tau / sd, tau, cond)
            f_minus, df = torch.func.jvp(
                lambda y, a: student(y, a, cond),
                (x_tau / sd, tau),
                (c * s * dxdt / sd, torch.cos(tau) * torch.sin(tau)),
            )[:2]
            step = getattr(batch, "step", None)
            r = 1.0 if step is None or self.warmup == 0 else min(1.0, step / self.warmup)
            g = -(c**2) * (sd * f_minus - dxdt) - r * (c * s * x_tau + sd * df)
            norm = g.reshape(n, -1).norm(dim=1)
            g = g / expand_like(norm + self.tangent_c, g)
        trig = FlowToTrigFlow(self.velocity(wrapped), sd)
        if not self.adversarial:
            f = trig(x_tau / sd, tau, cond)
        else:  # one forward of the (possibly DDP-wrapped) student for both terms
            coin = torch.rand(n, generator=generator, device=x1.device) < self.adv_one_step
            tau_g = torch.where(coin, torch.full_like(tau, math.pi / 2), tau)
            cg, sg = expand_like(torch.cos(tau_g), x1), expand_like(torch.sin(tau_g), x1)
            x_g = cg * x1 + sg * z
            both = index_cond(cond, torch.arange(n, device=x1.device).repeat(2))
            f_all = trig(torch.cat([x_tau, x_g]) / sd, torch.cat([tau, tau_g]), both)
            f, fake = f_all[:n], cg * x_g - sg * sd * f_all[n:]
        per = (f - f_minus - g).square().reshape(n, -1).mean(1)
        if self.weighting == "tan":
            per = per / (sd * torch.tan(tau))
        logs = {"tangent_norm": norm.mean()}
        if self.adversarial:
            disc = modules.get("discriminator")
            if disc is None:
                raise ValueError(
                    "adversarial > 0 trains modules['discriminator'] (built by "
                    "SCMConfig.extra_modules): pass one"
                )
            t_d = noise_level(
                n,
                mean=self.adv_tau_mean,
                std=self.adv_tau_std,
                sigma_d=sd,
                like=x1,
                generator=generator,
            )
            noise = self.source.sample_like(torch.cat([x1, x1]), generator)
            feats = teacher if self.adv_features == "teacher" else None
            adv = adversarial_terms(disc, fake, x1, noise, t_d, teacher=feats, cond=cond)
            logs.update(scm_loss=per.detach().mean(), **adv.logs)
            per = per + self.adversarial * adv.generator + adv.discriminator
        return LossOutput(loss=per, logs=logs)
