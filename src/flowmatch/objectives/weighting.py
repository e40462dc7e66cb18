"""Loss weightings ``w(t)`` for the flow-matching objective."""

from __future__ import annotations

import math

from torch import Tensor

WEIGHTINGS: tuple[str, ...] = ("none", "cosmap")


def loss_weight(kind: str, t: Tensor) -> Tensor | None:
    """Per-sample weights ``(B,)`` for ``t`` ``(B,)``, or ``None`` for no weighting.

    ``"cosmap"``: ``w(t) = 2 / (pi (1 - 2t + 2t^2))`` (Esser et al. 2024, Sec. 3.1; symmetric in
    ``t <-> 1 - t``, so the same in both time conventions).
    """
    if kind == "none":
        return None
    if kind == "cosmap":
        return 2.0 / (math.pi * (1 - 2 * t + 2 * t * t))
    raise ValueError(f"unknown weighting {kind!r}; choose one of {list(WEIGHTINGS)}")
