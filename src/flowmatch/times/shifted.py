"""The dimension-aware time shift for training (SD3's resolution shift; RiT's "shift" schedule).

In the noise-level convention ``s = 1 - t`` (``s = 1`` is pure noise), the shift maps
``s' = a s / (1 + (a - 1) s)`` (Esser et al. 2024, eq. 23): ``a > 1`` moves training times
towards the noise, which high-dimensional data needs because the same noise level destroys
less of a larger signal. RiT (Zhang et al. 2026) and its JiT-style denoiser set
``a = sqrt(dim / base_dim)`` with ``base_dim = 4096`` (:func:`dimension_shift`); the inference
grid ``shifted`` applies the same map at sampling time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flowmatch.times.samplers import TIME_SAMPLERS, LogitNormalTime, TimeConfig
from flowmatch.utils.checks import check_positive_float, check_positive_int
from flowmatch.utils.options import option

__all__ = ["ShiftedLogitNormalTime", "dimension_shift", "shift_time"]


def dimension_shift(dim: int, base_dim: int = 4096) -> float:
    """``a = sqrt(dim / base_dim)``: RiT's dimension-aware shift (``dim = H W C``)."""
    check_positive_int(dim, "dim")
    check_positive_int(base_dim, "base_dim")
    return math.sqrt(dim / base_dim)


def shift_time(t: Tensor, shift: float) -> Tensor:
    """``t' = 1 - a s / (1 + (a - 1) s)`` with ``s = 1 - t``: the shift in flowmatch's time."""
    s = 1.0 - t
    return 1.0 - shift * s / (1.0 + (shift - 1.0) * s)


def _unshift(t: Tensor, shift: float) -> tuple[Tensor, Tensor]:
    """The time ``u`` with ``shift_time(u) = t`` and ``du / dt``."""
    y = 1.0 - t  # y = g(s) = a s / (1 + (a - 1) s); s = y / (a - (a - 1) y)
    den = shift - (shift - 1.0) * y
    return 1.0 - y / den, shift / den.square()


@dataclass(frozen=True)
class ShiftedLogitNormalConfig(TimeConfig):
    """Options of the shifted logit-normal sampler (flowmatch convention: t = 1 is data)."""

    mean: float = option(0.0, doc="location of logit(t) before the shift")
    std: float = option(1.0, gt=0, doc="scale of logit(t) before the shift")
    shift: float = option(
        1.0, gt=0, doc="a of s' = a s / (1 + (a - 1) s), s = 1 - t; sqrt(D / 4096) in RiT"
    )


@TIME_SAMPLERS.register("shifted_logit_normal", config=ShiftedLogitNormalConfig)
class ShiftedLogitNormalTime(LogitNormalTime):
    """Logit-normal times, then the shift ``s' = a s / (1 + (a - 1) s)`` of ``s = 1 - t``.

    ``u = sigmoid(mean + std n)``, ``t = 1 - a (1 - u) / (1 + (a - 1)(1 - u))`` (Esser et al.
    2024, eq. 23, as a training-time distribution; RiT's default schedule with
    ``a = sqrt(H W C / 4096)``, :func:`dimension_shift`). ``a = 1`` is the plain logit-normal;
    ``a > 1`` favours the noise end. Density by change of variables.

    Args:
        mean: location of ``logit(u)``.
        std: scale of ``logit(u)``, ``> 0``.
        shift: ``a > 0``.
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0, shift: float = 1.0) -> None:
        super().__init__(mean, std)
        self.shift = check_positive_float(shift, "shift")

    def sample_t(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Return ``(B,)`` shifted logit-normal times."""
        return shift_time(
            super().sample_t(batch_size, generator, device=device, dtype=dtype), self.shift
        )

    def pdf(self, t: Tensor) -> Tensor:
        """Density at ``t`` (0 outside ``(0, 1)``)."""
        u, du = _unshift(t, self.shift)
        inside = (t > 0) & (t < 1)
        p = super().pdf(u) * du
        return torch.where(inside, p, torch.zeros_like(p))

    def cdf(self, t: Tensor) -> Tensor:
        """``P(T <= t)``: the time map is increasing, so ``F(t) = F_u(u(t))``."""
        tc = t.clamp(0.0, 1.0)
        return super().cdf(_unshift(tc, self.shift)[0])

    def __repr__(self) -> str:
        return f"ShiftedLogitNormalTime(mean={self.mean}, std={self.std}, shift={self.shift})"
