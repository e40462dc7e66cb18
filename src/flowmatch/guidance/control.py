"""Test-time control of a flow on a differentiable cost of its data estimate (FOCUS-style).

Bill, Simsar & Hofmann (2025), "FOCUS: Optimal Control Meets Flow Matching", test-time
controller: sampling is a stochastic optimal control problem with the memoryless noise
schedule; its first-order controller adds the negative cost gradient to the velocity,

    u_ctrl(x, t) = u(x, t) - lambda * w(t) * grad_x C(x1_hat(x, t), t)

where ``x1_hat`` is the data estimate of the velocity (through the path) and the gradient
flows through the network (autograd). Weightings ``w(t)``:

* ``"focus"``: ``g^2(t) (1 - t)`` with the memoryless ``g^2 = 2 (1 - t + 1e-3) / (t + 1e-3)``
  (the repository's offsets keep it finite at ``t = 0``);
* ``"dps"``: ``b_t = sigma_t (alpha'_t sigma_t / alpha_t - sigma'_t)``, the factor that turns
  a score change into a velocity change (``alpha_t`` clamped to 0.05), i.e. the cost acts as
  a negative log-likelihood (Chung et al. 2023);
* ``"constant"``: ``w = 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from flowmatch.interfaces import Cond
from flowmatch.paths.affine import AffinePath
from flowmatch.utils.checks import check_in_choices
from flowmatch.utils.tensor import expand_like

__all__ = ["CostGradientField", "control_weight"]

Weighting = Literal["focus", "dps", "constant"]


def control_weight(kind: str, path: AffinePath, t: Tensor, like: Tensor) -> Tensor:
    """``w(t)`` of a weighting, shaped to broadcast against ``like`` ``(B, *D)``."""
    tt = expand_like(t, like)
    if kind == "constant":
        return torch.ones_like(tt)
    if kind == "focus":
        return 2 * (1 - tt + 1e-3) / (tt + 1e-3) * (1 - tt)
    c = path.schedule(tt)
    return c.sigma * (c.d_alpha * c.sigma / c.alpha.clamp_min(0.05) - c.d_sigma)


class CostGradientField:
    """``u - lambda w(t) grad_x C(x1_hat)``: steer a field down a differentiable cost.

    Args:
        field: the velocity field (differentiable in ``x``).
        path: its path (for ``x1_hat`` and the ``"dps"`` weight).
        cost: ``cost(x1_hat (B, *D), t (B,)) -> (B,)``, differentiable (e.g. a classifier's
            negative log-probability of a class, or a squared distance).
        scale: ``lambda >= 0`` (0: the field itself).
        weighting: ``"focus"``, ``"dps"`` or ``"constant"``.

    Raises:
        TypeError: ``field`` or ``cost`` is not callable.
        ValueError: ``scale`` negative or not finite, unknown weighting.

    Example:
        >>> import torch
        >>> from flowmatch.paths import AffinePath
        >>> f = CostGradientField(lambda x, t, c=None: -x, AffinePath(),
        ...                       lambda x1, t: x1.square().sum(1), scale=0.0)
        >>> f(torch.ones(2, 3), torch.full((2,), 0.5))[0].tolist()
        [-1.0, -1.0, -1.0]
    """

    def __init__(
        self,
        field: Any,
        path: AffinePath,
        cost: Callable[[Tensor, Tensor], Tensor],
        *,
        scale: float = 1.0,
        weighting: Weighting = "focus",
    ) -> None:
        if not callable(field) or not callable(cost):
            raise TypeError("field and cost must be callable")
        if (
            isinstance(scale, bool)
            or not isinstance(scale, int | float)
            or not (math.isfinite(scale) and scale >= 0)
        ):
            raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
        self.field, self.path, self.cost = field, path, cost
        self.scale = float(scale)
        self.weighting = check_in_choices(weighting, ("focus", "dps", "constant"), "weighting")

    def __repr__(self) -> str:
        return (
            f"CostGradientField({self.field!r}, scale={self.scale}, weighting={self.weighting!r})"
        )

    def __call__(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """The controlled velocity ``(B, *D)``."""
        if self.scale == 0.0:
            return self.field(x, t, cond)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            v = self.field(xg, t, cond)
            x1_hat = self.path.to_endpoints(v, src="velocity", xt=xg, t=t)[1]
            (grad,) = torch.autograd.grad(self.cost(x1_hat, t).sum(), xg)
        return v.detach() - self.scale * control_weight(self.weighting, self.path, t, x) * grad
