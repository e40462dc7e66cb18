"""Weighted conditional flow matching (W-CFM): Gibbs-kernel weights on independent pairs.

Calvo-Ordonez, Meunier et al. (2025), "Weighted Conditional Flow Matching", arXiv:2507.22270:
each training pair ``(x0, x1)`` of an independent coupling is weighted by the Gibbs kernel
``exp(-||x0 - x1||^2 / eps)``, so the loss is that of the coupling
``pi(x0, x1) ~ exp(-c / eps) p0(x0) p1(x1)``: the entropic-OT kernel without the Sinkhorn
potentials (hence marginals tilted by ``E_y exp(-c(x, y) / eps)``), at the cost of plain CFM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from flowmatch.interfaces import Cond, VelocityField
from flowmatch.objectives.base import (
    OBJECTIVES,
    LossOutput,
    ObjectiveConfig,
    ObjectiveStep,
    TrainingParts,
)
from flowmatch.objectives.common import batch_labels
from flowmatch.objectives.flow_matching import (
    FlowMatchingConfig,
    FlowMatchingObjective,
    flow_matching_args,
)
from flowmatch.utils.checks import check_in_choices, check_positive_float
from flowmatch.utils.options import option

__all__ = ["WeightedCFMConfig", "WeightedCFMObjective", "gibbs_weights"]


def gibbs_weights(
    x0: Tensor, x1: Tensor, epsilon: float, *, relative: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Self-normalised Gibbs-kernel weights of the pairs ``(x0_i, x1_i)``.

    ``w_i = exp(-c_i / eps) / sum_j exp(-c_j / eps)``, ``c_i = ||x0_i - x1_i||^2``; with
    ``relative`` the temperature is ``eps = epsilon * median_{i,j} ||x0_i - x1_j||^2``, the
    median cost of all ``B^2`` pairs of the batch (the schedule of the temperature: it follows
    the scale and dimension of the data, so a fixed ``epsilon`` means the same tilt on 2-D toys
    and 64-D digits, where costs concentrate around ``2 D``).

    Args:
        x0: sources ``(B, *D)``.
        x1: data ``(B, *D)``, paired row by row with ``x0``.
        epsilon: the temperature (relative to the median cost, or absolute).
        relative: scale ``epsilon`` by the median pair cost of the batch.

    Returns:
        ``(w, eps, ess)``: weights ``(B,)`` summing to one, the temperature used (scalar
        tensor) and the effective sample size ``(sum w)^2 / sum w^2 / B`` in ``(0, 1]``.
    """
    check_positive_float(epsilon, "epsilon")
    a, b = x0.reshape(x0.shape[0], -1).double(), x1.reshape(x1.shape[0], -1).double()
    cost = (a - b).square().sum(1)
    if relative:
        eps = epsilon * torch.cdist(a, b).square().median()
    else:
        eps = torch.tensor(epsilon, dtype=torch.float64, device=a.device)
    w = torch.softmax(-cost / eps.clamp_min(1e-300), dim=0)
    ess = 1.0 / (w.square().sum() * w.numel())
    return w.to(x1.dtype if x1.is_floating_point() else torch.float32), eps, ess


@dataclass(frozen=True)
class WeightedCFMConfig(FlowMatchingConfig):
    """Options of W-CFM (on top of flow matching's)."""

    epsilon: float = option(
        1.0,
        gt=0,
        doc="Gibbs-kernel temperature; relative to the batch's median pair cost unless "
        "epsilon_mode = 'absolute' (large: plain CFM)",
    )
    epsilon_mode: Literal["relative", "absolute"] = option(
        "relative", doc="eps = epsilon * median cost of the batch ('relative'), or epsilon"
    )


def _build_wcfm(config: ObjectiveConfig, *, parts: TrainingParts) -> ObjectiveStep:
    assert isinstance(config, WeightedCFMConfig)  # guaranteed by Registry.build
    objective = WeightedCFMObjective(
        **flow_matching_args(config, parts),
        epsilon=config.epsilon,
        epsilon_mode=config.epsilon_mode,
    )
    return ObjectiveStep(objective)


@OBJECTIVES.register("wcfm", config=WeightedCFMConfig, build=_build_wcfm)
class WeightedCFMObjective(FlowMatchingObjective):
    """``L = sum_i w_i ||f(x_t,i, t_i) - y_i||^2``, ``w = softmax(-||x0 - x1||^2 / eps)``.

    Calvo-Ordonez, Meunier et al. (2025), W-CFM. The per-sample loss returned is
    ``B w_i l_i`` (so the trainer's batch mean is the weighted loss); the weights are
    computed on the pairs as drawn by the coupling (independent by default: W-CFM's point)
    and carry no gradient. As ``eps -> inf`` every ``w_i -> 1/B`` and the loss is plain CFM's.
    Logged: ``wcfm_ess`` (effective sample size of the weights as a fraction of ``B``; near 0
    means a few pairs dominate: raise ``epsilon``) and ``wcfm_eps``.

    Args:
        path, coupling, time_sampler, source, prediction, weighting, loss_space, cond_dropout,
            null_label: as :class:`FlowMatchingObjective`.
        epsilon: the kernel temperature (> 0).
        epsilon_mode: ``"relative"`` (times the batch's median pair cost) or ``"absolute"``.

    Raises:
        ValueError: a non-positive ``epsilon`` or an unknown ``epsilon_mode``.
    """

    def __init__(
        self,
        *args: object,
        epsilon: float = 1.0,
        epsilon_mode: str = "relative",
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.epsilon = check_positive_float(epsilon, "epsilon")
        self.epsilon_mode = check_in_choices(epsilon_mode, ("relative", "absolute"), "epsilon_mode")

    def __repr__(self) -> str:
        return f"WeightedCFMObjective(epsilon={self.epsilon}, mode={self.epsilon_mode!r})"

    def compute(
        self,
        model: VelocityField | nn.Module,
        x1: Tensor,
        *,
        x0: Tensor | None = None,
        x0_paired: bool = False,
        cond: Cond = None,
        t: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """Weighted per-sample losses ``(B,)`` (see :class:`FlowMatchingObjective`)."""
        if not x0_paired:
            x0 = self.pair(x1, x0=x0, labels=batch_labels(cond), generator=generator)
        if x0 is None:
            raise ValueError("x0_paired=True needs the paired sources x0")
        out = super().compute(model, x1, x0=x0, x0_paired=True, cond=cond, t=t, generator=generator)
        w, eps, ess = gibbs_weights(x0, x1, self.epsilon, relative=self.epsilon_mode == "relative")
        loss = out.loss * (w.to(out.loss.dtype) * w.numel())
        logs = {**out.logs, "wcfm_ess": ess.detach().float(), "wcfm_eps": eps.detach().float()}
        return LossOutput(loss=loss, logs=logs)
