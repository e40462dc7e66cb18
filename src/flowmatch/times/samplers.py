"""Training-time distributions ``p(t)`` on ``(0, 1)`` with their densities.

Changing ``p(t)`` is equivalent to weighting the loss by ``p(t)``; do not also add a weight
for the same purpose unintentionally (Esser et al. 2024, "Scaling Rectified Flow
Transformers", Sec. 3.1).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from flowmatch.registry import ComponentConfig, Registry
from flowmatch.utils.checks import check_positive_float, check_positive_int
from flowmatch.utils.options import option


@dataclass(frozen=True)
class TimeConfig(ComponentConfig):
    """The ``[time]`` section: ``kind`` names the training-time distribution."""


class TimeSampler(ABC):
    """Draws training times ``t`` of shape ``(B,)`` in ``[0, 1]``; ``pdf`` is the density."""

    name: ClassVar[str]

    @abstractmethod
    def sample_t(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Return ``batch_size`` times, shape ``(B,)``."""

    @abstractmethod
    def pdf(self, t: Tensor) -> Tensor:
        """Density of the sampler at ``t`` (any shape)."""

    @abstractmethod
    def cdf(self, t: Tensor) -> Tensor:
        """Cumulative distribution function at ``t`` (any shape)."""


#: Training-time samplers by name.
TIME_SAMPLERS: Registry[TimeSampler, TimeConfig] = Registry(
    "time sampler", TimeConfig, default="uniform"
)


@TIME_SAMPLERS.register("uniform")
class UniformTime(TimeSampler):
    """``t ~ U[0, 1)``."""

    def sample_t(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Return ``(B,)`` uniform times."""
        check_positive_int(batch_size, "batch_size")
        return torch.rand(batch_size, generator=generator, device=device, dtype=dtype)

    def pdf(self, t: Tensor) -> Tensor:
        """Return 1 on ``[0, 1]``, 0 outside."""
        return ((t >= 0) & (t <= 1)).to(t.dtype)

    def cdf(self, t: Tensor) -> Tensor:
        """Return ``clamp(t, 0, 1)``."""
        return t.clamp(0.0, 1.0)

    def __repr__(self) -> str:
        return "UniformTime()"


@dataclass(frozen=True)
class LogitNormalConfig(TimeConfig):
    """Options of the logit-normal sampler (flowmatch convention: t = 1 is data)."""

    mean: float = option(0.0, doc="location of logit(t); > 0 favours the data end")
    std: float = option(1.0, gt=0, doc="scale of logit(t)")


@TIME_SAMPLERS.register("logit_normal", config=LogitNormalConfig)
class LogitNormalTime(TimeSampler):
    """``t = sigmoid(mean + std * n)``, ``n ~ N(0, 1)`` (SD3's logit-normal sampling).

    Density: ``p(t) = exp(-(logit t - mean)^2 / (2 std^2)) / (std sqrt(2 pi) t (1 - t))``.
    Esser et al. (2024), eq. 19. ``mean`` is given in flowmatch's convention (t = 1 is data):
    a positive mean concentrates training on the data end.

    Args:
        mean: location of ``logit(t)``.
        std: scale of ``logit(t)``, ``> 0``.

    Raises:
        TypeError: if ``mean`` or ``std`` is not a number.
        ValueError: if ``mean`` is not finite or ``std`` is not a finite number ``> 0``.
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        if isinstance(mean, bool) or not isinstance(mean, int | float):
            raise TypeError(f"mean must be a number, got {mean!r} ({type(mean).__name__})")
        if not math.isfinite(mean):
            raise ValueError(f"mean must be a finite number, got {mean!r}")
        self.mean = float(mean)
        self.std = check_positive_float(std, "std")

    def sample_t(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Return ``(B,)`` logit-normal times."""
        check_positive_int(batch_size, "batch_size")
        n = torch.randn(batch_size, generator=generator, device=device, dtype=dtype)
        return torch.sigmoid(self.mean + self.std * n)

    def pdf(self, t: Tensor) -> Tensor:
        """Return the logit-normal density (0 outside ``(0, 1)``)."""
        inside = (t > 0) & (t < 1)
        tc = t.clamp(1e-12, 1 - 1e-12)
        z = (torch.logit(tc) - self.mean) / self.std
        p = torch.exp(-0.5 * z**2) / (self.std * math.sqrt(2 * math.pi) * tc * (1 - tc))
        return torch.where(inside, p, torch.zeros_like(p))

    def cdf(self, t: Tensor) -> Tensor:
        """Return ``Phi((logit t - mean) / std)``."""
        tc = t.clamp(0.0, 1.0)
        z = (torch.logit(tc.clamp(1e-12, 1 - 1e-12)) - self.mean) / self.std
        c = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
        return torch.where(
            tc <= 0, torch.zeros_like(c), torch.where(tc >= 1, torch.ones_like(c), c)
        )

    def __repr__(self) -> str:
        return f"LogitNormalTime(mean={self.mean}, std={self.std})"
