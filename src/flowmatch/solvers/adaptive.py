"""Adaptive Dormand-Prince 5(4) with embedded error control.

Dormand & Prince (1980); step-size control and starting step as in Hairer, Norsett & Wanner,
"Solving Ordinary Differential Equations I", Sec. II.4 (eq. 4.10-4.13 and the "starting step
size" algorithm). The error norm is the root-mean-square over the whole batch, so a batch
moves with the step size its hardest sample needs: report NFE together with the batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from flowmatch.interfaces import Cond, VelocityField
from flowmatch.solvers.base import SAMPLERS, AdaptiveSolver, AdaptiveStats, SamplerConfig
from flowmatch.solvers.ode import _rk_stages, _weighted_sum
from flowmatch.solvers.tableaus import DOPRI5, DOPRI5_SHAMPINE_ERR
from flowmatch.utils.checks import check_in_choices, check_positive_float, check_positive_int
from flowmatch.utils.options import option


def _rms(x: Tensor) -> float:
    return float(x.detach().pow(2).mean().sqrt())


@dataclass(frozen=True)
class Dopri5Config(SamplerConfig):
    """Options of the adaptive Dormand-Prince solver."""

    atol: float = option(1e-5, gt=0, doc="absolute tolerance")
    rtol: float = option(1e-5, gt=0, doc="relative tolerance")
    max_steps: int = option(10_000, ge=1, doc="attempted steps allowed per solve")
    estimator: Literal["shampine", "dormand_prince"] = option(
        "shampine", doc="embedded error estimate"
    )


@SAMPLERS.register("dopri5", config=Dopri5Config)
class Dopri5(AdaptiveSolver):
    """Dormand-Prince 5(4): 6 NFE per attempted step (first-same-as-last), error ``<= tolerance``.

    A step is accepted when ``rms(err / (atol + rtol * max(|x|, |x_new|))) <= 1``; the next
    step is ``h * clamp(safety * ratio^(-1/5), dfactor, ifactor)`` (no shrink after an accepted
    step). Steps are clipped so the solve lands exactly on each output time.

    Args:
        atol: absolute tolerance, ``> 0``.
        rtol: relative tolerance, ``> 0``.
        max_steps: attempted steps allowed per solve before raising ``RuntimeError``.
        first_step: initial step size; ``None`` chooses it with Hairer's algorithm (1 extra NFE).
        safety: safety factor of the controller.
        ifactor: largest growth of the step between two steps.
        dfactor: largest shrink of the step after a rejection.
        estimator: the embedded 4th-order solution that estimates the error:
            ``"shampine"`` (default; Shampine 1986, the estimate torchdiffeq uses, which lets
            smooth flows take larger steps) or ``"dormand_prince"`` (the original pair, as in
            Hairer's DOPRI5, SciPy's RK45 and MATLAB's ode45: more conservative steps).

    Example:
        >>> import torch
        >>> from flowmatch.solvers import Dopri5, solve
        >>> from flowmatch.times import make_grid
        >>> sol = solve(lambda x, t, cond=None: -x, torch.ones(3, 2), make_grid("uniform", 1),
        ...             Dopri5(atol=1e-8, rtol=1e-8))
        >>> round(sol.x[0, 0].item(), 6), sol.nfe > 0
        (0.367879, True)
    """

    order = 5
    stages = 6  # per attempted step: the 7th stage is the next step's first (FSAL)

    def __init__(
        self,
        atol: float = 1e-5,
        rtol: float = 1e-5,
        *,
        max_steps: int = 10_000,
        first_step: float | None = None,
        safety: float = 0.9,
        ifactor: float = 10.0,
        dfactor: float = 0.2,
        estimator: Literal["shampine", "dormand_prince"] = "shampine",
    ) -> None:
        self.atol = check_positive_float(atol, "atol")
        self.rtol = check_positive_float(rtol, "rtol")
        self.max_steps = check_positive_int(max_steps, "max_steps")
        self.first_step = (
            None if first_step is None else check_positive_float(first_step, "first_step")
        )
        self.safety = check_positive_float(safety, "safety")
        self.ifactor = check_positive_float(ifactor, "ifactor")
        self.dfactor = check_positive_float(dfactor, "dfactor")
        check_in_choices(estimator, ("shampine", "dormand_prince"), "estimator")
        self.estimator = estimator
        b_err = DOPRI5_SHAMPINE_ERR if estimator == "shampine" else DOPRI5.b_err
        assert b_err is not None  # DOPRI5 is an embedded pair (internal invariant)
        self._b_err: tuple[float, ...] = b_err
        # Stages with zero weight in the error estimate (k2 in both estimators: b2 = b2_hat = 0)
        # never reach it, so a NaN there would be lost; they join the finiteness check.
        self._unweighted = tuple(i for i, w in enumerate(b_err) if w == 0.0)
        if not self.dfactor < 1 < self.ifactor:
            raise ValueError(
                f"need dfactor < 1 < ifactor, got dfactor={dfactor}, ifactor={ifactor}"
            )

    def __repr__(self) -> str:
        return (
            f"Dopri5(atol={self.atol}, rtol={self.rtol}, max_steps={self.max_steps}, "
            f"estimator={self.estimator!r})"
        )

    def _initial_step(
        self,
        field: VelocityField,
        x: Tensor,
        t0: float,
        t1: float,
        f0: Tensor,
        cond: Cond,
    ) -> float:
        # Hairer et al. II.4, "Starting step size": balance ||x|| / ||f|| and a curvature estimate.
        direction = math.copysign(1.0, t1 - t0)
        scale = self.atol + self.rtol * x.abs()
        d0, d1 = _rms(x / scale), _rms(f0 / scale)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        # The probe Euler step stays inside [t0, t1]: fields may be undefined outside [0, 1].
        h0 = min(h0, abs(t1 - t0))
        x1 = torch.add(x, f0, alpha=direction * h0)
        f1 = field(x1, x.new_full((x.shape[0],), t0 + direction * h0), cond)
        d2 = _rms((f1 - f0) / scale) / h0
        if not math.isfinite(d2) or not math.isfinite(d1):
            # max() below would drop a NaN silently and the solve would go on as if fine.
            raise FloatingPointError(
                f"dopri5: the field returned NaN/inf while choosing the first step near "
                f"t={t0:.6g} (t={t0 + direction * h0:.6g})"
            )
        dmax = max(d1, d2)
        # Exponent 1/5 = 1/(q + 1) with q = 4 the order of the error estimate, as the
        # controller below and Hairer's DOPRI5 code (HINIT with IORD = 5) use.
        h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1.0 / self.order)
        return min(100 * h0, h1)

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
        """Integrate ``x`` ``(B, *D)`` from ``t0`` to ``t1``; counts NFE/steps into ``stats``.

        Raises:
            RuntimeError: if the solve (all intervals sharing ``stats``) needs more than
                ``max_steps`` attempted steps.
            FloatingPointError: if the field returns NaN/inf at any stage of any attempted
                step (accepted or rejected), including the probe of the first step size.
        """
        direction = math.copysign(1.0, t1 - t0)
        k1 = field(x, x.new_full((x.shape[0],), t0), cond)
        stats.nfe += 1
        if stats.next_step is not None:
            h = stats.next_step
        elif self.first_step is not None:
            h = self.first_step
        else:
            h = self._initial_step(field, x, t0, t1, k1, cond)
            stats.nfe += 1
        t = t0
        while direction * (t1 - t) > 0:
            if stats.accepted + stats.rejected >= self.max_steps:
                raise RuntimeError(
                    f"dopri5 exceeded max_steps={self.max_steps} at t={t:.6g} "
                    f"(atol={self.atol}, rtol={self.rtol}); loosen the tolerances or raise max_steps"
                )
            # The last step of an interval is clipped to land exactly on t1 (no overshoot and
            # no round-off remainder: t is set to t1 itself below).
            last = h >= abs(t1 - t)
            dt = t1 - t if last else direction * h
            # The last stage is evaluated at the 5th-order solution x_new (FSAL).
            ks, x_new = _rk_stages(DOPRI5, field, x, t, dt, cond, k1=k1)
            stats.nfe += 6
            err = _weighted_sum(torch.zeros_like(x), self._b_err, ks, dt)
            scale = self.atol + self.rtol * torch.maximum(x.abs(), x_new.abs())
            sq = (err / scale).square().mean()
            for i in self._unweighted:  # 0 * NaN = NaN: a NaN stage poisons the norm
                sq = sq + 0.0 * ks[i].sum()
            ratio = float(sq.detach().sqrt())  # the one host read of the step
            if not math.isfinite(ratio):
                raise FloatingPointError(
                    f"dopri5: the field returned NaN/inf in the step from t={t:.6g} to "
                    f"t={t + dt:.6g} (non-finite stage or error estimate)"
                )
            factor = self.ifactor if ratio == 0 else self.safety * ratio ** (-1.0 / self.order)
            if ratio <= 1.0:
                t, x, k1 = (t1 if last else t + dt), x_new, ks[-1]
                stats.accepted += 1
                factor = max(1.0, min(factor, self.ifactor))  # never shrink after accepting
                # A clipped last step says little about the step size: keep the proposal.
                h = max(h, abs(dt) * factor) if last else abs(dt) * factor
            else:
                stats.rejected += 1
                h = abs(dt) * max(self.dfactor, min(factor, 1.0))
        stats.next_step = h
        return x
