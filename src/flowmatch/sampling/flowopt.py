"""FlowOpt: optimise the starting point of a flow through the whole flow, without backprop.

FlowOpt (Ronai, Kulikov & Michaeli 2025, "FlowOpt: Fast Optimization Through Whole Flow
Processes for Training-Free Editing"): let ``F(z)`` integrate the flow from a
point ``z`` at time ``grid[0]`` to ``t = 1``. To make ``F(z)`` match a target ``x*``
(reconstruction / inversion), iterate

    z_{k+1} = z_k - eta (F(z_k) - x*)

which is gradient descent on ``||F(z) - x*||^2 / 2`` with the Jacobian of ``F`` replaced by
the identity: no backpropagation through the network. Writing ``e_k = F(z_k) - x*`` and
``F(z_k + d) ~ F(z_k) + J d``, the error follows ``e_{k+1} ~ (I - eta J) e_k``, which contracts
when ``0 < eta < 2 / lambda_max(J)`` for a Jacobian with positive real spectrum (the paper's
step-size condition; :func:`step_bound` estimates ``lambda_max`` by power iteration on finite
differences of ``F``, the estimate is [inferred] for non-normal ``J``).

Reward steering uses the same identity-Jacobian step on a reward's gradient at the output:
``z_{k+1} = z_k + eta grad r(F(z_k))`` (one reward gradient, no gradient through the flow).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from flowmatch.interfaces import Cond
from flowmatch.solvers.base import Sampler
from flowmatch.solvers.integrate import solve
from flowmatch.utils.checks import check_positive_float, check_positive_int

__all__ = ["FlowOptResult", "flowopt", "flowopt_reward", "step_bound"]


@dataclass(frozen=True)
class FlowOptResult:
    """``z`` (the optimised start), ``x = F(z)``, and per-iteration history.

    Attributes:
        z: the final start ``(B, *D)``.
        x: its output ``F(z)``.
        history: per iteration (index 0 = the initial ``z``), the mean over the batch of
            ``||F(z_k) - x*||`` (reconstruction) or of ``r(F(z_k))`` (reward).
        nfe: field evaluations spent.
    """

    z: Tensor
    x: Tensor
    history: list[float] = field(default_factory=list)
    nfe: int = 0


def _flow(fld: Any, z: Tensor, grid: Tensor, sampler: Sampler, cond: Cond) -> tuple[Tensor, int]:
    with torch.no_grad():
        sol = solve(fld, z, grid, sampler, cond=cond)
    return sol.x, sol.nfe


def flowopt(
    fld: Any,
    target: Tensor,
    z0: Tensor,
    grid: Tensor,
    sampler: Sampler,
    *,
    eta: float = 0.5,
    iterations: int = 10,
    cond: Cond = None,
) -> FlowOptResult:
    """Minimise ``||F(z) - target||`` over ``z`` with the identity-Jacobian step.

    Args:
        fld: the velocity field.
        target: ``x*`` ``(B, *D)``.
        z0: the starting point ``(B, *D)`` at ``grid[0]`` (e.g. an inversion of ``target``).
        grid: the grid of ``F`` (from ``grid[0]`` to 1).
        sampler: a deterministic sampler.
        eta: step size (see :func:`step_bound`).
        iterations: number of updates.
        cond: conditioning.

    Example:
        >>> import torch
        >>> from flowmatch.solvers import Euler
        >>> from flowmatch.times import make_grid
        >>> res = flowopt(lambda x, t, c=None: torch.ones_like(x), torch.ones(2, 1),
        ...               torch.zeros(2, 1), make_grid("uniform", 4), Euler(), eta=1.0,
        ...               iterations=1)
        >>> res.z.tolist(), res.history[-1]
        ([[0.0], [0.0]], 0.0)
    """
    check_positive_float(eta, "eta")
    check_positive_int(iterations, "iterations", minimum=0)
    z, nfe = z0.detach().clone(), 0
    x, n = _flow(fld, z, grid, sampler, cond)
    nfe += n
    history = [_err(x, target)]
    for _ in range(iterations):
        z = z - eta * (x - target)
        x, n = _flow(fld, z, grid, sampler, cond)
        nfe += n
        history.append(_err(x, target))
    return FlowOptResult(z, x, history, nfe)


def _err(x: Tensor, target: Tensor) -> float:
    return float((x - target).reshape(len(x), -1).norm(dim=1).mean())


def flowopt_reward(
    fld: Any,
    reward: Callable[[Tensor], Tensor],
    z0: Tensor,
    grid: Tensor,
    sampler: Sampler,
    *,
    eta: float = 0.1,
    iterations: int = 10,
    cond: Cond = None,
) -> FlowOptResult:
    """Increase ``reward(F(z))`` with ``z <- z + eta grad_x reward(x)|_{x = F(z)}``."""
    check_positive_float(eta, "eta")
    check_positive_int(iterations, "iterations", minimum=0)
    z, nfe = z0.detach().clone(), 0
    x, n = _flow(fld, z, grid, sampler, cond)
    nfe += n
    history = []
    for k in range(iterations + 1):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            r = reward(xg)
            if not r.requires_grad:
                raise ValueError(
                    f"reward {reward!r} has no gradient in x (a black-box or piecewise-constant "
                    "reward); FlowOpt steering ascends its gradient: use a search instead"
                )
            (grad,) = torch.autograd.grad(r.sum(), xg)
        history.append(float(r.detach().mean()))
        if k == iterations:
            break
        z = z + eta * grad
        x, n = _flow(fld, z, grid, sampler, cond)
        nfe += n
    return FlowOptResult(z, x, history, nfe)


def step_bound(
    fld: Any,
    z: Tensor,
    grid: Tensor,
    sampler: Sampler,
    *,
    iterations: int = 10,
    eps: float = 1e-3,
    cond: Cond = None,
    generator: torch.Generator | None = None,
) -> float:
    """``2 / lambda_max(J)``: the largest stable FlowOpt step at ``z`` (power iteration).

    ``J d ~ (F(z + eps d) - F(z)) / eps`` along one direction per sample, ``iterations``
    times; ``lambda_max`` is the largest Rayleigh quotient over the batch.
    """
    base, _ = _flow(fld, z, grid, sampler, cond)
    d = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
    lam = z.new_zeros(len(z))
    for _ in range(iterations):
        d = d / d.reshape(len(z), -1).norm(dim=1).reshape(-1, *([1] * (z.ndim - 1)))
        jd = (_flow(fld, z + eps * d, grid, sampler, cond)[0] - base) / eps
        lam = (jd * d).reshape(len(z), -1).sum(1)
        d = jd
    return float(2.0 / lam.max().clamp_min(1e-12))
