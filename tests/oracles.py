"""Analytic test problems shared by the test suite (no training, closed forms only).

Two problems, both exact in float64:

``GaussianOracle``
    Source ``x0 ~ N(0, I)``, data ``x1 ~ N(mu, s^2 I)``, independent coupling, any affine path
    ``x_t = alpha_t x1 + sigma_t x0`` (default: linear, ``alpha_t = t``, ``sigma_t = 1 - t``).
    Then ``x_t ~ N(alpha_t mu, v_t I)`` with ``v_t = alpha_t^2 s^2 + sigma_t^2``, and by Gaussian
    conditioning (ALGORITHMS.md 0.2; DESIGN.md 1.8(a))::

        E[x1 | x_t = x] = mu + alpha_t s^2 (x - alpha_t mu) / v_t
        E[x0 | x_t = x] = sigma_t (x - alpha_t mu) / v_t
        u_t(x)          = alpha'_t E[x1 | x] + sigma'_t E[x0 | x]
                        = alpha'_t mu + (v'_t / (2 v_t)) (x - alpha_t mu)
        grad log p_t(x) = -(x - alpha_t mu) / v_t
        flow map        : x(t) = alpha_t mu + sqrt(v_t / v_r) (x(r) - alpha_r mu)

    For the linear path ``sqrt(v_t) = sqrt((1 - t)^2 + t^2 s^2)`` and the flow from ``x0`` is
    ``x(t) = t mu + sqrt(v_t) x0``, ending at ``mu + s x0``. The divergence of ``u_t`` is the
    constant ``D v'_t / (2 v_t)``, so ``int_0^1 div u_t dt = (D / 2) log(v_1 / v_0)``
    (``D log s`` for a path with exact endpoints).

    Do not use it for order-of-convergence tests: it is too symmetric (DESIGN.md 1.8(a) caveat;
    midpoint shows order ~3 on it). Use ``linear_system`` for orders.

``linear_system``
    ``dy/dt = g(t) A y`` with a fixed seeded random matrix ``A``; exact solution
    ``y(t) = expm(G(t) A) y0`` with ``G(t) = int_0^t g``. Generic (no symmetry), so fixed-step
    solvers show their textbook order on it (DESIGN.md 1.8(b)).

Import from any test module as ``from oracles import GaussianOracle, linear_system``: pytest
puts ``tests/`` on ``sys.path`` because ``tests/conftest.py`` lives there (no ``__init__.py``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from flowmatch.paths import LinearSchedule, Schedule, ScheduleOutput

__all__ = ["ExactAverageVelocity", "GaussianOracle", "LinearField", "LinearSystem", "linear_system"]


class GaussianOracle:
    """Closed-form flow-matching quantities for ``N(0, I) -> N(mu, s^2 I)`` on an affine path.

    Every method takes points ``x`` of shape ``(B, D)`` (``D = mu.numel()``) and times ``t`` as a
    ``(B,)`` tensor or a Python float (broadcast to ``(B,)``); results have the dtype/device of
    ``x``. The object itself is a velocity field: ``oracle(x, t, cond=None) = u_t(x)``.

    Args:
        mu: data mean, shape ``(D,)`` (use float64 for numerical tests).
        s: data standard deviation, ``> 0``.
        schedule: the path's ``(alpha, sigma)`` schedule; default ``LinearSchedule()``. Any
            ``flowmatch.paths.Schedule`` works, including ones without exact endpoints (VP):
            formulas use ``v_t`` and never divide by ``alpha_t`` or ``sigma_t``.

    Example:
        >>> import torch
        >>> o = GaussianOracle(torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5)
        >>> x0 = torch.zeros(3, 2, dtype=torch.float64)
        >>> o.flow(x0, 1.0)[0].tolist()  # mu + s * x0
        [1.0, -2.0]
    """

    def __init__(self, mu: Tensor, s: float, schedule: Schedule | None = None) -> None:
        if not isinstance(mu, Tensor) or mu.ndim != 1 or not mu.is_floating_point():
            raise ValueError(f"mu must be a 1-D float tensor (D,), got {mu!r}")
        if not (isinstance(s, int | float) and s > 0 and math.isfinite(s)):
            raise ValueError(f"s must be a finite number > 0, got {s!r}")
        self.mu = mu
        self.s = float(s)
        self.schedule = schedule if schedule is not None else LinearSchedule()

    def __repr__(self) -> str:
        return f"GaussianOracle(mu={self.mu.tolist()}, s={self.s}, schedule={self.schedule!r})"

    @property
    def dim(self) -> int:
        """Number of features ``D``."""
        return self.mu.numel()

    # ----------------------------------------------------------------- coefficients
    def _time(self, t: Tensor | float, like: Tensor) -> Tensor:
        """``t`` as a ``(B, 1)`` column broadcasting against ``like`` ``(B, D)``."""
        if isinstance(t, Tensor):
            if t.shape != (like.shape[0],):
                raise ValueError(f"t must be (B,) = ({like.shape[0]},), got {tuple(t.shape)}")
            return t.to(like)[:, None]
        return like.new_full((like.shape[0], 1), float(t))

    def coefficients(self, t: Tensor | float, like: Tensor) -> ScheduleOutput:
        """Schedule coefficients at ``t``, each ``(B, 1)`` (``like`` gives ``B``, dtype, device)."""
        return self.schedule(self._time(t, like))

    def variance(self, t: Tensor | float, like: Tensor) -> Tensor:
        """Per-coordinate marginal variance ``v_t = alpha_t^2 s^2 + sigma_t^2``, ``(B, 1)``."""
        c = self.coefficients(t, like)
        return c.alpha**2 * self.s**2 + c.sigma**2

    def d_variance(self, t: Tensor | float, like: Tensor) -> Tensor:
        """``d v_t / dt = 2 (alpha_t alpha'_t s^2 + sigma_t sigma'_t)``, ``(B, 1)``."""
        c = self.coefficients(t, like)
        return 2 * (c.alpha * c.d_alpha * self.s**2 + c.sigma * c.d_sigma)

    def mean(self, t: Tensor | float, like: Tensor) -> Tensor:
        """Marginal mean ``alpha_t mu``, ``(B, D)``."""
        c = self.coefficients(t, like)
        return c.alpha * self.mu.to(like)

    # ----------------------------------------------------------------- sampling
    def sample_x0(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` source samples ``N(0, I)``, ``(n, D)``, dtype/device of ``mu``."""
        return torch.randn(n, self.dim, generator=generator, dtype=self.mu.dtype).to(self.mu.device)

    def sample_x1(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` data samples ``N(mu, s^2 I)``, ``(n, D)``."""
        return self.mu + self.s * self.sample_x0(n, generator)

    # ----------------------------------------------------------------- posteriors, field
    def expected_x1(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``E[x1 | x_t = x] = mu + alpha_t s^2 (x - alpha_t mu) / v_t`` (the ideal x1-prediction)."""
        c = self.coefficients(t, x)
        v = c.alpha**2 * self.s**2 + c.sigma**2
        mu = self.mu.to(x)
        return mu + c.alpha * self.s**2 * (x - c.alpha * mu) / v

    def expected_x0(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``E[x0 | x_t = x] = sigma_t (x - alpha_t mu) / v_t`` (the ideal x0/eps-prediction)."""
        c = self.coefficients(t, x)
        v = c.alpha**2 * self.s**2 + c.sigma**2
        return c.sigma * (x - c.alpha * self.mu.to(x)) / v

    def velocity(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Marginal velocity ``u_t(x) = alpha'_t E[x1|x] + sigma'_t E[x0|x]``, ``(B, D)``.

        Equals ``alpha'_t mu + (v'_t / (2 v_t)) (x - alpha_t mu)``; for the linear path
        ``mu + (sigma_t' / sigma_t)(x - t mu)`` with ``sigma_t = sqrt(v_t)`` (DESIGN.md 1.8(a)).
        """
        c = self.coefficients(t, x)
        return c.d_alpha * self.expected_x1(x, t) + c.d_sigma * self.expected_x0(x, t)

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """The oracle as a ``VelocityField``; ``cond`` is accepted and ignored (unconditional)."""
        return self.velocity(x, t)

    def score(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``grad_x log p_t(x) = -(x - alpha_t mu) / v_t``, ``(B, D)``."""
        return -(x - self.mean(t, x)) / self.variance(t, x)

    def log_prob(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``log p_t(x) = log N(x; alpha_t mu, v_t I)`` summed over features, ``(B,)``."""
        v = self.variance(t, x)[:, 0]
        sq = (x - self.mean(t, x)).pow(2).sum(1)
        return -0.5 * (sq / v + self.dim * torch.log(2 * math.pi * v))

    def divergence(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``div u_t(x) = D v'_t / (2 v_t)`` (independent of ``x``), ``(B,)``."""
        return (self.dim * self.d_variance(t, x) / (2 * self.variance(t, x)))[:, 0]

    def integrated_divergence(self, t0: float = 0.0, t1: float = 1.0) -> float:
        """``int_{t0}^{t1} div u_t dt = (D / 2) log(v_{t1} / v_{t0})`` (a Python float)."""
        ref = self.mu.new_zeros(1, self.dim)
        v0, v1 = self.variance(t0, ref), self.variance(t1, ref)
        return 0.5 * self.dim * float(torch.log(v1 / v0))

    # ----------------------------------------------------------------- exact flow
    def flow_map(self, x: Tensor, t_from: Tensor | float, t_to: Tensor | float) -> Tensor:
        """Exact ODE solution: the state at ``t_to`` of the trajectory through ``x`` at ``t_from``.

        ``x(t_to) = alpha_{t_to} mu + sqrt(v_{t_to} / v_{t_from}) (x - alpha_{t_from} mu)``.
        Works in both directions (``t_to < t_from`` inverts the flow).
        """
        scale = torch.sqrt(self.variance(t_to, x) / self.variance(t_from, x))
        return self.mean(t_to, x) + scale * (x - self.mean(t_from, x))

    def flow(self, x0: Tensor, t: Tensor | float) -> Tensor:
        """Exact flow from ``x(0) = x0``: ``x(t) = alpha_t mu + sqrt(v_t / v_0)(x0 - alpha_0 mu)``.

        For a schedule with exact endpoints ``v_0 = 1``, so ``x(t) = alpha_t mu + sqrt(v_t) x0``
        and ``x(1) = mu + s x0``.
        """
        return self.flow_map(x0, 0.0, t)

    def log_prob_data(self, x1: Tensor) -> Tensor:
        """``log p_1(x1)``, ``(B,)``; with exact endpoints this is ``log N(x1; mu, s^2 I)``."""
        return self.log_prob(x1, 1.0)


class LinearField:
    """The velocity field ``v(y, t) = g(t) A y`` with ``g(t) = 1`` or ``g(t) = 1 + t``.

    Attributes:
        A: the matrix ``(D, D)``.
        time_dependent: whether ``g(t) = 1 + t`` (non-autonomous) instead of ``1``.
    """

    def __init__(self, A: Tensor, *, time_dependent: bool = False) -> None:
        self.A = A
        self.time_dependent = time_dependent

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """``g(t) A y`` for ``x`` ``(B, D)`` and ``t`` ``(B,)``; ``cond`` is ignored."""
        v = x @ self.A.T
        return (1 + t)[:, None] * v if self.time_dependent else v

    def exact(self, y0: Tensor, t: float) -> Tensor:
        """``y(t) = expm(G(t) A) y0`` for each row of ``y0`` ``(B, D)``; ``G(t) = int_0^t g``."""
        big_g = t + 0.5 * t * t if self.time_dependent else t
        return y0 @ torch.linalg.matrix_exp(big_g * self.A).T


class LinearSystem(NamedTuple):
    """``(field, y0, exact)`` of a linear ODE; ``exact`` is ``y(1)`` ``(B, D)``."""

    field: LinearField
    y0: Tensor
    exact: Tensor


def linear_system(
    dim: int = 10,
    seed: int = 0,
    *,
    batch: int = 1,
    scale: float = 0.5,
    time_dependent: bool = False,
    dtype: torch.dtype = torch.float64,
) -> LinearSystem:
    """A generic linear ODE ``dy/dt = g(t) A y`` with its exact solution at ``t = 1``.

    ``A = scale * randn(dim, dim)`` and ``y0 = randn(batch, dim)`` from a generator seeded with
    ``seed`` (DESIGN.md 1.8(b)). ``exact = y0 @ expm(G(1) A).T`` with ``G(1) = 1`` (autonomous)
    or ``G(1) = 1.5`` for ``g(t) = 1 + t`` (non-autonomous: also checks stage times ``c_i``).
    ``field.exact(y0, t)`` gives the solution at any ``t`` (negative ``t`` too).

    Args:
        dim: number of features ``D``.
        seed: seed of the generator drawing ``A`` then ``y0``.
        batch: number of initial states ``B``.
        scale: scale of the entries of ``A``.
        time_dependent: use ``g(t) = 1 + t`` instead of ``g = 1``.
        dtype: dtype of ``A`` and ``y0``.

    Returns:
        ``LinearSystem(field, y0 (B, D), exact (B, D))``; unpack as ``field, y0, exact``.
    """
    g = torch.Generator().manual_seed(seed)
    A = scale * torch.randn(dim, dim, generator=g, dtype=dtype)
    y0 = torch.randn(batch, dim, generator=g, dtype=dtype)
    field = LinearField(A, time_dependent=time_dependent)
    return LinearSystem(field, y0, field.exact(y0, 1.0))


class ExactAverageVelocity(torch.nn.Module):
    """The Gaussian oracle's exact two-time network ``u(x, s, t) = (X(x, s, t) - x) / (t - s)``.

    Called like a two-time model, ``net(x, s, cond=None, t_end=t)``; on the diagonal (and
    without ``t_end``) it is the exact velocity ``u_s(x)``. Differentiable in ``x``, ``s`` and
    ``t`` (``torch.func.jvp`` works through it), so every few-step objective's target can be
    evaluated at the exact flow map.
    """

    time_inputs = 2

    def __init__(self, oracle: GaussianOracle) -> None:
        super().__init__()
        self.oracle = oracle

    def forward(
        self, x: Tensor, s: Tensor, cond: Tensor | None = None, t_end: Tensor | None = None
    ) -> Tensor:
        """``(X(x, s, t) - x) / (t - s)`` where ``t != s``, the velocity where ``t == s``."""
        v = self.oracle.velocity(x, s)
        if t_end is None:
            return v
        h = (t_end - s)[:, None]
        safe = torch.where(h == 0, torch.ones_like(h), h)
        u = (self.oracle.flow_map(x, s, t_end) - x) / safe
        return torch.where(h == 0, v, u)
