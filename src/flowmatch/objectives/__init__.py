"""Training objectives and steps (the algorithms the trainer runs)."""

from flowmatch.objectives.base import (
    OBJECTIVES,
    LossOutput,
    ObjectiveConfig,
    ObjectiveStep,
    TrainingParts,
    TrainingStep,
    drop_condition,
    ema_key,
)
from flowmatch.objectives.flow_matching import FlowMatchingConfig, FlowMatchingObjective
from flowmatch.objectives.weighting import WEIGHTINGS, loss_weight

__all__ = [
    "OBJECTIVES",
    "WEIGHTINGS",
    "FlowMatchingConfig",
    "FlowMatchingObjective",
    "LossOutput",
    "ObjectiveConfig",
    "ObjectiveStep",
    "TrainingParts",
    "TrainingStep",
    "drop_condition",
    "ema_key",
    "loss_weight",
]
