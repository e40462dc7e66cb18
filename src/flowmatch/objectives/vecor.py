"""Velocity contrastive regularisation (VeCoR-style): attract to the pair's target, repel another's.

Hong et al. (2025), "VeCoR: Velocity Contrastive Regularization", arXiv:2511.18942 (two-sided
supervision: align the predicted velocity with a stable reference direction, push it away from
inconsistent ones), in the well-specified form of Contrastive Flow Matching (Stoica et al. 2025,
"Delta-FM"): the negative is the target of another pair of the batch. The repulsion is bounded
by a hinge (``margin``) so the loss cannot run to minus infinity, as the VeCoR abstract's
"stable" supervision suggests; the exact VeCoR negatives are not public (not reproduced here).

    L_i = |f_i - y_i|^2 - lambda * min(|f_i - y_pi(i)|^2, margin)        (per-dim means)
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
from flowmatch.objectives.common import checked_batch_labels, per_sample_mse, regression
from flowmatch.objectives.flow_matching import (
    FlowMatchingConfig,
    FlowMatchingObjective,
    flow_matching_args,
)
from flowmatch.utils.checks import check_in_choices
from flowmatch.utils.options import option

__all__ = ["ContrastiveConfig", "ContrastiveFMObjective", "negative_partners"]


def negative_partners(
    batch: int,
    *,
    labels: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """For each sample another sample's index ``(B,)``: of another class when ``labels`` allow.

    Uniform among the other samples (among the other classes' samples with ``labels``; a
    sample whose class fills the batch falls back to any other sample).
    """
    scores = torch.rand(batch, batch, generator=generator, device=device)
    allowed = ~torch.eye(batch, dtype=torch.bool, device=scores.device)
    if labels is not None:
        other = labels[:, None] != labels[None, :]
        has = other.any(1, keepdim=True)
        allowed = allowed & torch.where(has, other, torch.ones_like(other))
    return torch.where(allowed, scores, torch.full_like(scores, -1.0)).argmax(1)


@dataclass(frozen=True)
class ContrastiveConfig(FlowMatchingConfig):
    """Options of the contrastive velocity regulariser (on top of flow matching's)."""

    weight: float = option(0.05, ge=0, doc="lambda of the repulsion (Delta-FM uses 0.05)")
    margin: float | None = option(
        4.0, gt=0, doc="cap of the repelled per-dim squared distance; none: unbounded (Delta-FM)"
    )
    negatives: Literal["shuffle", "other_class"] = option(
        "other_class", doc="the negative pair: any other sample, or one of another class"
    )


def _build_vecor(config: ObjectiveConfig, *, parts: TrainingParts) -> ObjectiveStep:
    assert isinstance(config, ContrastiveConfig)  # guaranteed by Registry.build
    return ObjectiveStep(
        ContrastiveFMObjective(
            **flow_matching_args(config, parts),
            weight=config.weight,
            margin=config.margin,
            negatives=config.negatives,
        )
    )


@OBJECTIVES.register("vecor", config=ContrastiveConfig, build=_build_vecor)
class ContrastiveFMObjective(FlowMatchingObjective):
    """Flow matching plus a bounded repulsion from another pair's target (see module doc).

    ``weight = 0`` is plain flow matching. Logged: ``attract`` and ``repel`` (batch means of
    the two distances).

    Args:
        path, coupling, time_sampler, source, prediction, weighting, loss_space, cond_dropout,
            null_label: as :class:`FlowMatchingObjective`.
        weight: ``lambda >= 0``.
        margin: cap of the repelled distance (``None``: none).
        negatives: ``"shuffle"`` or ``"other_class"`` (uses the batch's labels when present).
    """

    def __init__(
        self,
        *args: object,
        weight: float = 0.05,
        margin: float | None = 4.0,
        negatives: str = "other_class",
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        if margin is not None and not margin > 0:
            raise ValueError(f"margin must be > 0 or None, got {margin}")
        self.weight, self.margin = float(weight), margin
        self.negatives = check_in_choices(negatives, ("shuffle", "other_class"), "negatives")

    def __repr__(self) -> str:
        return f"ContrastiveFMObjective(weight={self.weight}, margin={self.margin})"

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
        """Per-sample losses ``(B,)``."""
        labels = checked_batch_labels(x1, cond)
        x0, t, seen, sample = self.draw(
            x1, x0=x0, x0_paired=x0_paired, cond=cond, t=t, generator=generator
        )
        partner = negative_partners(
            x1.shape[0],
            labels=labels if self.negatives == "other_class" else None,
            generator=generator,
            device=x1.device,
        )
        out = model(sample.xt, t, seen)
        out, target = regression(self.path, self.prediction, self.loss_space, out, x0, x1, sample)
        attract = per_sample_mse(out, target)
        repel = per_sample_mse(out, target[partner])
        if self.margin is not None:
            repel = repel.clamp(max=self.margin)
        loss = self.weighted(attract - self.weight * repel, t)
        logs = {"attract": attract.detach().mean(), "repel": repel.detach().mean()}
        return LossOutput(loss=loss, logs=logs)
