"""A run sampled along another affine path (exact time/scale change of the trained field)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flowmatch.api.run import Run
from flowmatch.paths.affine import AffinePath
from flowmatch.paths.schedules import PATHS, PathConfig
from flowmatch.sampling.reparam import ScheduleTransformedField


def run_along(run: Run, path: str | PathConfig | AffinePath, **options: Any) -> Run:
    """``run`` whose field and path are those of another schedule (same samples, exactly).

    Everything that samples a run (``generate``, SDE samplers, search, observation) then works
    along ``path``: e.g. an SDE on the VP path of a linear-trained model (Kim et al. 2025,
    "Inference-Time Scaling for Flow Models via Stochastic Generation and Rollover Budget
    Forcing", Sec. 4).

    Args:
        run: a loaded velocity-field run.
        path: a path name (``"vp"``, ``"cosine"``, ...), a path config or an ``AffinePath``.
        **options: options of the named path (e.g. ``beta_max=20.0``).

    Raises:
        OptionError: unknown path name or option.
        TypeError: the run samples a flow map, not a velocity field.

    Example:
        >>> vp_run = run_along(run, "vp")  # doctest: +SKIP
    """
    if getattr(run.field, "field_kind", "velocity") != "velocity":
        raise TypeError("run_along converts velocity fields; this run samples a flow map")
    if isinstance(path, AffinePath):
        target = path
    else:
        config = path if isinstance(path, PathConfig) else PATHS.config(path, **options)
        target = PATHS.build(config)
    field = ScheduleTransformedField(run.field, run.path, target)
    return replace(run, field=field, path=target)


__all__ = ["run_along"]
