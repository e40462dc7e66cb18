"""ODE solvers: fixed-step Runge-Kutta methods, adaptive Dopri5 and ``solve``/``integrate``."""

from flowmatch.solvers.adaptive import Dopri5, Dopri5Config
from flowmatch.solvers.base import (
    SAMPLERS,
    AdaptiveSolver,
    AdaptiveStats,
    FixedStepConfig,
    ODESolver,
    Sampler,
    SamplerConfig,
    StepOutput,
)
from flowmatch.solvers.context import ContextualSampler, SamplingContext, bind_sampler
from flowmatch.solvers.flow_map import FlowMapSampler
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
from flowmatch.solvers.sde import EulerMaruyama, MixedSampler, window_times
from flowmatch.solvers.tableaus import TABLEAUS, ButcherTableau

#: Samplers by name (the sampler registry: ``SOLVERS["rk4"]`` is ``RK4``).
SOLVERS = SAMPLERS

__all__ = [
    "DIVERGENCE_METHODS",
    "LikelihoodResult",
    "bits_per_dim",
    "divergence",
    "invert",
    "invert_euler_fixed_point",
    "log_likelihood",
    "RK4",
    "SAMPLERS",
    "SOLVERS",
    "TABLEAUS",
    "AdaptiveSolver",
    "AdaptiveStats",
    "ButcherTableau",
    "Dopri5",
    "Dopri5Config",
    "FixedStepConfig",
    "FlowMapSampler",
    "Sampler",
    "SamplerConfig",
    "StepOutput",
    "Euler",
    "EulerMaruyama",
    "MixedSampler",
    "ContextualSampler",
    "SamplingContext",
    "bind_sampler",
    "window_times",
    "ExplicitRK",
    "Heun",
    "Midpoint",
    "ODESolver",
    "Solution",
    "integrate",
    "solve",
    "steps_for_nfe",
]
