"""Guidance rules and composite fields that turn velocity fields into guided ones."""

from flowmatch.guidance.cfg import ClassifierFreeGuidance
from flowmatch.guidance.combine import SwitchedField, WeightedFields
from flowmatch.guidance.control import CostGradientField, control_weight

__all__ = [
    "ClassifierFreeGuidance",
    "CostGradientField",
    "SwitchedField",
    "WeightedFields",
    "control_weight",
]
