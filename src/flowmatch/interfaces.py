"""Shared types and protocols: the one model interface every part of flowmatch speaks.

Conventions (see docs/conventions.md): time ``t`` is a float tensor of shape ``(B,)`` in
``[0, 1]``; ``t = 0`` is the source (noise), ``t = 1`` the data. ``x0`` is a source sample,
``x1`` a data sample, ``xt`` a point on the path between them.
"""

from __future__ import annotations

from typing import Literal, Protocol, TypeAlias, runtime_checkable

from torch import Tensor

#: Conditioning passed to a field: class labels ``(B,)`` (long), or ``None``.
Cond: TypeAlias = Tensor | None

#: What a network predicts. ``"velocity"``: u_t(x); ``"x1"``: the data E[x1 | x_t];
#: ``"x0"``: the source/noise E[x0 | x_t] (epsilon-prediction); ``"score"``: grad log p_t
#: (only meaningful for a standard Gaussian source).
Prediction: TypeAlias = Literal["velocity", "x1", "x0", "score"]

PREDICTIONS: tuple[str, ...] = ("velocity", "x1", "x0", "score")


@runtime_checkable
class VelocityField(Protocol):
    """A time-dependent vector field ``v(x, t, cond) -> (B, *D)``.

    Any ``nn.Module`` or function with this signature works: ``x`` is ``(B, *D)``, ``t`` is
    ``(B,)`` in ``[0, 1]`` (the library always expands a shared time to ``(B,)``), ``cond`` is
    an optional conditioning tensor (e.g. labels ``(B,)``).
    """

    def __call__(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """Evaluate the field; returns a tensor shaped like ``x``."""
        ...
