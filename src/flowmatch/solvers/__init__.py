"""ODE solvers: fixed-step Runge-Kutta methods, adaptive Dopri5 and ``solve``/``integrate``."""

from flowmatch.solvers.adaptive import Dopri5
from flowmatch.solvers.base import AdaptiveSolver, AdaptiveStats, ODESolver
from flowmatch.solvers.integrate import Solution, integrate, solve, steps_for_nfe
from flowmatch.solvers.inversion import invert, invert_euler_fixed_point
from flowmatch.solvers.likelihood import (
    DIVERGENCE_METHODS,
    LikelihoodResult,
    bits_per_dim,
    divergence,
    log_likelihood,
)
from flowmatch.solvers.ode import RK4, Euler, ExplicitRK, Heun, Midpoint
from flowmatch.solvers.tableaus import TABLEAUS, ButcherTableau

SOLVERS: dict[str, type[ODESolver] | type[AdaptiveSolver]] = {
    "euler": Euler,
    "midpoint": Midpoint,
    "heun": Heun,
    "rk4": RK4,
    "dopri5": Dopri5,
}

__all__ = [
    "DIVERGENCE_METHODS",
    "LikelihoodResult",
    "bits_per_dim",
    "divergence",
    "invert",
    "invert_euler_fixed_point",
    "log_likelihood",
    "RK4",
    "SOLVERS",
    "TABLEAUS",
    "AdaptiveSolver",
    "AdaptiveStats",
    "ButcherTableau",
    "Dopri5",
    "Euler",
    "ExplicitRK",
    "Heun",
    "Midpoint",
    "ODESolver",
    "Solution",
    "integrate",
    "solve",
    "steps_for_nfe",
]
