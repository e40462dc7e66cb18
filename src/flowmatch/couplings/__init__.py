"""Couplings between source and data batches."""

from flowmatch.couplings.assignment import ASSIGNMENT_SOLVERS, linear_assignment
from flowmatch.couplings.base import COUPLINGS, Coupling, CouplingConfig, IndependentCoupling
from flowmatch.couplings.ot import (
    AssignmentConfig,
    ClassConditionalOTCoupling,
    ExactOTCoupling,
    SinkhornConfig,
    SinkhornCoupling,
)

__all__ = [
    "ASSIGNMENT_SOLVERS",
    "COUPLINGS",
    "AssignmentConfig",
    "CouplingConfig",
    "SinkhornConfig",
    "ClassConditionalOTCoupling",
    "Coupling",
    "ExactOTCoupling",
    "IndependentCoupling",
    "SinkhornCoupling",
    "linear_assignment",
]
