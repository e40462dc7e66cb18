"""Source distributions ``p0`` (what ``x0`` is drawn from)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

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
    """A source distribution with sampling and log-density."""

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
