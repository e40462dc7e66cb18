"""Classifier-free guidance (Ho & Salimans 2022) as a velocity field.

``v_s(x, t, c) = v(x, t, null) + s (v(x, t, c) - v(x, t, null))``; ``s = 1`` is the plain
conditional field, ``s = 0`` the unconditional one, ``s > 1`` sharpens the condition. The
flow_matching repository's ``(1 + w) v_c - w v_null`` is the same rule with ``s = 1 + w``.
Because every prediction conversion of an affine path is affine in the prediction at fixed
``(x_t, t)`` (``AffinePath.convert``), guiding velocities, scores, ``x1``- or ``x0``-predictions
at the same ``t`` gives the same result.

The null condition depends on the kind of conditioning (``flowmatch.interfaces.Condition``):
class labels become ``null_label``; continuous values and context are kept but marked dropped
(``drop = True``), which the model maps to its learned null embedding, the same input
condition dropout trains it on.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowmatch.interfaces import Cond, Condition, VelocityField


class ClassifierFreeGuidance:
    """A guided velocity field ``v_null + s (v_cond - v_null)``, both branches in one call.

    Each evaluation concatenates ``[x, x]``, ``[t, t]`` and ``[cond, null]`` into one batch of
    ``2B`` and calls ``field`` once (Ho & Salimans 2022, Algorithm 2; the batched form of DiT's
    ``forward_with_cfg``), then combines with ``torch.lerp(v_null, v_cond, s)``, which returns
    each branch bit-exactly at ``s = 0`` and ``s = 1``. With ``scale == 1`` only the
    conditional branch is evaluated (batch ``B``); with ``scale == 0`` and no interval only the
    unconditional one. With ``interval = (t_lo, t_hi)`` the scale applies to samples whose
    ``t`` lies in the closed interval ``[t_lo, t_hi]`` and ``s = 1`` elsewhere (interval
    guidance, Kynkaanniemi et al. 2024), chosen per sample without host synchronisation.

    The condition is class labels ``(B,)`` or a :class:`~flowmatch.interfaces.Condition`; its
    null branch has the labels replaced by ``null_label`` and ``drop = True`` for every sample
    when it has values or context (the values/context themselves are passed unchanged).

    Args:
        field: a conditional velocity field ``(x (B, *D), t (B,), cond) -> (B, *D)`` trained
            with condition dropout (labels to ``null_label``, values/context to ``drop``).
        scale: guidance scale ``s`` (finite; 1 = no guidance, 0 = unconditional).
        null_label: the label id of the empty condition (e.g. ``MLP.null_label``), ``>= 0``;
            needed only when the condition has labels (``None`` otherwise).
        interval: optional ``(t_lo, t_hi)`` with ``0 <= t_lo < t_hi <= 1``.

    Raises:
        TypeError: if ``scale``/``null_label``/``interval`` have the wrong type or ``field``
            is not callable.
        ValueError: if ``scale`` is not finite, ``null_label < 0`` or the interval is invalid.

    Example:
        >>> import torch
        >>> from flowmatch.models import MLP
        >>> net = MLP(dim=2, hidden=32, depth=2, num_classes=3)
        >>> guided = ClassifierFreeGuidance(net, scale=2.0, null_label=net.null_label)
        >>> guided(torch.randn(4, 2), torch.rand(4), torch.tensor([0, 1, 2, 0])).shape
        torch.Size([4, 2])
        >>> from flowmatch.interfaces import Condition
        >>> net = MLP(dim=2, hidden=32, depth=2, values_dim=1)
        >>> guided = ClassifierFreeGuidance(net, scale=2.0)  # no labels: no null_label
        >>> guided(torch.randn(4, 2), torch.rand(4), Condition(values=torch.randn(4, 1))).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        field: VelocityField,
        scale: float,
        null_label: int | None = None,
        *,
        interval: tuple[float, float] | None = None,
    ) -> None:
        if not callable(field):
            raise TypeError(f"field must be callable, got {type(field).__name__}")
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise TypeError(f"scale must be a number, got {scale!r} ({type(scale).__name__})")
        if not math.isfinite(scale):
            raise ValueError(f"scale must be finite, got {scale}")
        if null_label is not None:
            if isinstance(null_label, bool) or not isinstance(null_label, int):
                raise TypeError(f"null_label must be an int, got {null_label!r} (None: no labels)")
            if null_label < 0:
                raise ValueError(f"null_label must be >= 0, got {null_label}")
        self.field = field
        self.scale = float(scale)
        self.null_label = null_label
        self.interval = None if interval is None else _check_interval(interval)

    def __repr__(self) -> str:
        return (
            f"ClassifierFreeGuidance({self.field!r}, scale={self.scale}, "
            f"null_label={self.null_label}, interval={self.interval})"
        )

    def __call__(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """Guided velocity ``(B, *D)`` at ``x`` ``(B, *D)``, ``t`` ``(B,)``, condition ``cond``.

        Raises:
            ValueError: if ``cond`` is missing or not of batch ``B``, has labels but there is
                no ``null_label``, ``t`` is not ``(B,)``, or the field returns the wrong shape.
            TypeError: if ``cond`` is not an integer label tensor or a ``Condition``.
        """
        batch = x.shape[0]
        cond = _check_cond(cond, batch)
        if t.shape != (batch,):
            raise ValueError(f"t must have shape (B,) = ({batch},), got {tuple(t.shape)}")
        if self.scale == 1.0:
            return self.field(x, t, cond)
        null = self._null(cond)
        if self.scale == 0.0 and self.interval is None:
            return self.field(x, t, null)
        # One batched call for both branches: [conditional; unconditional].
        out = self.field(torch.cat([x, x]), torch.cat([t, t]), _cat(cond, null))
        if out.shape != (2 * batch, *x.shape[1:]):
            raise ValueError(
                f"field returned shape {tuple(out.shape)} for a batch of shape "
                f"{(2 * batch, *x.shape[1:])}; expected the same shape"
            )
        v_cond, v_null = out[:batch], out[batch:]
        if self.interval is None:
            return torch.lerp(v_null, v_cond, self.scale)
        lo, hi = self.interval
        inside = (t >= lo) & (t <= hi)
        # Per-sample scale in the field's dtype (a float32 scale would perturb float64 math).
        weight = torch.full_like(t, self.scale, dtype=v_cond.dtype).masked_fill(~inside, 1.0)
        return torch.lerp(v_null, v_cond, weight.reshape(batch, *([1] * (x.ndim - 1))))

    def _null(self, cond: Tensor | Condition) -> Tensor | Condition:
        """The null condition of ``cond``: labels -> ``null_label``, values/context -> drop."""
        labels = cond if isinstance(cond, Tensor) else cond.labels
        if labels is not None:
            if self.null_label is None:
                raise ValueError(
                    "the condition has labels but ClassifierFreeGuidance got null_label=None; "
                    "pass the model's null_label"
                )
            labels = torch.full_like(labels, self.null_label)
        if isinstance(cond, Tensor):
            assert labels is not None
            return labels
        drop = None
        if cond.values is not None or cond.context is not None:
            batch = cond.batch_size
            assert batch is not None
            drop = torch.ones(batch, dtype=torch.bool, device=cond.device)
        return Condition(labels=labels, values=cond.values, context=cond.context, drop=drop)


def _check_interval(interval: tuple[float, float]) -> tuple[float, float]:
    if not isinstance(interval, tuple | list) or len(interval) != 2:
        raise TypeError(f"interval must be a pair (t_lo, t_hi), got {interval!r}")
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in interval):
        raise TypeError(f"interval must hold two numbers, got {interval!r}")
    lo, hi = float(interval[0]), float(interval[1])
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"interval must satisfy 0 <= t_lo < t_hi <= 1, got {interval!r}")
    return lo, hi


