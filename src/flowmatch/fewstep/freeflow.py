"""FreeFlow: data-free flow-map distillation with a predictor and a corrector term.

Tong, Ma, Xie & Jaakkola (2025), "Flow Map Distillation Without Data": a teacher's velocity is
distilled into a flow map from prior (noise) samples only, so the student matches what the
teacher generates (e.g. under guidance) rather than a data set.

* **Predictor**: along the student's own trajectory from noise, its rate of change must equal
  the teacher's velocity at the student's current point (a Lagrangian condition,
  ``flowmatch.fewstep.flowmap``): ``|| d/dt X(x_s, s, t) - sg(u_T(X(x_s, s, t), t)) ||^2`` with
  ``x_s = sg(X(z, 0, s))``, ``z ~ p0``; on the diagonal share, ``u(x_s, s, s)`` is regressed onto
  the teacher's velocity.
* **Corrector**: the student's one-step samples ``x_hat = X(z, 0, 1)`` are re-noised,
  ``x~ = alpha_t x_hat + sigma_t e``, and moved along ``E_T[x1 | x~] - E_F[x1 | x~]``, the
  difference between the teacher's and a "fake" velocity model's data estimates, where the
  fake model is trained by flow matching on the student's samples (a variational-score /
  distribution-matching gradient, Yin et al. 2024, DMD, written with velocities). The
  concrete forms of both terms are our reading of the paper's summary, not its code.

The step trains two modules, ``"model"`` (the two-time student) and ``"fake"`` (a one-time
velocity net, best initialised from the teacher), and reads the frozen ``"teacher"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from flowmatch.data.batch import Batch
from flowmatch.fewstep.base import FLOW_MAP_RUN_DEFAULTS, TwoTimeConfig, TwoTimeStep, distance, jump
from flowmatch.fewstep.flowmap import lagrangian_terms, plain_module
from flowmatch.objectives.base import OBJECTIVES, LossOutput, ObjectiveConfig, TrainingParts
from flowmatch.paths.affine import AffinePath
from flowmatch.sources import GaussianSource, Source
from flowmatch.utils.checks import check_batch
from flowmatch.utils.options import option
from flowmatch.utils.tensor import expand_like


@dataclass(frozen=True)
class FreeFlowConfig(TwoTimeConfig):
    """Options of FreeFlow."""

    run_defaults: ClassVar[Mapping[str, Any]] = FLOW_MAP_RUN_DEFAULTS

    ratio: float = option(0.75, ge=0, le=1, doc="fraction of the batch with s != t")
    noise_share: float = option(
        0.5, ge=0, le=1, doc="fraction of predictor samples starting at s = 0 (from the prior)"
    )
    corrector_weight: float = option(1.0, ge=0, doc="weight of the corrector (0: predictor only)")
    teacher_guidance: float = option(1.0, doc="CFG scale of the teacher's velocity")


def _build_freeflow(config: ObjectiveConfig, *, parts: TrainingParts) -> FreeFlowStep:
    assert isinstance(config, FreeFlowConfig)  # guaranteed by Registry.build
    return FreeFlowStep(
        parts.path,
        parts.source,
        ratio=config.ratio,
        noise_share=config.noise_share,
        corrector_weight=config.corrector_weight,
        loss=config.loss,
        huber_c=config.huber_c,
    )


@OBJECTIVES.register("freeflow", config=FreeFlowConfig, build=_build_freeflow)
class FreeFlowStep(TwoTimeStep):
    """FreeFlow's predictor + corrector on prior samples (``batch.x1`` only gives the shape).

    Per sample: ``L = L_pred + corrector_weight * L_corr + L_fake`` (module docstring). The
    labels of the batch, when present, condition the student, the teacher and the fake model.

    Raises:
        ValueError: no frozen ``"teacher"`` module, or no ``"fake"`` module with a corrector.
    """

    trains: tuple[str, ...] = ("model", "fake")
    uses = ("teacher",)
    name: ClassVar[str]

    def __init__(
        self,
        path: AffinePath | None = None,
        source: Source | None = None,
        *,
        ratio: float = 0.75,
        noise_share: float = 0.5,
        corrector_weight: float = 1.0,
        loss: str = "mse",
        huber_c: float = 1e-3,
    ) -> None:
        self.path = path if path is not None else AffinePath()
        self.source = source if source is not None else GaussianSource()
        for name, v in (("ratio", ratio), ("noise_share", noise_share)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if corrector_weight < 0:
            raise ValueError(f"corrector_weight must be >= 0, got {corrector_weight}")
        distance(torch.zeros(1, 1), loss, huber_c)  # validates the loss name
        self.ratio, self.noise_share = float(ratio), float(noise_share)
        self.corrector_weight = float(corrector_weight)
        self.loss, self.huber_c = loss, float(huber_c)
        if self.corrector_weight == 0:
            self.trains = ("model",)

    def __repr__(self) -> str:
        return f"FreeFlowStep(ratio={self.ratio}, corrector_weight={self.corrector_weight})"

    def __call__(
        self, modules: Mapping[str, nn.Module], batch: Batch, generator: torch.Generator
    ) -> LossOutput:
        """Per-sample loss ``(B,)``; logs the predictor, corrector-gap and fake losses."""
        teacher = modules.get("teacher")
        if teacher is None:
            raise ValueError(
                "freeflow distils a frozen teacher (modules['teacher']): use `flowmatch "
                "distill TEACHER_RUN --method freeflow`"
            )
        shape_like = check_batch(batch.x1, "x1")
        wrapped = modules["model"]
        net = plain_module(wrapped, "freeflow")
        cond = batch.cond
        n, dev, dt = shape_like.shape[0], shape_like.device, shape_like.dtype

        def uniform() -> torch.Tensor:
            return torch.rand(n, generator=generator, device=dev, dtype=dt)

        z = self.source.sample_like(shape_like, generator)
        # Predictor: start at s = 0 from the prior, or at s > 0 on the student's own path.
        s = torch.where(uniform() < self.noise_share, z.new_zeros(n), uniform())
        interval = uniform() < self.ratio
        t = torch.where(interval, s + (1 - s) * uniform(), s)
        with torch.no_grad():
            xs = jump(net, z, torch.zeros_like(s), s, cond)
            diag = teacher(xs, s, cond)
        xt, dxdt = lagrangian_terms(net, xs, s, t, cond)
        with torch.no_grad():
            b = teacher(xt, t, cond)
        target = torch.where(expand_like(interval, xs), b, diag)
        pred = distance(dxdt - target, self.loss, self.huber_c)
        logs = {"predictor": pred.detach().mean()}
        loss = pred
        if self.corrector_weight > 0:
            fake = modules.get("fake")
            if fake is None:
                raise ValueError("freeflow's corrector needs a trained 'fake' velocity module")
            zero, one = torch.zeros_like(s), torch.ones_like(s)
            x_hat = jump(wrapped, z, zero, one, cond)
            tc = 0.98 * uniform()  # away from t = 1, where the re-noised point is x_hat itself
            noised = self.path.sample(self.source.sample_like(z, generator), x_hat, tc)
            with torch.no_grad():
                # E_T[x1 | x] - E_F[x1 | x] = (1 - t) (u_T - u_F) on the linear path; in general
                # the x1-estimates of both fields through the path.
                gap = _x1_estimate(self.path, teacher, noised.xt, tc, cond)
                gap = gap - _x1_estimate(self.path, fake, noised.xt, tc, cond)
            # d/dx of -<x, gap> is -gap: a descent step moves x~ (hence x_hat) towards the
            # teacher's estimate and away from the fake's.
            corr = -(noised.xt * gap).reshape(n, -1).mean(1)
            fs = self.path.sample(self.source.sample_like(z, generator), x_hat.detach(), uniform())
            fake_loss = distance(fake(fs.xt, fs.t, cond) - fs.v_target, "mse", 0.0)
            loss = loss + self.corrector_weight * corr + fake_loss
            logs["corrector_gap"] = gap.square().mean().detach()
            logs["fake"] = fake_loss.detach().mean()
        return LossOutput(loss=loss, logs=logs)


def _x1_estimate(path: AffinePath, field: Any, x: torch.Tensor, t: torch.Tensor, cond: Any):  # type: ignore[no-untyped-def]
    """``E[x1 | x_t = x]`` implied by a velocity field on ``path``."""
    return path.convert(field(x, t, cond), src="velocity", dst="x1", xt=x, t=t)
