"""More source distributions: the norm-aligned Gaussian and another data set as the source.

- ``norm_aligned``: ``x0 = s eps``, ``eps ~ N(0, I)``, with ``s = E||x1|| / E||eps||`` fitted on
  the training data (Lee, Kim & Lee 2025, "Is There a Better Source Distribution than
  Gaussian?", the norm alignment of their training recipe). The scale is fitted once, before
  training (``Source.fit``), stored with the run and restored when the run is loaded.
- ``dataset``: samples of a built-in 2-D toy distribution as ``x0`` (flow matching allows any
  source: Tong et al. 2024 transport 8 Gaussians to moons; CrossFlow, Liu et al. 2025, flows
  from one modality's distribution to another's). Unpaired: the coupling pairs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowmatch.data.toy import GAUSSIANS_RADIUS, GAUSSIANS_STD, TOY_DATASETS, sample_toy
from flowmatch.sources import SOURCES, Source, SourceConfig, eight_gaussians_log_prob
from flowmatch.utils.checks import check_in_choices, check_positive_float
from flowmatch.utils.options import OptionError, option

__all__ = ["DatasetSource", "NormAlignedGaussian", "expected_gaussian_norm"]


def expected_gaussian_norm(dim: int) -> float:
    """``E||eps||`` for ``eps ~ N(0, I_dim)``: ``sqrt(2) Gamma((d + 1) / 2) / Gamma(d / 2)``."""
    return math.sqrt(2.0) * math.exp(math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2))


@dataclass(frozen=True)
class NormAlignedConfig(SourceConfig):
    """Options of the norm-aligned Gaussian source."""

    scale: float | None = option(
        None, gt=0, doc="fixed scale s of x0 = s eps; none: fit s = E||x1|| / E||eps|| on the data"
    )


def _build_norm_aligned(
    config: SourceConfig, *, sample_shape: tuple[int, ...], cond: Any
) -> NormAlignedGaussian:
    assert isinstance(config, NormAlignedConfig)  # guaranteed by Registry.build
    return NormAlignedGaussian(config.scale)


@SOURCES.register("norm_aligned", config=NormAlignedConfig, build=_build_norm_aligned)
class NormAlignedGaussian(Source):
    """``N(0, s^2 I)`` with ``s = E||x1|| / E||eps||``: source norms match the data's on average.

    Lee, Kim & Lee (2025), norm alignment: ``x0 = eps * (E||x1|| / E||eps||)``, fitted on the
    training set (their CIFAR-10 code uses ``27.1981 / 55.4185``). The run must be sampled
    from the same scaled Gaussian, which ``Run.source`` guarantees.
    ``log p0(x) = -(|x|^2 / s^2 + D log(2 pi s^2)) / 2``.

    Args:
        scale: the scale ``s > 0``; ``None``: call :meth:`fit` before sampling.

    Raises:
        ValueError: a non-positive scale; sampling before the scale is known.
    """

    def __init__(self, scale: float | None = None) -> None:
        self.scale = None if scale is None else check_positive_float(scale, "scale")

    def __repr__(self) -> str:
        return f"NormAlignedGaussian(scale={self.scale})"

    def _scale(self) -> float:
        if self.scale is None:
            raise ValueError(
                "NormAlignedGaussian has no scale yet: call fit(x1) on the training data, or "
                "give scale="
            )
        return self.scale

    def fit(self, x1: Tensor) -> None:
        """Set ``s = mean_i ||x1_i|| / E||eps||`` from training data ``x1`` ``(N, *D)``."""
        flat = x1.reshape(x1.shape[0], -1).double()
        norm = float(flat.norm(dim=1).mean())
        if not norm > 0:
            raise ValueError("cannot fit a norm-aligned source on data whose norms are all 0")
        self.scale = norm / expected_gaussian_norm(flat.shape[1])

    def fitted_state(self) -> dict[str, Any]:
        """``{"scale": s}``."""
        return {"scale": self._scale()}

    def load_fitted_state(self, state: dict[str, Any]) -> None:
        """Restore ``{"scale": s}``.

        Raises:
            ValueError: the state is not ``{"scale": s > 0}``.
        """
        if set(state) != {"scale"}:
            raise ValueError(f"a norm-aligned source state is {{'scale': s}}, got {state!r}")
        self.scale = check_positive_float(state["scale"], "scale")

    def sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``s eps`` of shape ``shape``."""
        s = self._scale()
        return s * torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """Return ``(B,)`` log-densities of ``N(0, s^2 I)``."""
        s = self._scale()
        flat = x.reshape(x.shape[0], -1)
        d = flat.shape[1]
        return -0.5 * (flat.pow(2).sum(1) / s**2 + d * math.log(2 * math.pi * s**2))


