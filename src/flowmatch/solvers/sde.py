"""Stochastic samplers with the marginals of the flow ODE: Euler-Maruyama and mixed ODE/SDE.

For an affine path ``x_t = alpha_t x1 + sigma_t x0`` with a standard Gaussian source, the
probability-flow ODE ``dx = u_t(x) dt`` and, for any diffusion coefficient ``g(t) >= 0``, the
SDE

    dX = [u_t(X) + (g(t)^2 / 2) grad log p_t(X)] dt + g(t) dW

have the same marginals ``p_t`` (Fokker-Planck; Song et al. 2021, "Score-Based Generative
Modeling through SDEs", eq. 13 and App. D.1; Albergo, Boffi & Vanden-Eijnden 2023,
"Stochastic Interpolants", Sec. 2.3). The score comes from the velocity through the path:
``grad log p_t(x) = -E[x0 | x_t = x] / sigma_t`` with ``E[x0 | x] = (alpha'_t x - alpha_t u) /
D_t``, ``D_t = alpha'_t sigma_t - sigma'_t alpha_t`` (``AffinePath.to_endpoints``).

Diffusion schedules (``g^2``, with ``a`` = ``scale``):

* ``"constant"``: ``g = a``.
* ``"flow_grpo"``: ``g = a sqrt((1 - t) / t)``: Flow-GRPO's ``a sqrt(s / (1 - s))`` in the
  noise level ``s = 1 - t`` (Liu et al. 2025, "Flow-GRPO", eq. 8; default ``a = 0.7``).
* ``"memoryless"``: ``g^2 = 2 a^2 sigma_t (alpha'_t sigma_t / alpha_t - sigma'_t)``, the
  schedule under which ``X_0`` and ``X_1`` are independent (Domingo-Enrich et al. 2025,
  "Adjoint Matching", Sec. 3); linear path: ``g^2 = 2 a^2 (1 - t) / t`` (``a = 1`` is
  memoryless; other ``a`` only rescale it).

Endpoint rule (one rule, no inf/NaN): drift and diffusion are evaluated at the start ``t`` of
each step, and steps run forward, so ``t < 1`` and ``sigma_t > 0`` always (the score is
``-E[x0|x] / sigma_t`` with the exact ``sigma_t``). ``"flow_grpo"`` and ``"memoryless"`` are
infinite at ``t = 0``; the step that starts at ``t = 0`` evaluates ``g`` at its *end* time
``t_next`` instead (Flow-GRPO evaluates its noise level at ``sigmas[1]`` for the first step).
With these singular schedules the first steps are large random jumps: the marginal error at
``t = 1`` still vanishes as the grid is refined, because the drift contracts (for
``memoryless`` the state forgets its start), but it is larger than for ``"constant"`` at the
same number of steps (measured in tests/solvers/test_sde.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from flowmatch.interfaces import Cond
from flowmatch.paths.affine import AffinePath
from flowmatch.paths.schedules import ScheduleOutput
from flowmatch.solvers.base import SAMPLERS, FixedStepConfig, Sampler, SamplerConfig, StepOutput
from flowmatch.solvers.context import ContextualSampler, SamplingContext
from flowmatch.utils.checks import check_in_choices, check_positive_float
from flowmatch.utils.options import OptionError, option

__all__ = [
    "DIFFUSIONS",
    "EulerMaruyama",
    "EulerMaruyamaConfig",
    "MixedConfig",
    "MixedSampler",
    "diffusion_g2",
    "window_times",
]

Diffusion = Literal["constant", "flow_grpo", "memoryless"]
#: The diffusion schedules (see the module docstring) and whether ``g`` is infinite at ``t = 0``.
DIFFUSIONS: dict[str, bool] = {"constant": False, "flow_grpo": True, "memoryless": True}


def diffusion_g2(kind: str, scale: float, t: Tensor, c: ScheduleOutput) -> Tensor:
    """``g(t)^2`` of a diffusion schedule at times ``t`` with the path coefficients ``c`` at ``t``.

    Args:
        kind: ``"constant"``, ``"flow_grpo"`` or ``"memoryless"``.
        scale: ``a``.
        t: times, shaped like the coefficients (e.g. ``(B, 1)``), in ``(0, 1)``.
        c: the schedule at ``t``.

    Returns:
        ``g^2``, shaped like ``t``.
    """
    a2 = scale * scale
    if kind == "constant":
        return torch.full_like(t, a2)
    if kind == "flow_grpo":
        return a2 * (1 - t) / t
    # memoryless: 2 sigma (alpha' sigma / alpha - sigma')
    return 2 * a2 * c.sigma * (c.d_alpha * c.sigma / c.alpha - c.d_sigma)


class _SDEMixin:
    """Shared checks of the SDE samplers' options and context."""

    diffusion: Diffusion
    scale: float
    path: AffinePath | None

    def _init_sde(self, diffusion: Diffusion, scale: float, path: AffinePath | None) -> None:
        check_in_choices(diffusion, DIFFUSIONS, "diffusion")
        self.diffusion = diffusion
        self.scale = check_positive_float(scale, "scale")
        if path is not None and not isinstance(path, AffinePath):
            raise TypeError(f"path must be an AffinePath, got {type(path).__name__}")
        self.path = path

    def _context_path(self, context: SamplingContext, name: str) -> AffinePath:
        if not context.gaussian_source:
            raise ValueError(
                f"{name} derives the score from the velocity assuming a standard normal source "
                f"N(0, I); {context.name} has another source, so its SDE would not keep the "
                "ODE's marginals"
            )
        path = self.path if self.path is not None else context.path
        if path is None:
            raise ValueError(f"{name} needs the run's path to turn the velocity into a score")
        return path


