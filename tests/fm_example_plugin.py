"""A user plugin as a third party would write it: a coupling, a source and a sampler.

Imported by name through a run's ``plugins = ["fm_example_plugin"]`` (tests/ is on the path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flowmatch.couplings import COUPLINGS, Coupling, CouplingConfig
from flowmatch.solvers import SAMPLERS, FixedStepConfig, ODESolver
from flowmatch.sources import SOURCES, Source
from flowmatch.utils.options import option


@dataclass(frozen=True)
class ReverseConfig(CouplingConfig):
    """Options of the reversing coupling."""

    every: int = option(1, ge=1, doc="reverse blocks of this many samples")


@COUPLINGS.register("reverse_blocks", config=ReverseConfig)
class ReverseBlocksCoupling(Coupling):
    """Pairs x1[i] with x0 reversed within blocks (a deterministic, marginal-preserving toy)."""

    def __init__(self, every: int = 1) -> None:
        self.every = every

    def permutation(self, x0, x1, *, labels=None, generator=None):  # noqa: ANN001, ANN201, D102
        n = x0.shape[0]
        idx = torch.arange(n, device=x0.device)
        b = max(1, self.every)
        full = (n // b) * b
        idx[:full] = idx[:full].reshape(-1, b).flip(1).reshape(-1)
        return idx


@SOURCES.register("laplace")
class LaplaceSource(Source):
    """Standard Laplace source ``p0(x) = prod_i exp(-|x_i|) / 2`` (a non-Gaussian p0)."""

    def sample(self, shape, generator=None, *, device=None, dtype=torch.float32):  # noqa: ANN001, ANN201, D102
        u = torch.rand(shape, generator=generator, device=device, dtype=dtype) - 0.5
        return -torch.sign(u) * torch.log1p(-2 * u.abs())

    def log_prob(self, x: Tensor) -> Tensor:  # noqa: D102
        flat = x.reshape(x.shape[0], -1)
        return -(flat.abs().sum(1) + flat.shape[1] * math.log(2.0))


@SAMPLERS.register("ralston", config=FixedStepConfig)
class Ralston(ODESolver):
    """Ralston's second-order method (a = 2/3), a user-added fixed-step sampler."""

    order = 2
    stages = 2

    def step(self, field, x, t, t_next, cond=None):  # noqa: ANN001, ANN201, D102
        h = t_next - t
        b = x.shape[0]
        k1 = field(x, x.new_full((b,), t), cond)
        k2 = field(x + (2 * h / 3) * k1, x.new_full((b,), t + 2 * h / 3), cond)
        return x + h * (0.25 * k1 + 0.75 * k2)
