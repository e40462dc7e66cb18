"""Learning-rate schedules as pure functions of the step index.

A schedule with no hidden state is what makes resume exact: the learning rate of step ``k``
is recomputed from ``k``, never carried forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flowmatch.train.config import LR_SCHEDULES, TrainConfig


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up then cosine decay (or constant), evaluated at a 0-based step ``k``.

    ``lr_k = lr (k + 1) / W`` for ``k < W``; after the warm-up, for ``kind="cosine"``,
    ``lr_k = lr (r + (1 - r) (1 + cos(pi p)) / 2)`` with ``p = (k - W) / max(1, S - W)``
    (Loshchilov & Hutter 2017, SGDR eq. 5 without restarts); for ``kind="constant"``
    ``lr_k = lr``. Steps beyond ``S`` keep the final value ``r lr``.

    Attributes:
        lr: peak learning rate ``lr > 0``.
        total_steps: ``S``, the step count at which the cosine reaches ``r lr``.
        warmup_steps: ``W >= 0``.
        min_lr_ratio: ``r`` in ``[0, 1]``.
        kind: ``"cosine"`` or ``"constant"``.

    Example:
        >>> sched = WarmupCosine(lr=1.0, total_steps=10, warmup_steps=2)
        >>> [round(sched(k), 3) for k in (0, 1, 2, 6)]
        [0.5, 1.0, 1.0, 0.5]
    """

    lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    kind: str = "cosine"

    def __post_init__(self) -> None:
        if self.kind not in LR_SCHEDULES:
            raise ValueError(
                f"unknown lr_schedule {self.kind!r}; choose one of {list(LR_SCHEDULES)}"
            )

    @classmethod
    def from_config(cls, config: TrainConfig) -> WarmupCosine:
        """The schedule described by a :class:`TrainConfig`."""
        return cls(
            lr=config.lr,
            total_steps=config.steps,
            warmup_steps=config.warmup_steps,
            min_lr_ratio=config.min_lr_ratio,
            kind=config.lr_schedule,
        )

    def __call__(self, step: int) -> float:
        """Learning rate of the 0-based optimisation step ``step``."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.lr
        progress = min(
            1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        )
        ratio = self.min_lr_ratio
        return self.lr * (ratio + (1.0 - ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable description, stored in checkpoints and compared on resume.

        The schedule has no other state: the lr of step ``k`` is recomputed from ``k``.
        """
        return {
            "lr": self.lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "min_lr_ratio": self.min_lr_ratio,
            "kind": self.kind,
        }
