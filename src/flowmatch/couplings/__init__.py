"""Couplings between source and data batches."""

from flowmatch.couplings.base import Coupling, IndependentCoupling

COUPLINGS: dict[str, type[Coupling]] = {IndependentCoupling.name: IndependentCoupling}

__all__ = ["COUPLINGS", "Coupling", "IndependentCoupling"]
