"""The sampler of transition fields (Transition Matching): one stochastic transition per step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flowmatch.interfaces import Cond
from flowmatch.solvers.base import SAMPLERS, FixedStepConfig, Sampler, StepOutput

__all__ = ["TransitionSampler"]


@SAMPLERS.register("transition", config=FixedStepConfig)
class TransitionSampler(Sampler):
    """``x_{k+1} = field(x_k, t_k, t_{k+1}, cond, noise_k)``: a learned Markov transition.

    For fields with ``field_kind = "transition"`` such as a Difference Transition Matching run
    (Shaul et al. 2025), which draws the transition's latent with its flow head from the
    step's standard-normal ``noise``. One backbone evaluation per step (``nfe`` counts those;
    the head's few small evaluations are not counted). Stochastic: ``solve`` gives one noise
    tensor per step; the transition is not Gaussian, so it has no log-probability.
    """

    order = 1
    stages = 1
    stochastic = True
    field_kind = "transition"

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
        """One transition from ``t`` to ``t_next``."""
        tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        tn = torch.full((x.shape[0],), t_next, dtype=x.dtype, device=x.device)
        return StepOutput(field(x, tt, tn, cond, noise), 1)
