"""Shared types and protocols: the one model interface every part of flowmatch speaks.

Conventions (see docs/conventions.md): time ``t`` is a float tensor of shape ``(B,)`` in
``[0, 1]``; ``t = 0`` is the source (noise), ``t = 1`` the data. ``x0`` is a source sample,
``x1`` a data sample, ``xt`` a point on the path between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias, runtime_checkable

import torch
from torch import Tensor

#: What a network predicts. ``"velocity"``: u_t(x); ``"x1"``: the data E[x1 | x_t];
#: ``"x0"``: the source/noise E[x0 | x_t] (epsilon-prediction); ``"score"``: grad log p_t
#: (only meaningful for a standard Gaussian source).
Prediction: TypeAlias = Literal["velocity", "x1", "x0", "score"]

PREDICTIONS: tuple[str, ...] = ("velocity", "x1", "x0", "score")

#: The kinds of conditioning a :class:`Condition` can carry (a model declares which it takes).
COND_KINDS: tuple[str, ...] = ("labels", "values", "context")


@dataclass(frozen=True)
class Condition:
    """Conditioning of a batch: class labels, continuous values and/or a context tensor.

    Each part is optional; all present parts share the batch size ``B``. The *null*
    condition of classifier-free guidance is, per kind: the label id ``num_classes`` for
    labels (the model's ``null_label``), and ``drop[i] = True`` for values and context (the
    model replaces them by a learned null embedding). A bare label tensor is accepted
    everywhere a condition is and means ``Condition(labels=tensor)``.

    Attributes:
        labels: class ids ``(B,)`` (int64).
        values: continuous conditions ``(B, C)`` (float), e.g. an angle or a measurement.
        context: a context tensor ``(B, *S)`` (float): a sequence, an image, a point set.
        drop: ``(B,)`` bool, True where values/context are dropped (the null condition).

    Example:
        >>> c = Condition(values=torch.zeros(4, 1))
        >>> c.batch_size, c.kinds
        (4, ('values',))
    """

    labels: Tensor | None = None
    values: Tensor | None = None
    context: Tensor | None = None
    drop: Tensor | None = None

    def __post_init__(self) -> None:
        sizes = {
            name: tuple(v.shape)
            for name, v in (
                ("labels", self.labels),
                ("values", self.values),
                ("context", self.context),
                ("drop", self.drop),
            )
            if v is not None
        }
        for name in sizes:
            if not isinstance(getattr(self, name), Tensor):
                raise TypeError(f"Condition.{name} must be a tensor, got {getattr(self, name)!r}")
        batches = {s[0] if s else None for s in sizes.values()}
        if len(batches) > 1 or None in batches:
            raise ValueError(f"Condition parts must share the batch size B, got shapes {sizes}")
        if self.labels is not None and (self.labels.ndim != 1 or self.labels.is_floating_point()):
            raise ValueError(
                f"Condition.labels must be integer class ids of shape (B,), got "
                f"{tuple(self.labels.shape)} {self.labels.dtype}"
            )
        if self.values is not None and (
            self.values.ndim != 2 or not self.values.is_floating_point()
        ):
            raise ValueError(
                f"Condition.values must be floats of shape (B, C), got "
                f"{tuple(self.values.shape)} {self.values.dtype}"
            )
        if self.context is not None and not self.context.is_floating_point():
            raise ValueError(f"Condition.context must be a float tensor, got {self.context.dtype}")
        if self.drop is not None and (self.drop.dtype != torch.bool or self.drop.ndim != 1):
            raise ValueError(
                f"Condition.drop must be a bool tensor of shape (B,), got "
                f"{tuple(self.drop.shape)} {self.drop.dtype}"
            )

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds present, in the order of :data:`COND_KINDS`."""
        return tuple(k for k in COND_KINDS if getattr(self, k) is not None)

    @property
    def batch_size(self) -> int | None:
        """``B``, or ``None`` for an empty condition."""
        for k in (*COND_KINDS, "drop"):
            v = getattr(self, k)
            if v is not None:
                return int(v.shape[0])
        return None

    @property
    def device(self) -> torch.device | None:
        """Device of the parts (``None`` for an empty condition)."""
        for k in (*COND_KINDS, "drop"):
            v = getattr(self, k)
            if v is not None:
                return v.device
        return None

    def map(self, fn: object) -> Condition:
        """Apply ``fn(tensor) -> tensor`` to every present part (indexing, ``.to``, ``cat``)."""
        f = fn  # typed loosely: a callable on tensors
        return Condition(
            *(
                None if v is None else f(v)  # type: ignore[operator]
                for v in (self.labels, self.values, self.context, self.drop)
            )
        )


