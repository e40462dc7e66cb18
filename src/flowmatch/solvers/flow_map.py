"""Sampling with a flow map: one evaluation of ``X(x, s, t)`` per grid interval.

A flow map ``X(x, s, t)`` returns the state at time ``t`` of the flow started from ``x`` at
time ``s`` (Boffi, Albergo & Vanden-Eijnden 2025, "How to build a consistency model: learning
flow maps via self-distillation", eq. 2). With the exact map, any grid gives exact samples;
a learned map is sampled in 1, 2, 4, ... steps by composing it along the grid, which is what
one- and few-step generators (MeanFlow, consistency models, shortcut models) do.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from flowmatch.interfaces import Cond
from flowmatch.solvers.base import SAMPLERS, FixedStepConfig, Sampler, StepOutput


@SAMPLERS.register("flow_map", config=FixedStepConfig)
class FlowMapSampler(Sampler):
    """Compose a flow map along the grid: ``x_{k+1} = X(x_k, t_k, t_{k+1})``; 1 NFE per step.

    Example:
        >>> import torch
        >>> from flowmatch.solvers import solve
        >>> from flowmatch.times import make_grid
        >>> class Shift:  # the exact map of dx/dt = 1
        ...     field_kind = "flow_map"
        ...     def __call__(self, x, s, t, cond=None):
        ...         return x + (t - s)[:, None]
        >>> solve(Shift(), torch.zeros(2, 1), make_grid("uniform", 2), FlowMapSampler()).x.tolist()
        [[1.0], [1.0]]
    """

    order = 1  # exact for the exact map; the order of a learned map is its training error
    stages = 1
    field_kind = "flow_map"

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
        """One map evaluation from ``t`` to ``t_next``."""
        batch = x.shape[0]
        return StepOutput(field(x, x.new_full((batch,), t), x.new_full((batch,), t_next), cond), 1)
