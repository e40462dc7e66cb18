"""Small shared helpers (shape checks, broadcasting, per-step random generators)."""

from flowmatch.utils.checks import (
    check_batch,
    check_finite,
    check_in_choices,
    check_positive_int,
    check_same_batch,
    check_time,
)
from flowmatch.utils.tensor import expand_like, step_generator

__all__ = [
    "check_batch",
    "check_finite",
    "check_in_choices",
    "check_positive_int",
    "check_same_batch",
    "check_time",
    "expand_like",
    "step_generator",
]
