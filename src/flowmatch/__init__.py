"""flowmatch: flow-matching generative models (paths, couplings, solvers, trainer, CLI).

The most used pieces are re-exported here; everything else lives in the subpackages
(``flowmatch.paths``, ``.couplings``, ``.times``, ``.objectives``, ``.models``, ``.solvers``,
``.guidance``, ``.data``, ``.metrics``, ``.train``, ``.api``).
"""

from flowmatch._version import __version__
from flowmatch.couplings import Coupling, IndependentCoupling
from flowmatch.interfaces import Cond, Prediction, VelocityField
from flowmatch.models import MLP, UNet
from flowmatch.objectives import FlowMatchingObjective
from flowmatch.paths import (
    AffinePath,
    CosineSchedule,
    LinearSchedule,
    PolynomialSchedule,
    VPSchedule,
)
from flowmatch.solvers import RK4, Dopri5, Euler, Heun, Midpoint, integrate, solve
from flowmatch.sources import GaussianSource
from flowmatch.times import LogitNormalTime, UniformTime, make_grid

__all__ = [
    "MLP",
    "RK4",
    "AffinePath",
    "Cond",
    "CosineSchedule",
    "Coupling",
    "Dopri5",
    "Euler",
    "FlowMatchingObjective",
    "GaussianSource",
    "Heun",
    "IndependentCoupling",
    "LinearSchedule",
    "LogitNormalTime",
    "Midpoint",
    "PolynomialSchedule",
    "Prediction",
    "UNet",
    "UniformTime",
    "VPSchedule",
    "VelocityField",
    "__version__",
    "integrate",
    "make_grid",
    "solve",
]