@dataclass(frozen=True)
class CondSpec:
    """What conditioning a run's data carries (and so what its model must accept).

    Attributes:
        num_classes: number of classes of the labels (the null label is ``num_classes``), or
            ``None`` without labels.
        values_dim: number of continuous condition values ``C`` per sample, or ``None``.
        context_shape: shape ``S`` of one sample's context tensor, or ``None``.
    """

    num_classes: int | None = None
    values_dim: int | None = None
    context_shape: tuple[int, ...] | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds present (subset of :data:`COND_KINDS`)."""
        present = (self.num_classes, self.values_dim, self.context_shape)
        return tuple(k for k, v in zip(COND_KINDS, present, strict=True) if v is not None)

    @property
    def conditional(self) -> bool:
        """Whether there is any conditioning."""
        return bool(self.kinds)


#: Conditioning passed to a field: class labels ``(B,)`` (long), a :class:`Condition`, or
#: ``None``.
Cond: TypeAlias = Tensor | Condition | None


def as_condition(cond: Cond) -> Condition | None:
    """``cond`` as a :class:`Condition` (a bare tensor is labels); ``None`` stays ``None``.

    Raises:
        TypeError: ``cond`` is neither a tensor, a Condition nor None.
    """
    if cond is None or isinstance(cond, Condition):
        return cond
    if isinstance(cond, Tensor):
        return Condition(labels=cond)
    raise TypeError(f"cond must be a label tensor, a Condition or None, got {type(cond).__name__}")


def cond_batch_size(cond: Cond) -> int | None:
    """Batch size of a condition (``None`` when there is none)."""
    if cond is None:
        return None
    if isinstance(cond, Tensor):
        return int(cond.shape[0]) if cond.ndim else None
    return cond.batch_size


def index_cond(cond: Cond, index: slice | Tensor) -> Cond:
    """Select samples ``index`` of a condition (any kind)."""
    if cond is None:
        return None
    if isinstance(cond, Tensor):
        return cond[index]
    return cond.map(lambda v: v[index])


def cond_to(cond: Cond, device: torch.device | str) -> Cond:
    """Move a condition to ``device``."""
    if cond is None:
        return None
    if isinstance(cond, Tensor):
        return cond.to(device)
    return cond.map(lambda v: v.to(device))


@runtime_checkable
class VelocityField(Protocol):
    """A time-dependent vector field ``v(x, t, cond) -> (B, *D)``.

    Any ``nn.Module`` or function with this signature works: ``x`` is ``(B, *D)``, ``t`` is
    ``(B,)`` in ``[0, 1]`` (the library always expands a shared time to ``(B,)``), ``cond`` is
    an optional conditioning (class labels ``(B,)`` or a :class:`Condition`).
    """

    def __call__(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """Evaluate the field; returns a tensor shaped like ``x``."""
        ...


@runtime_checkable
class FlowMap(Protocol):
    """A two-time field ``X(x, s, t, cond) -> (B, *D)``: the flow from ``x`` at ``s`` to ``t``.

    Flow maps, consistency models, MeanFlow's ``x + (t - s) u(x, s, t)``. ``s`` and ``t`` are ``(B,)`` in ``[0, 1]``; ``X(x, s, s) = x``. Sampled by
    ``flowmatch.solvers.FlowMapSampler``, which takes one map evaluation per grid interval.
    """

    field_kind: Literal["flow_map"]

    def __call__(self, x: Tensor, s: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """Map ``x`` at time ``s`` to time ``t``; returns a tensor shaped like ``x``."""
        ...
