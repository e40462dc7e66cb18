"""Choose the switch time of a two-model (small early, large late) sampler on validation data.

Briq et al. (2026), "Exploring and Exploiting Stability in Latent Flow Matching": ``t_split``
is chosen by a validation sweep. Here: the latest switch time (the most steps on the cheap
model) whose score stays within ``tolerance`` of the large model alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowmatch.guidance.combine import SwitchedField
from flowmatch.interfaces import Cond
from flowmatch.solvers.base import Sampler
from flowmatch.solvers.integrate import solve
from flowmatch.utils.checks import check_positive_float

__all__ = ["SwitchChoice", "choose_switch"]


@dataclass(frozen=True)
class SwitchChoice:
    """Result of :func:`choose_switch`.

    Attributes:
        switch: the chosen switch time (0: the large model alone).
        scores: score of each candidate switch time (lower is better).
        reference: score of the large model alone.
        early_steps: grid steps the chosen switch gives the early model.
    """

    switch: float
    scores: dict[float, float]
    reference: float
    early_steps: int


def choose_switch(
    early: Any,
    late: Any,
    x0: Tensor,
    grid: Tensor,
    sampler: Sampler,
    score: Callable[[Tensor], float],
    *,
    candidates: Sequence[float] | None = None,
    tolerance: float = 0.05,
    cond: Cond = None,
) -> SwitchChoice:
    """The latest switch time whose validation score is within ``tolerance`` of ``late`` alone.

    Args:
        early: the cheap field used before the switch.
        late: the field used after it.
        x0: validation source samples ``(N, *D)``.
        grid: the sampling grid.
        sampler: a deterministic sampler.
        score: ``score(samples) -> float``, lower is better (e.g. FD to held-out data).
        candidates: switch times to try (default: the grid's interior times, so no step
            straddles the switch).
        tolerance: allowed relative increase over the reference score.
        cond: conditioning of the samples.

    Raises:
        ValueError: a candidate outside ``[0, 1]`` or a negative tolerance.
    """
    check_positive_float(tolerance, "tolerance", allow_zero=True)
    times = grid.tolist()
    cands = sorted(times[1:-1] if candidates is None else candidates)
    if any(not 0 <= c <= 1 for c in cands):
        raise ValueError(f"candidates must lie in [0, 1], got {cands}")
    with torch.no_grad():
        reference = float(score(solve(late, x0, grid, sampler, cond=cond).x))
        scores = {
            c: float(score(solve(SwitchedField(early, late, c), x0, grid, sampler, cond=cond).x))
            for c in cands
        }
    ok = [c for c in cands if scores[c] <= (1 + tolerance) * reference]
    switch = max(ok) if ok else 0.0
    early_steps = sum(1 for t in times[:-1] if t < switch)
    return SwitchChoice(switch, scores, reference, early_steps)
