"""A time grid aligned to segment boundaries (for blockwise fields: no step straddles two blocks)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flowmatch.times.grids import GRIDS, GridConfig
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import option

__all__ = ["aligned_grid"]


@dataclass(frozen=True)
class AlignedGridConfig(GridConfig):
    """Options of the aligned grid."""

    segments: int = option(
        1, ge=1, doc="equal segments whose boundaries are grid times (a blockwise model's blocks)"
    )


@GRIDS.register("aligned", config=AlignedGridConfig)
def aligned_grid(
    num_steps: int,
    segments: int = 1,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform steps inside each of ``segments`` equal segments of ``[0, 1]``; shape ``(N+1,)``.

    Every boundary ``m / segments`` is a grid time, so no step straddles two segments (the
    blocks of a blockwise field, Park et al. 2025). The ``N`` steps are shared out as evenly as
    possible (the first ``N mod segments`` segments get one more); with ``segments`` dividing
    ``N`` this is the uniform grid.

    Raises:
        ValueError: ``num_steps < segments`` (a segment would get no step).
    """
    check_positive_int(num_steps, "num_steps")
    check_positive_int(segments, "segments")
    if num_steps < segments:
        raise ValueError(
            f"an aligned grid of {segments} segments needs num_steps >= {segments}, got {num_steps}"
        )
    base, extra = divmod(num_steps, segments)
    parts = [torch.zeros(1, dtype=torch.float64)]
    for m in range(segments):
        n = base + (1 if m < extra else 0)
        lo, hi = m / segments, (m + 1) / segments
        parts.append(torch.linspace(lo, hi, n + 1, dtype=torch.float64)[1:])
    grid = torch.cat(parts)
    grid[-1] = 1.0
    return grid.to(dtype=dtype, device=device)
