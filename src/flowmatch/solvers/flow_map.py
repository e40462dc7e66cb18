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
from flowmatch.solvers.context import ContextualSampler, SamplingContext


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


@SAMPLERS.register("flow_map_renoise", config=FixedStepConfig)
class RenoisingFlowMapSampler(ContextualSampler):
    """Multistep consistency sampling: jump to the data, re-noise to the next grid time.

    ``x1_hat = X(x_k, t_k, 1)``; ``x_{k+1} = t_{k+1} x1_hat + (1 - t_{k+1}) eps_k`` with fresh
    ``eps_k ~ N(0, I)`` (Song et al. 2023, "Consistency Models", Alg. 1, on the linear path
    ``x_t = t x1 + (1 - t) x0`` with a standard Gaussian source); the last step returns
    ``x1_hat``. For a consistency model this is the multistep sampler: if ``x1_hat`` has the
    data distribution, so has every re-noised state its path marginal, which composing the map
    deterministically does not guarantee for an imperfect map. Only for runs on the linear path
    with a Gaussian source: bound to a run (``flowmatch sample/eval``) it refuses others, whose
    re-noised states would not be on their path; 1 NFE per step.

    The transition of a step is ``N(t_{k+1} x1_hat, (1 - t_{k+1})^2 I)`` (degenerate at the
    last step, whose log-probability is therefore not defined).
    """

    order = 1
    stages = 1
    stochastic = True
    field_kind = "flow_map"

    def bind(self, context: SamplingContext) -> RenoisingFlowMapSampler:
        """Itself, once the run is checked to have the linear path and the ``N(0, I)`` source.

        Raises:
            ValueError: another source or path (the re-noised state would be off the path).
        """
        from flowmatch.paths.schedules import LinearSchedule

        if not context.gaussian_source:
            raise ValueError(
                f"flow_map_renoise re-noises with N(0, I); {context.name} has another source, "
                "so its re-noised states would not be on its path: use --solver flow_map"
            )
        if context.path is not None and not isinstance(context.path.schedule, LinearSchedule):
            raise ValueError(
                f"flow_map_renoise re-noises on the linear path x_t = t x1 + (1 - t) x0; "
                f"{context.name} uses {context.path!r}: use --solver flow_map"
            )
        return self

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
        """One jump to ``t = 1`` and a re-noising to ``t_next``."""
        if noise is None:
            raise ValueError("flow_map_renoise is stochastic: it needs one noise tensor per step")
        batch = x.shape[0]
        x1 = field(x, x.new_full((batch,), t), x.new_ones(batch), cond)
        std = x.new_tensor(1.0 - t_next)
        mean = t_next * x1
        return StepOutput(mean + std * noise, 1, mean=mean, std=std)
