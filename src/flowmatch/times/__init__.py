"""Training-time samplers and inference grids."""

from flowmatch.times.grids import (
    GRIDS,
    check_grid,
    custom_grid,
    grid_values,
    make_grid,
    shifted_grid,
    uniform_grid,
)
from flowmatch.times.samplers import TIME_SAMPLERS, LogitNormalTime, TimeSampler, UniformTime

__all__ = [
    "GRIDS",
    "TIME_SAMPLERS",
    "LogitNormalTime",
    "TimeSampler",
    "UniformTime",
    "check_grid",
    "custom_grid",
    "grid_values",
    "make_grid",
    "shifted_grid",
    "uniform_grid",
]
