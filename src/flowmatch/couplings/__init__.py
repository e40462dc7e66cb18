"""Couplings between source and data batches."""

from flowmatch.couplings.assignment import ASSIGNMENT_SOLVERS, linear_assignment
from flowmatch.couplings.base import Coupling, IndependentCoupling
from flowmatch.couplings.ot import ClassConditionalOTCoupling, ExactOTCoupling, SinkhornCoupling

COUPLINGS: dict[str, type[Coupling]] = {
    cls.name: cls
    for cls in (IndependentCoupling, ExactOTCoupling, ClassConditionalOTCoupling, SinkhornCoupling)
}

__all__ = [
    "ASSIGNMENT_SOLVERS",
    "COUPLINGS",
    "ClassConditionalOTCoupling",
    "Coupling",
    "ExactOTCoupling",
    "IndependentCoupling",
    "SinkhornCoupling",
    "linear_assignment",
]
