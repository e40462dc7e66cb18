"""Schedules ``(alpha_t, sigma_t)`` of affine probability paths ``x_t = alpha_t x1 + sigma_t x0``.

Every schedule returns the coefficients and their time derivatives; tests check the
derivatives against ``torch.func.jvp`` and the endpoints against the claims below.
References: Lipman et al. (2023) "Flow Matching for Generative Modeling", Sec. 4 (CondOT);
Albergo & Vanden-Eijnden (2023) (trigonometric interpolant); Song et al. (2021) "Score-Based
Generative Modeling through SDEs", eq. 29-33 (VP with a linear beta schedule).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor

from flowmatch.registry import ComponentConfig, Entry, Registry
from flowmatch.utils.checks import check_positive_float
from flowmatch.utils.options import OptionError, option

if TYPE_CHECKING:
    from flowmatch.paths.affine import AffinePath


@dataclass(frozen=True)
class PathConfig(ComponentConfig):
    """The ``[path]`` section: ``kind`` names the schedule; options common to every path."""

    prediction: Literal["velocity", "x1", "x0"] = option(
        "velocity", doc="what the network outputs; sampling converts it to a velocity"
    )
    # 0.05 as JiT/RiT's t_eps: with eps = 1e-3 an x0-prediction run sampled with midpoint at
    # NFE 8 had W2 4.41 on checkerboard (the first stage divides the network's error by 1e-3),
    # 0.49 with 0.05 (bench/prediction.py, docs/conventions.md).
    eps: float = option(
        0.05, gt=0, lt=0.5, doc="smallest denominator of prediction conversions (endpoint rule)"
    )


def _build_path(entry: Entry[Any], config: ComponentConfig) -> AffinePath:
    from flowmatch.paths.affine import AffinePath  # affine imports this module

    assert isinstance(config, PathConfig)  # guaranteed by Registry.build
    own = {k: v for k, v in config.options().items() if k not in ("prediction", "eps")}
    return AffinePath(entry.target(**own), eps=config.eps)


#: Probability paths by schedule name; building one gives an ``AffinePath``.
PATHS: Registry[AffinePath, PathConfig] = Registry(
    "path", PathConfig, default="linear", build=_build_path
)


@dataclass(frozen=True)
class ScheduleOutput:
    """Coefficients of an affine path at times ``t`` (each shaped like ``t``).

    Attributes:
        alpha: coefficient of the data ``x1``.
        sigma: coefficient of the source ``x0``.
        d_alpha: ``d alpha / dt``.
        d_sigma: ``d sigma / dt``.
    """

    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor


class Schedule(ABC):
    """Maps times ``t`` (any shape) to ``ScheduleOutput``.

    Attributes:
        name: registry name.
        exact_endpoints: whether ``alpha(0) = 0, sigma(0) = 1, alpha(1) = 1, sigma(1) = 0``.
    """

    name: ClassVar[str]
    exact_endpoints: ClassVar[bool] = True

    @abstractmethod
    def __call__(self, t: Tensor) -> ScheduleOutput:
        """Return ``alpha_t, sigma_t`` and their derivatives at ``t``."""

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_t, v_t)`` for ``t`` broadcastable to ``x0``; schedules may override for speed.

        ``x_t = alpha_t x1 + sigma_t x0`` and ``v_t = d_alpha_t x1 + d_sigma_t x0``.
        """
        c = self(t)
        return c.alpha * x1 + c.sigma * x0, c.d_alpha * x1 + c.d_sigma * x0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@PATHS.register("linear")
