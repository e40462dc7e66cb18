"""Training objectives returning per-sample losses."""

from flowmatch.objectives.flow_matching import FlowMatchingObjective, LossOutput
from flowmatch.objectives.weighting import WEIGHTINGS, loss_weight

__all__ = ["WEIGHTINGS", "FlowMatchingObjective", "LossOutput", "loss_weight"]
