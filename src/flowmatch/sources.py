"""Source distributions ``p0`` (what ``x0`` is drawn from)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from flowmatch.interfaces import CondSpec
from flowmatch.registry import ComponentConfig, Entry, Registry


@dataclass(frozen=True)
class SourceConfig(ComponentConfig):
    """The ``[source]`` section: ``kind`` names the source distribution ``p0``."""


def _build_source(
    entry: Entry[Any], config: ComponentConfig, *, sample_shape: tuple[int, ...], cond: CondSpec
) -> Source:
    # Built-in sources need no context; a learned source would use the shape and condition.
    return entry.target(**config.options())


class Source(ABC):
    """A source distribution with sampling and log-density.

    Optional hooks (defaults: nothing to fit, unconditional):

    - ``fit(x1)`` / ``fitted_state()`` / ``load_fitted_state(state)``: a data-dependent source
      (e.g. the norm-aligned Gaussian) fits itself on the training data once, before training;
      the fitted state (JSON) is stored with the run, so loading the run rebuilds the same
      source without the data.
    - ``conditional = True``: samples depend on the condition (learned sources such as CSFM);
      such a source maps standard-normal noise and a condition to ``x0`` with
      ``transform(eps, cond)`` and has ``log_prob(x, cond)``.

    Attributes:
        conditional: whether samples depend on the condition.
        has_log_prob: whether :meth:`log_prob` is available (likelihoods need it).
    """

    conditional: ClassVar[bool] = False
    has_log_prob: bool = True

    def fit(self, x1: Tensor) -> None:
        """Fit data-dependent state on training data ``x1`` ``(N, *D)`` (default: nothing)."""
        return None

    def fitted_state(self) -> dict[str, Any]:
        """The fitted state as a JSON-serialisable dict (default: empty)."""
        return {}

    def load_fitted_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`fitted_state` (default: only the empty state).

        Raises:
            ValueError: a non-empty state for a source that fits nothing.
        """
        if state:
            raise ValueError(f"{type(self).__name__} fits no state, got keys {sorted(state)}")

    @abstractmethod
    def sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw samples of shape ``(B, *D)``."""

    @abstractmethod
    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of ``x`` ``(B, *D)`` summed over ``D``; returns ``(B,)``."""

    def sample_like(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw samples shaped, typed and placed like ``x``."""
        return self.sample(tuple(x.shape), generator, device=x.device, dtype=x.dtype)


#: Source distributions by name; builders receive ``sample_shape`` and the run's ``cond``.
SOURCES: Registry[Source, SourceConfig] = Registry(
    "source",
    SourceConfig,
    default="gaussian",
    context=("sample_shape", "cond"),
    build=_build_source,
)


@SOURCES.register("gaussian")
class GaussianSource(Source):
    """Standard normal ``N(0, I)`` source.

    ``log p0(x) = -(|x|^2 + D log(2 pi)) / 2``.
    """

    def sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``N(0, I)`` samples of shape ``shape``."""
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """Return ``(B,)`` log-densities."""
        flat = x.reshape(x.shape[0], -1)
        return -0.5 * (flat.pow(2).sum(1) + flat.shape[1] * math.log(2 * math.pi))

    def __repr__(self) -> str:
        return "GaussianSource()"


@SOURCES.register("eight_gaussians")
class EightGaussiansSource(Source):
    """The 8-Gaussians mixture as a (non-Gaussian) source for 2-D data.

    Eight isotropic Gaussians of std ``0.5`` centred on the circle of radius ``4`` at angles
    ``2 pi k / 8`` (the ``"8gaussians"`` toy data set; Tong et al. 2024 use it as the source of
    their 8 Gaussians -> moons benchmark; the ``dataset`` source with ``toy = "8gaussians"``
    is the same distribution, drawn with another random stream). Samples are ``(B, 2)``;
    ``log p0(x) = logsumexp_k log N(x; c_k, 0.25 I) - log 8``.
    """

    radius, std, num = 4.0, 0.5, 8

    def _centers(self, dtype: torch.dtype, device: Any) -> Tensor:
        angle = torch.arange(self.num, dtype=dtype, device=device) * (2 * math.pi / self.num)
        return self.radius * torch.stack([angle.cos(), angle.sin()], dim=1)

    def sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw samples of shape ``(B, 2)``.

        Raises:
            ValueError: ``shape`` is not ``(B, 2)``.
        """
        if len(shape) != 2 or shape[1] != 2:
            raise ValueError(
                f"the eight_gaussians source is 2-D: shape must be (B, 2), got {shape}"
            )
        k = torch.randint(0, self.num, (shape[0],), generator=generator, device=device)
        noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return self._centers(dtype, device)[k] + self.std * noise

    def log_prob(self, x: Tensor) -> Tensor:
        """Return ``(B,)`` log-densities of ``x`` ``(B, 2)``."""
        return eight_gaussians_log_prob(x, radius=self.radius, std=self.std)

    def __repr__(self) -> str:
        return "EightGaussiansSource()"


def eight_gaussians_log_prob(x: Tensor, *, radius: float = 4.0, std: float = 0.5) -> Tensor:
    """``(B,)`` log-density of the 8-Gaussians mixture (centres ``radius (cos, sin)(2 pi k / 8)``).

    Shared by the ``eight_gaussians`` source and the ``dataset`` source with ``toy =
    "8gaussians"`` (the same distribution).
    """
    angle = torch.arange(8, dtype=x.dtype, device=x.device) * (2 * math.pi / 8)
    centers = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    d2 = (x[:, None, :] - centers[None]).square().sum(-1)
    log_n = -0.5 * d2 / std**2 - math.log(2 * math.pi * std**2)
    return torch.logsumexp(log_n, dim=1) - math.log(8)
