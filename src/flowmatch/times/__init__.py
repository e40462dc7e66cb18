"""Training-time samplers and inference grids."""

from flowmatch.times import aligned as _aligned  # noqa: F401  (registers the "aligned" grid)
from flowmatch.times import boss as _boss  # noqa: F401  (registers the "boss" grid)
from flowmatch.times import edm_grid as _edm_grid  # noqa: F401  (registers the "edm" grid)
from flowmatch.times import shifted as _shifted  # noqa: F401  (registers "shifted_logit_normal")
from flowmatch.times.grids import (
    GRIDS,
    check_grid,
    cosine_grid,
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
    "cosine_grid",
    "custom_grid",
    "grid_values",
    "make_grid",
    "shifted_grid",
    "uniform_grid",
]