@dataclass(frozen=True)
class DatasetSourceConfig(SourceConfig):
    """Options of the data-set source."""

    toy: str = option(
        "8gaussians", doc=f"built-in 2-D toy drawn as x0: one of {list(TOY_DATASETS)}"
    )
    scale: float = option(1.0, gt=0, doc="multiply the toy's points by this factor")

    def validate(self) -> None:
        """``toy`` must be a built-in toy."""
        if self.toy not in TOY_DATASETS:
            raise OptionError("toy", f"must be one of {list(TOY_DATASETS)}, got {self.toy!r}")


def _build_dataset_source(
    config: SourceConfig, *, sample_shape: tuple[int, ...], cond: Any
) -> DatasetSource:
    assert isinstance(config, DatasetSourceConfig)  # guaranteed by Registry.build
    if tuple(sample_shape) != (2,):
        raise OptionError(
            "source.kind", f"'dataset' draws 2-D toy points; the data has shape {sample_shape}"
        )
    return DatasetSource(config.toy, scale=config.scale)


@SOURCES.register("dataset", config=DatasetSourceConfig, build=_build_dataset_source)
class DatasetSource(Source):
    """Points of a built-in 2-D toy distribution (times ``scale``) as the source ``p0``.

    ``log_prob`` is exact for ``"8gaussians"`` (mixture of ``N(4 (cos, sin)(2 pi k / 8),
    0.25 I)``) and ``"checkerboard"`` (uniform on the 8 filled cells, ``-inf`` elsewhere);
    the other toys have no closed-form density (``has_log_prob`` is False for them).

    Args:
        name: one of ``flowmatch.data.toy.TOY_DATASETS``.
        scale: factor applied to the points.

    Raises:
        ValueError: unknown ``name`` or non-positive ``scale``; ``log_prob`` of a toy without
            a closed-form density; a shape other than ``(B, 2)``.
    """

    def __init__(self, name: str = "8gaussians", *, scale: float = 1.0) -> None:
        self.toy = check_in_choices(name, TOY_DATASETS, "toy dataset")
        self.scale = check_positive_float(scale, "scale")
        self.has_log_prob = name in ("8gaussians", "checkerboard")

    def __repr__(self) -> str:
        return f"DatasetSource({self.toy!r}, scale={self.scale})"

    def sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw toy points ``(B, 2)``."""
        if len(shape) != 2 or shape[1] != 2:
            raise ValueError(f"the {self.toy!r} source is 2-D: shape must be (B, 2), got {shape}")
        if generator is None:
            raise ValueError(f"the {self.toy!r} source needs an explicit torch.Generator")
        x = sample_toy(self.toy, shape[0], generator=generator, dtype=dtype)
        return (self.scale * x).to(device) if device is not None else self.scale * x

    def log_prob(self, x: Tensor) -> Tensor:
        """Return ``(B,)`` log-densities (``8gaussians`` and ``checkerboard`` only)."""
        z = x / self.scale
        log_jac = -2 * math.log(self.scale)
        if self.toy == "8gaussians":
            lp = eight_gaussians_log_prob(z, radius=GAUSSIANS_RADIUS, std=GAUSSIANS_STD)
            return lp + log_jac
        if self.toy == "checkerboard":
            cell = torch.floor((z + 4) / 2)
            inside = ((z >= -4) & (z < 4)).all(1) & ((cell.sum(1) % 2) == 0)
            value = torch.full_like(z[:, 0], -math.log(32.0) + log_jac)
            return torch.where(inside, value, torch.full_like(value, -math.inf))
        raise ValueError(f"the {self.toy!r} toy has no closed-form density (log_prob)")
