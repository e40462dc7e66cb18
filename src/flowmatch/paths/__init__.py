"""Probability paths: schedules and the affine path with prediction conversions."""

from flowmatch.paths.affine import AffinePath, PathSample
from flowmatch.paths.schedules import (
    CosineSchedule,
    LinearSchedule,
    PolynomialSchedule,
    Schedule,
    ScheduleOutput,
    VPSchedule,
)

SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (LinearSchedule, CosineSchedule, PolynomialSchedule, VPSchedule)
}

__all__ = [
    "SCHEDULES",
    "AffinePath",
    "CosineSchedule",
    "LinearSchedule",
    "PathSample",
    "PolynomialSchedule",
    "Schedule",
    "ScheduleOutput",
    "VPSchedule",
]
