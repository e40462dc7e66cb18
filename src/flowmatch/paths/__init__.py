"""Probability paths: schedules and the affine path with prediction conversions."""

from flowmatch.paths.affine import AffinePath, PathSample
from flowmatch.paths.schedules import (
    PATHS,
    CosineSchedule,
    LinearSchedule,
    PathConfig,
    PolynomialSchedule,
    Schedule,
    ScheduleOutput,
    VPSchedule,
)

#: Schedules by name (the path registry: ``SCHEDULES["vp"]`` is ``VPSchedule``).
SCHEDULES = PATHS

__all__ = [
    "PATHS",
    "SCHEDULES",
    "PathConfig",
    "AffinePath",
    "CosineSchedule",
    "LinearSchedule",
    "PathSample",
    "PolynomialSchedule",
    "Schedule",
    "ScheduleOutput",
    "VPSchedule",
]
