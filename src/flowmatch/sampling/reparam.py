"""Sample a model trained on one affine path along another: the exact time/scale change.

Two affine paths with the same source and data, ``x_t = alpha_t x1 + sigma_t x0`` (trained)
and ``xb_r = alphab_r x1 + sigmab_r x0`` (wanted), are related pointwise by
``xb_r = s_r x_{t_r}``, where ``t_r`` matches the signal-to-noise ratio,
``alpha_{t_r} / sigma_{t_r} = alphab_r / sigmab_r``, and ``s_r = sigmab_r / sigma_{t_r}``
(Kingma et al. 2021, "Variational Diffusion Models", Sec. 4 (equivalence of schedules with the
same SNR endpoints); Lipman et al. 2024, "Flow Matching Guide and Code", Sec. 4.8; the
``ScheduleTransformedModel`` of facebookresearch/flow_matching). Differentiating gives the
velocity of the wanted path from the trained one::

    ub(xb, r) = (s'_r / s_r) xb + s_r t'_r u(xb / s_r, t_r)

with ``t'_r = (Db_r / D_{t_r}) / s_r^2`` (``D = alpha' sigma - sigma' alpha``, the derivative
of the SNR times ``sigma^2``) and ``s_r = (alphab_r + sigmab_r) / (alpha_{t_r} + sigma_{t_r})``
(the same ratio, well conditioned at both ends). The conversion is exact: with the exact
field, both paths' flows map a source sample to the same data point.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flowmatch.interfaces import Cond
from flowmatch.paths.affine import AffinePath
from flowmatch.paths.schedules import Schedule
from flowmatch.utils.tensor import expand_like

__all__ = ["ScheduleTransformedField", "match_times"]

#: Bisection steps of the SNR inversion (float64: 60 halvings reach round-off).
_BISECTION_STEPS = 60


def match_times(trained: Schedule, target: Schedule, r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(t_r, s_r, t'_r)`` mapping times ``r`` ``(B,)`` of ``target`` onto ``trained``.

    ``t_r`` solves ``alpha(t) sigmab(r) = alphab(r) sigma(t)`` by bisection (both schedules'
    SNR increase with time), in float64.

    Returns:
        ``t_r``, ``s_r``, ``dt_r / dr``, each ``(B,)`` float64.
    """
    r64 = r.double()
    cb = target(r64)
    lo, hi = torch.zeros_like(r64), torch.ones_like(r64)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        c = trained(mid)
        above = c.alpha * cb.sigma - cb.alpha * c.sigma > 0
        hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
    t = 0.5 * (lo + hi)
    c = trained(t)
    s = (cb.alpha + cb.sigma) / (c.alpha + c.sigma)
    d_trained = c.d_alpha * c.sigma - c.d_sigma * c.alpha
    d_target = cb.d_alpha * cb.sigma - cb.d_sigma * cb.alpha
    return t, s, d_target / (d_trained * s * s)


class ScheduleTransformedField:
    """The velocity field of ``target``'s path from a field trained on ``trained``'s path.

    Args:
        field: the trained velocity field ``(x, t, cond) -> (B, *D)``.
        trained: the path (or schedule) the field was trained on.
        target: the path (or schedule) to sample along.

    Example:
        >>> import torch
        >>> from flowmatch.paths import CosineSchedule, LinearSchedule
        >>> f = ScheduleTransformedField(lambda x, t, c=None: torch.ones_like(x),
        ...                              LinearSchedule(), CosineSchedule())
        >>> f(torch.zeros(2, 3), torch.full((2,), 0.5)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self, field: Any, trained: AffinePath | Schedule, target: AffinePath | Schedule
    ) -> None:
        if not callable(field):
            raise TypeError(f"field must be callable, got {type(field).__name__}")
        self.field = field
        self.trained = _schedule(trained, "trained")
        self.target = _schedule(target, "target")

    def __repr__(self) -> str:
        return f"ScheduleTransformedField({self.field!r}, {self.trained!r} -> {self.target!r})"

    def __call__(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """The target path's velocity ``(B, *D)`` at ``x`` ``(B, *D)`` and its times ``t`` ``(B,)``."""
        tr, s, dt = match_times(self.trained, self.target, t)
        cb = self.target(t.double())
        c = self.trained(tr)
        # ds/dr of s = (alphab + sigmab) / (alpha + sigma)(t_r)
        num, den = cb.alpha + cb.sigma, c.alpha + c.sigma
        ds = (cb.d_alpha + cb.d_sigma) / den - num * (c.d_alpha + c.d_sigma) * dt / den**2
        s_x, ds_x, dt_x = (expand_like(v.to(x.dtype), x) for v in (s, ds, dt))
        u = self.field(x / s_x, tr.to(x.dtype), cond)
        return (ds_x / s_x) * x + s_x * dt_x * u


def _schedule(value: AffinePath | Schedule, name: str) -> Schedule:
    schedule = value.schedule if isinstance(value, AffinePath) else value
    if not isinstance(schedule, Schedule):
        raise TypeError(f"{name} must be an AffinePath or a Schedule, got {type(value).__name__}")
    return schedule
