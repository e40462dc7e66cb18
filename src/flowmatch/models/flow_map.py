"""Flow maps from networks: ``X(x, s, t) -> state at t`` of the flow through ``x`` at ``s``.

Two parameterisations, both flow maps (``field_kind = "flow_map"``), sampled by
``flowmatch.solvers.FlowMapSampler`` with one network evaluation per grid interval:

* :class:`AverageVelocityMap` wraps a two-time network ``u(x, s, t)`` (the average velocity
  over ``[s, t]``): ``X(x, s, t) = x + (t - s) u(x, s, t)`` (MeanFlow, Geng et al. 2025;
  flow maps, Boffi, Albergo & Vanden-Eijnden 2025). ``u(x, t, t)`` is the instantaneous
  velocity, so ``X(x, s, s) = x`` and ``d/dt X(x, s, t)|_{t=s} = v(x, s)`` by construction.
* :class:`EulerJumpMap` wraps a one-time network ``v(x, s)`` (a consistency-trained or
  straightened velocity net): ``X(x, s, t) = x + (t - s) v(x, s)``. On the linear path
  ``x + (1 - s) v(x, s)`` is the net's data estimate ``x1_hat``, i.e. the consistency function of
  a consistency model written as a velocity (Lu & Song 2024, TrigFlow; see
  ``flowmatch.fewstep.scm``).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from flowmatch.interfaces import Cond
from flowmatch.utils.tensor import expand_like


def _check_times(x: Tensor, s: Tensor, t: Tensor) -> None:
    batch = x.shape[0]
    for name, v in (("s", s), ("t", t)):
        if not isinstance(v, Tensor) or v.shape != (batch,):
            got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"{name} must be a tensor of shape (B,) = ({batch},), got {got}")


class AverageVelocityMap(nn.Module):
    """``X(x, s, t, cond) = x + (t - s) u(x, s, cond, t_end=t)`` for a two-time network ``u``.

    Args:
        net: a network ``(x, t, cond=None, t_end=None) -> (B, *D)`` with two time inputs
            (``MLP(..., time_inputs=2)``, ``UNet(..., time_inputs=2)`` or any module with that
            signature) returning the average velocity over ``[t, t_end]``.

    Raises:
        TypeError: ``net`` is not callable.
        ValueError: ``net`` declares ``time_inputs`` other than 2.

    Example:
        >>> import torch
        >>> from flowmatch.models import MLP
        >>> fmap = AverageVelocityMap(MLP(2, hidden=16, depth=1, time_inputs=2))
        >>> x, s = torch.randn(3, 2), torch.zeros(3)
        >>> bool(torch.equal(fmap(x, s, s), x))  # X(x, s, s) = x
        True
    """

    field_kind: Literal["flow_map"] = "flow_map"

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be a callable network, got {type(net).__name__}")
        inputs = getattr(net, "time_inputs", 2)
        if inputs != 2:
            raise ValueError(
                f"AverageVelocityMap needs a two-time network (time_inputs=2), got "
                f"{type(net).__name__} with time_inputs={inputs}; build the model with "
                "model.time_inputs = 2"
            )
        self.net = net

    def average_velocity(self, x: Tensor, s: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """``u(x, s, t)`` ``(B, *D)``: the mean velocity over ``[s, t]``."""
        return self.net(x, s, cond, t_end=t)

    def velocity(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """The diagonal ``u(x, t, t)``: the instantaneous velocity (a ``VelocityField``)."""
        return self.net(x, t, cond, t_end=t)

    def forward(self, x: Tensor, s: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """The state at ``t`` ``(B,)`` of the flow through ``x`` ``(B, *D)`` at ``s`` ``(B,)``."""
        _check_times(x, s, t)
        return x + expand_like(t - s, x) * self.net(x, s, cond, t_end=t)


class EulerJumpMap(nn.Module):
    """``X(x, s, t, cond) = x + (t - s) v(x, s, cond)`` for a one-time network ``v``.

    The flow map of a network trained to make one Euler step exact (a consistency model in
    velocity form, a one-step reflow student); sampling it on a grid equals the Euler sampler
    on that grid, but the run is a flow map (no velocity-only metrics such as NLL apply).

    Args:
        net: a velocity network ``(x, t, cond) -> (B, *D)``.

    Raises:
        TypeError: ``net`` is not callable.
    """

    field_kind: Literal["flow_map"] = "flow_map"

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be a callable network, got {type(net).__name__}")
        self.net = net

    def forward(self, x: Tensor, s: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """One Euler jump from ``s`` to ``t`` ``(B,)`` of ``x`` ``(B, *D)``."""
        _check_times(x, s, t)
        return x + expand_like(t - s, x) * self.net(x, s, cond)
