"""Composite velocity fields: a weighted pair (RL guidance) and a time-switched pair.

Both are velocity fields themselves, so any sampler integrates them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from flowmatch.interfaces import Cond

__all__ = ["SwitchedField", "WeightedFields"]


class WeightedFields:
    """``v_ref + w (v_ft - v_ref)``: Reinforcement Learning Guidance between two fields.

    Jin et al. (2025), "Reinforcement Learning Guidance", eq. 7: with ``v_ref`` a base model
    and ``v_ft`` its RL-fine-tuned version, ``w = 0`` is the base, ``w = 1`` the fine-tuned
    model, ``w > 1`` extrapolates; when ``p_ft`` is the KL-optimal tilt ``p_ref exp(R / beta)``,
    scale ``w`` targets ``p_ref exp(w R / beta)``. The velocities are combined with
    ``torch.lerp``, exact at ``w = 0`` and ``w = 1``; each side may itself be guided (CFG).

    Args:
        reference: the reference field ``(x, t, cond) -> (B, *D)``.
        finetuned: the other field (same signature).
        weight: ``w``, a finite number.

    Raises:
        TypeError: a field is not callable or ``weight`` is not a number.
        ValueError: ``weight`` is not finite.

    Example:
        >>> import torch
        >>> f = WeightedFields(lambda x, t, c=None: x, lambda x, t, c=None: 3 * x, 0.5)
        >>> f(torch.ones(1, 2), torch.zeros(1)).tolist()
        [[2.0, 2.0]]
    """

    def __init__(self, reference: Any, finetuned: Any, weight: float) -> None:
        for name, f in (("reference", reference), ("finetuned", finetuned)):
            if not callable(f):
                raise TypeError(f"{name} must be a callable field, got {type(f).__name__}")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise TypeError(f"weight must be a number, got {weight!r}")
        if not math.isfinite(weight):
            raise ValueError(f"weight must be finite, got {weight}")
        self.reference, self.finetuned, self.weight = reference, finetuned, float(weight)

    def __repr__(self) -> str:
        return f"WeightedFields({self.reference!r}, {self.finetuned!r}, weight={self.weight})"

    def __call__(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """``lerp(v_ref, v_ft, w)`` at ``x`` ``(B, *D)``, ``t`` ``(B,)``."""
        if self.weight == 0.0:
            return self.reference(x, t, cond)
        if self.weight == 1.0:
            return self.finetuned(x, t, cond)
        return torch.lerp(self.reference(x, t, cond), self.finetuned(x, t, cond), self.weight)


class SwitchedField:
    """``early(x, t)`` for ``t < switch``, ``late(x, t)`` for ``t >= switch``.

    The coarse-to-fine sampling of Briq et al. (2026), "Exploring and Exploiting Stability in
    Latent Flow Matching" (``CoarseFineModel``): models trained on the same data map the same
    noise to nearly the same sample, so a small model can take the noisy early part and a
    large one the late part. Only the field(s) whose time range the batch touches are
    evaluated (one host read of the times per call); put ``switch`` on a grid time so no step
    straddles it (the velocity jumps there).

    Args:
        early: the field used before ``switch`` (e.g. a small model).
        late: the field used from ``switch`` on.
        switch: the switch time in ``[0, 1]`` (0: ``late`` only, 1: ``early`` only).

    Raises:
        TypeError: a field is not callable.
        ValueError: ``switch`` outside ``[0, 1]``.
    """

    def __init__(self, early: Any, late: Any, switch: float) -> None:
        for name, f in (("early", early), ("late", late)):
            if not callable(f):
                raise TypeError(f"{name} must be a callable field, got {type(f).__name__}")
        if isinstance(switch, bool) or not isinstance(switch, int | float) or not 0 <= switch <= 1:
            raise ValueError(f"switch must be a number in [0, 1], got {switch!r}")
        self.early, self.late, self.switch = early, late, float(switch)
        self.calls = {"early": 0, "late": 0}

    def __repr__(self) -> str:
        return f"SwitchedField({self.early!r}, {self.late!r}, switch={self.switch})"

    def __call__(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """The early or the late field's velocity per sample ``(B, *D)``."""
        before = t < self.switch
        n_before = int(before.sum())
        if n_before == len(t):
            self.calls["early"] += 1
            return self.early(x, t, cond)
        if n_before == 0:
            self.calls["late"] += 1
            return self.late(x, t, cond)
        self.calls["early"] += 1
        self.calls["late"] += 1
        mask = before.reshape(-1, *([1] * (x.ndim - 1)))
        return torch.where(mask, self.early(x, t, cond), self.late(x, t, cond))