class LinearSchedule(Schedule):
    """CondOT / rectified flow: ``alpha_t = t``, ``sigma_t = 1 - t``; target ``x1 - x0``.

    Lipman et al. (2023), eq. 20-23 with sigma_min = 0; Liu et al. (2023) "Flow Straight and Fast".
    """

    def __call__(self, t: Tensor) -> ScheduleOutput:
        """Return the linear coefficients at ``t``."""
        one = torch.ones_like(t)
        return ScheduleOutput(alpha=t, sigma=1 - t, d_alpha=one, d_sigma=-one)

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``x_t = x0 + t (x1 - x0)`` and ``v_t = x1 - x0`` (two ops: the training hot path)."""
        v = x1 - x0
        return torch.addcmul(x0, t, v), v


@PATHS.register("cosine")
class CosineSchedule(Schedule):
    """Variance preserving trigonometric path: ``alpha_t = sin(pi t / 2)``, ``sigma_t = cos(pi t / 2)``."""

    def __call__(self, t: Tensor) -> ScheduleOutput:
        """Return the trigonometric coefficients at ``t``."""
        # sigma is written as sin(pi (1 - t) / 2), not cos(pi t / 2): float32 cos(pi/2) is
        # -4.4e-8, which would make sigma_1 negative; sin(0) gives the exact endpoint.
        s = torch.sin(0.5 * math.pi * t)
        c = torch.sin(0.5 * math.pi * (1 - t))
        return ScheduleOutput(
            alpha=s, sigma=c, d_alpha=0.5 * math.pi * c, d_sigma=-0.5 * math.pi * s
        )


@dataclass(frozen=True)
class PolynomialConfig(PathConfig):
    """Options of the polynomial schedule."""

    exponent: float = option(2.0, ge=1, doc="n of alpha_t = t^n")


@PATHS.register("polynomial", config=PolynomialConfig)
class PolynomialSchedule(Schedule):
    """``alpha_t = t^n``, ``sigma_t = 1 - t^n`` (``n = 1`` is the linear schedule).

    The convex polynomial schedule (``PolynomialConvexScheduler`` of facebookresearch/
    flow_matching; Lipman et al. (2024), "Flow Matching Guide and Code").

    Args:
        exponent: ``n >= 1``. Exponents below 1 are rejected: ``d alpha / dt = n t^(n-1)``
            is infinite at ``t = 0``, which ``U[0, 1)`` time samplers do draw.

    Raises:
        TypeError: if ``exponent`` is not a number.
        ValueError: if ``exponent`` is not finite or ``< 1``.
    """

    def __init__(self, exponent: float = 2.0) -> None:
        self.exponent = check_positive_float(exponent, "exponent")
        if self.exponent < 1:
            raise ValueError(
                f"exponent must be >= 1 (d alpha/dt = n t^(n-1) is infinite at t = 0 for n < 1), "
                f"got {exponent!r}"
            )

    def __call__(self, t: Tensor) -> ScheduleOutput:
        """Return the polynomial coefficients at ``t``."""
        n = self.exponent
        a = t**n
        # d/dt t^n = n t^(n-1); written with pow of (n-1) to stay finite at t = 0 for n >= 1.
        da = n * t ** (n - 1) if n != 1 else torch.ones_like(t)
        return ScheduleOutput(alpha=a, sigma=1 - a, d_alpha=da, d_sigma=-da)

    def __repr__(self) -> str:
        return f"PolynomialSchedule(exponent={self.exponent})"


@dataclass(frozen=True)
class VPConfig(PathConfig):
    """Options of the VP schedule."""

    beta_min: float = option(0.1, gt=0, doc="beta at the data end")
    beta_max: float = option(20.0, gt=0, doc="beta at the noise end (>= beta_min)")

    def validate(self) -> None:
        """Check ``beta_max >= beta_min``."""
        if self.beta_max < self.beta_min:
            raise OptionError(
                "beta_max", f"must be >= beta_min = {self.beta_min}, got {self.beta_max}"
            )


@PATHS.register("vp", config=VPConfig)
class VPSchedule(Schedule):
    """Variance-preserving path of a diffusion with linear beta schedule (score-SDE VP).

    With ``s = 1 - t`` (diffusion time) and ``T(s) = beta_min s + (beta_max - beta_min) s^2 / 2``:
    ``alpha_t = exp(-T/2)``, ``sigma_t = sqrt(1 - exp(-T))`` (Song et al. 2021, eq. 33;
    Lipman et al. 2023, eq. 19). ``alpha_t^2 + sigma_t^2 = 1``.

    Endpoints are not exact: ``alpha_0 = exp(-T(1)/2)`` (0.0066 for the defaults), by design of
    the VP-SDE. The velocity diverges at ``t = 1`` (``d sigma / dt -> -inf``); ``d_sigma`` is
    computed with ``sigma`` clamped to ``>= 1e-6`` so it stays finite there.
    """

    exact_endpoints = False

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        self.beta_min = check_positive_float(beta_min, "beta_min")
        self.beta_max = check_positive_float(beta_max, "beta_max")
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be >= beta_min, got {beta_max} < {beta_min}")

    def __call__(self, t: Tensor) -> ScheduleOutput:
        """Return the VP coefficients at ``t``."""
        s = 1 - t
        big_t = self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s**2
        d_big_t = -(self.beta_min + (self.beta_max - self.beta_min) * s)  # dT/dt = -dT/ds
        alpha = torch.exp(-0.5 * big_t)
        sigma = torch.sqrt(-torch.expm1(-big_t))
        d_alpha = -0.5 * d_big_t * alpha
        d_sigma = 0.5 * torch.exp(-big_t) * d_big_t / sigma.clamp_min(1e-6)
        return ScheduleOutput(alpha=alpha, sigma=sigma, d_alpha=d_alpha, d_sigma=d_sigma)

    def __repr__(self) -> str:
        return f"VPSchedule(beta_min={self.beta_min}, beta_max={self.beta_max})"