class EulerMaruyama(_SDEMixin, ContextualSampler):
    """Euler-Maruyama for the marginal-preserving SDE of a flow (1 NFE per step).

    One step from ``t`` to ``t + h``::

        u = v(x, t);   score = -E[x0 | x] / sigma_t   (through the path)
        mean = x + h (u + g(t)^2 / 2 * score);   std = g(t) sqrt(h)
        x'   = mean + std * noise,  noise ~ N(0, I)

    so the step's transition is ``N(mean, std^2 I)``; ``solve(..., return_log_probs=True)``
    returns its log-density summed over dimensions (Flow-GRPO averages over dimensions
    instead). Weak order 1 (Kloeden & Platen 1992, Thm. 14.1.5). Runs forward only.

    Args:
        diffusion: ``"constant"``, ``"flow_grpo"`` or ``"memoryless"`` (module docstring).
        scale: ``a > 0`` of the schedule.
        path: the affine path of the field; ``None``: taken from the run when sampling
            through ``flowmatch.api`` (:func:`~flowmatch.solvers.context.bind_sampler`).

    Raises:
        ValueError: unknown ``diffusion`` or ``scale <= 0``; at a step: no path, or a
            backward step.

    Example:
        >>> import torch
        >>> from flowmatch.paths import AffinePath
        >>> from flowmatch.solvers import solve
        >>> from flowmatch.times import make_grid
        >>> em = EulerMaruyama("constant", 0.5, path=AffinePath())
        >>> field = lambda x, t, cond=None: -x  # any velocity field
        >>> sol = solve(field, torch.zeros(4, 2), make_grid("uniform", 10), em,
        ...             generator=torch.Generator().manual_seed(0), return_log_probs=True)
        >>> sol.log_probs.shape
        torch.Size([10, 4])
    """

    order = 1
    stages = 1
    stochastic = True
    requires = ("path",)

    def __init__(
        self,
        diffusion: Diffusion = "flow_grpo",
        scale: float = 0.7,
        *,
        path: AffinePath | None = None,
    ) -> None:
        self._init_sde(diffusion, scale, path)
        self._cache: dict[tuple[float, float], tuple[float, float, float]] = {}

    def __repr__(self) -> str:
        return f"EulerMaruyama({self.diffusion!r}, scale={self.scale}, path={self.path!r})"

    def bind(self, context: SamplingContext) -> EulerMaruyama:
        """A copy with the run's path (checks that the source is ``N(0, I)``)."""
        return EulerMaruyama(
            self.diffusion, self.scale, path=self._context_path(context, "euler_maruyama")
        )

    def advance(
        self,
        field: Any,
        x: Tensor,
        t: float,
        t_next: float,
        cond: Cond = None,
        noise: Tensor | None = None,
        state: Any = None,
    ) -> StepOutput:
        """One Euler-Maruyama step; ``noise`` ``(B, *D)`` is standard normal."""
        if self.path is None:
            raise ValueError(
                "euler_maruyama needs the path of the field: pass EulerMaruyama(path=...) or "
                "sample through flowmatch.api (which binds the run's path)"
            )
        if noise is None:
            raise ValueError("euler_maruyama is stochastic: solve() passes it one noise per step")
        h = t_next - t
        if h <= 0:
            raise ValueError(f"SDE sampling runs forward in time, got a step {t} -> {t_next}")
        v = field(x, x.new_full((x.shape[0],), t), cond)
        c_x, c_v, std = self.coefficients(t, t_next)
        mean = torch.add(x * c_x, v, alpha=c_v)
        return StepOutput(torch.add(mean, noise, alpha=std), 1, None, mean, x.new_tensor(std))

    def transition(self, x: Tensor, v: Tensor, t: float, t_next: float) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` of the step ``t -> t_next`` from ``x`` with velocity ``v = u_t(x)``.

        ``std`` is a tensor of shape ``(1, ..., 1)`` (one grid time per batch); used by search
        and fine-tuning methods that reuse a velocity they already evaluated.
        """
        c_x, c_v, std = self.coefficients(t, t_next)
        mean = torch.add(x * c_x, v, alpha=c_v)
        return mean, x.new_full((1,) * x.ndim, std)

    def coefficients(self, t: float, t_next: float) -> tuple[float, float, float]:
        """``(c_x, c_v, std)`` with ``mean = c_x x + c_v u``: the step's affine form.

        With ``E[x0 | x] = (alpha' x - alpha u) / D`` and ``k = g^2 / (2 sigma)``:
        ``mean = x + h (u - k E[x0|x])``, so ``c_x = 1 - h k alpha' / D`` and
        ``c_v = h (1 + k alpha / D)`` (``D`` clamped to the path's ``eps``, as in its
        conversions). Computed once per grid interval in float64 (cached: the same grid is
        reused by every batch).
        """
        key = (t, t_next)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        assert self.path is not None  # checked by advance / the caller
        h = t_next - t
        t_g = t_next if (t == 0.0 and DIFFUSIONS[self.diffusion]) else t
        both = self.path.schedule(torch.tensor([t, t_g], dtype=torch.float64))
        c = ScheduleOutput(*(v[:1] for v in (both.alpha, both.sigma, both.d_alpha, both.d_sigma)))
        c_g = ScheduleOutput(*(v[1:] for v in (both.alpha, both.sigma, both.d_alpha, both.d_sigma)))
        g2 = float(
            diffusion_g2(self.diffusion, self.scale, torch.tensor([t_g], dtype=torch.float64), c_g)
        )
        alpha, sigma, d_alpha = float(c.alpha), float(c.sigma), float(c.d_alpha)
        d = max(float(c.d_alpha * c.sigma - c.d_sigma * c.alpha), self.path.eps)
        k = 0.5 * g2 / sigma  # sigma_t > 0: steps start before t = 1
        out = (1.0 - h * k * d_alpha / d, h * (1.0 + k * alpha / d), math.sqrt(g2 * h))
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = out
        return out


def window_times(grid: Tensor, start: int, size: int) -> tuple[float, float]:
    """The time window ``[grid[start], grid[start + size])`` of steps ``start .. start+size-1``.

    MixGRPO's sliding window (Li et al. 2025, Sec. 3.2) is a range of step indices; the mixed
    sampler takes it as times so it works on any grid.

    Raises:
        ValueError: the window does not fit the grid.
    """
    num = grid.numel() - 1
    if not (isinstance(start, int) and isinstance(size, int)) or start < 0 or size < 1:
        raise ValueError(f"start must be an int >= 0 and size an int >= 1, got {start}, {size}")
    if start + size > num:
        raise ValueError(
            f"window of steps [{start}, {start + size}) exceeds the grid's {num} steps"
        )
    return float(grid[start]), float(grid[start + size])


class MixedSampler(_SDEMixin, ContextualSampler):
    """Stochastic steps inside a time window, a deterministic ODE sampler outside (MixGRPO).

    A step that starts at ``t`` with ``window[0] <= t < window[1]`` is an
    :class:`EulerMaruyama` step (its Gaussian transition is returned); any other step is one
    step of ``ode`` (e.g. a higher-order solver after the window: MixGRPO-Flash). With
    ``solve(..., return_log_probs=True)`` the deterministic steps contribute 0 (they are not
    part of the policy whose ratio GRPO clips; Li et al. 2025, "MixGRPO", Sec. 3.2).

    Args:
        ode: the ODE sampler outside the window (a fixed-step velocity sampler).
        window: ``(t_lo, t_hi)`` with ``0 <= t_lo < t_hi <= 1`` (see :func:`window_times`).
        diffusion: the SDE's diffusion schedule.
        scale: its ``a``.
        path: the affine path (``None``: bound from the run).

    Raises:
        TypeError: ``ode`` is not a deterministic fixed-step velocity sampler.
        ValueError: a bad window, diffusion or scale.
    """

    order = 1
    stages = 1  # inside the window; ode steps spend ode.stages (counted by StepOutput.nfe)
    stochastic = True
    requires = ("path",)

    def __init__(
        self,
        ode: Sampler,
        window: tuple[float, float],
        diffusion: Diffusion = "flow_grpo",
        scale: float = 0.7,
        *,
        path: AffinePath | None = None,
    ) -> None:
        if (
            not isinstance(ode, Sampler)
            or ode.stochastic
            or ode.adaptive
            or ode.field_kind != "velocity"
        ):
            raise TypeError(f"ode must be a deterministic fixed-step velocity sampler, got {ode!r}")
        lo, hi = (float(v) for v in window)
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"window must satisfy 0 <= t_lo < t_hi <= 1, got {window!r}")
        self._init_sde(diffusion, scale, path)
        self.ode, self.window = ode, (lo, hi)
        self.sde = EulerMaruyama(self.diffusion, self.scale, path=path)

    def __repr__(self) -> str:
        return (
            f"MixedSampler({self.ode!r}, window={self.window}, diffusion={self.diffusion!r}, "
            f"scale={self.scale})"
        )

    def bind(self, context: SamplingContext) -> MixedSampler:
        """A copy with the run's path."""
        path = self._context_path(context, "mixed")
        return MixedSampler(self.ode, self.window, self.diffusion, self.scale, path=path)

    def advance(
        self,
        field: Any,
        x: Tensor,
        t: float,
        t_next: float,
        cond: Cond = None,
        noise: Tensor | None = None,
        state: Any = None,
    ) -> StepOutput:
        """An SDE step inside the window, an ODE step (no transition) outside."""
        if self.window[0] <= t < self.window[1]:
            return self.sde.advance(field, x, t, t_next, cond, noise)
        return self.ode.advance(field, x, t, t_next, cond)


# ---------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class EulerMaruyamaConfig(FixedStepConfig):
    """Options of Euler-Maruyama SDE sampling (1 NFE per step)."""

    diffusion: Diffusion = option("flow_grpo", doc="g(t): constant, flow_grpo or memoryless")
    scale: float = option(0.7, gt=0, doc="a of the diffusion schedule")


@dataclass(frozen=True)
class MixedConfig(SamplerConfig):
    """Options of mixed ODE/SDE sampling: SDE steps in a time window, ODE steps elsewhere."""

    budget_fields: ClassVar[tuple[str, ...]] = ("steps",)
    steps: int = option(
        16, ge=1, doc="grid intervals (NFE: 1 per SDE step, ode's stages per ODE step)"
    )
    ode: str = option("euler", doc="fixed-step ODE sampler outside the window")
    window_lo: float = option(0.0, ge=0, le=1, doc="first time of the SDE window")
    window_hi: float = option(0.5, ge=0, le=1, doc="end of the SDE window (exclusive)")
    diffusion: Diffusion = option("flow_grpo", doc="g(t) inside the window")
    scale: float = option(0.7, gt=0, doc="a of the diffusion schedule")

    def validate(self) -> None:
        """A deterministic fixed-step ``ode`` and ``window_lo < window_hi``."""
        entry = SAMPLERS.entry(self.ode)
        cls = SAMPLERS[self.ode]
        if (
            cls.stochastic
            or cls.adaptive
            or cls.field_kind != "velocity"
            or not issubclass(entry.config, FixedStepConfig)
        ):
            raise OptionError("ode", f"must be a fixed-step ODE sampler, got {self.ode!r}")
        if not self.window_lo < self.window_hi:
            raise OptionError(
                "window_lo", f"must be < window_hi = {self.window_hi}, got {self.window_lo}"
            )

    def num_steps(self) -> int:
        """``steps`` grid intervals."""
        return self.steps


def _build_mixed(config: SamplerConfig) -> MixedSampler:
    assert isinstance(config, MixedConfig)  # guaranteed by Registry.build
    ode = SAMPLERS[config.ode]()
    return MixedSampler(ode, (config.window_lo, config.window_hi), config.diffusion, config.scale)


SAMPLERS.add("euler_maruyama", EulerMaruyama, config=EulerMaruyamaConfig)
SAMPLERS.add("mixed", MixedSampler, config=MixedConfig, build=_build_mixed)