def _cat(a: Tensor | Condition, b: Tensor | Condition) -> Tensor | Condition:
    """Stack two conditions of the same structure along the batch (``[a; b]``)."""
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor)
        return torch.cat([a, b])
    assert isinstance(b, Condition)
    parts = []
    for name in ("labels", "values", "context", "drop"):
        u, v = getattr(a, name), getattr(b, name)
        if name == "drop" and (u is None) != (v is None):  # a kept branch has no mask yet
            full = a.batch_size if u is None else b.batch_size
            assert full is not None
            mask = torch.zeros(full, dtype=torch.bool, device=a.device)
            u, v = (mask, v) if u is None else (u, mask)
        parts.append(None if u is None else torch.cat([u, v]))
    return Condition(*parts)


def _check_cond(cond: Cond, batch: int) -> Tensor | Condition:
    if cond is None:
        raise ValueError(
            "ClassifierFreeGuidance needs class labels: pass cond of shape (B,) or a Condition, "
            "got None"
        )
    if isinstance(cond, Condition):
        if not cond.kinds:
            raise ValueError(
                "ClassifierFreeGuidance needs a condition with labels, values or context"
            )
        if cond.batch_size != batch:
            raise ValueError(f"cond must have batch size B = {batch}, got {cond.batch_size}")
        if cond.labels is not None:
            _check_labels(cond.labels, batch)
        return cond
    if not isinstance(cond, Tensor):
        raise TypeError(
            f"cond must be a label tensor of shape (B,) or a Condition, got {type(cond).__name__}"
        )
    return _check_labels(cond, batch)


def _check_labels(cond: Tensor, batch: int) -> Tensor:
    if cond.shape != (batch,):
        raise ValueError(f"cond must be labels of shape (B,) = ({batch},), got {tuple(cond.shape)}")
    if cond.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"cond labels must be an integer tensor, got dtype {cond.dtype}")
    return cond
