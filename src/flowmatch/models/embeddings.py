"""Time and label embeddings for reference networks."""

from __future__ import annotations

import math
import typing

import torch
from torch import Tensor, nn

from flowmatch.interfaces import Cond, as_condition
from flowmatch.utils.checks import check_positive_int


class SinusoidalTimeEmbedding(nn.Module):
    """Fixed sinusoidal features of ``t`` ``(B,)`` -> ``(B, dim)``.

    ``[cos(w_k s t), sin(w_k s t)]`` with ``w_k = max_period^(-k / (dim/2))`` and ``s = 1000``
    (Vaswani et al. 2017; the transformer/DiT timestep embedding with t rescaled to [0, 1000]).
    """

    def __init__(self, dim: int = 64, *, max_period: float = 10_000.0, scale: float = 1000.0):
        super().__init__()
        check_positive_int(dim, "dim", minimum=2)
        if dim % 2:
            raise ValueError(f"dim must be even, got {dim}")
        half = dim // 2
        freqs = scale * torch.exp(-math.log(max_period) * torch.arange(half) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        """Return ``(B, dim)`` features of ``t`` ``(B,)``."""
        freqs = typing.cast(Tensor, self.freqs)  # a registered buffer
        args = t.to(freqs.dtype)[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=1).to(t.dtype)


class LabelEmbedding(nn.Module):
    """Embedding of class labels ``(B,)`` with one extra "null" class for guidance.

    The null id is ``num_classes`` (used when the condition is dropped, Ho & Salimans 2022).
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.table = nn.Embedding(num_classes + 1, dim)

    @property
    def null_label(self) -> int:
        """The id that means "no condition"."""
        return self.num_classes

    def forward(self, labels: Tensor) -> Tensor:
        """Return ``(B, dim)`` embeddings of integer labels ``(B,)`` in ``[0, num_classes]``."""
        return self.table(labels)


def check_labels(labels: Tensor | None, num_classes: int | None, batch: int) -> None:
    """Validate labels passed to a (possibly conditional) model.

    Raises:
        ValueError: labels given to an unconditional model, or with the wrong shape, or (on
            CPU) ids outside ``[0, num_classes]`` (``num_classes`` itself is the null label).
    """
    if labels is None:
        return
    if num_classes is None:
        raise ValueError(
            "this model takes no labels: it is label-unconditional (num_classes=None) but cond "
            "was given labels"
        )
    if labels.shape != (batch,):
        raise ValueError(
            f"cond must be labels of shape (B,) = ({batch},), got {tuple(labels.shape)}"
        )
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"cond labels must be an integer tensor, got dtype {labels.dtype}")
    # The range check reads values; on an accelerator that is a host sync per forward, so it
    # runs on CPU only (there the embedding lookup would otherwise fail with an IndexError).
    if labels.device.type == "cpu" and labels.numel():
        lo, hi = (int(v) for v in torch.aminmax(labels))
        if lo < 0 or hi > num_classes:
            raise ValueError(
                f"cond labels must lie in [0, {num_classes}] (num_classes={num_classes}, the last "
                f"id is the null label), got values in [{lo}, {hi}]"
            )


class ConditionEmbedding(nn.Module):
    """Linear embedding of a continuous condition ``(B, *S)`` with a learned null vector.

    ``e_i = W flatten(c_i) + b`` where the condition is kept and ``e_i = null`` (a learned
    vector, initialised to 0) where it is dropped (``drop[i]`` True) or absent altogether
    (``c is None``): the null condition of classifier-free guidance for continuous values and
    context (Ho & Salimans 2022, with a learned null embedding in place of a null token).
    Dropped rows are zeroed before the linear map, so whatever they hold (even NaN) cannot
    reach the output or the gradients.

    Args:
        shape: shape ``S`` of one sample's condition (``(C,)`` for values).
        dim: embedding size.
    """

    def __init__(self, shape: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        for s in self.shape:
            check_positive_int(s, "condition shape entries")
        self.proj = nn.Linear(math.prod(self.shape), check_positive_int(dim, "dim"))
        self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, c: Tensor | None, drop: Tensor | None, batch: int) -> Tensor:
        """Embeddings ``(B, dim)`` of ``c`` ``(B, *S)`` (or ``None``), ``drop`` ``(B,)`` bool."""
        null = self.null.expand(batch, -1)
        if c is None:
            return null
        flat = c.reshape(batch, -1).to(self.proj.weight.dtype)
        if drop is None:
            return self.proj(flat)
        keep = ~drop[:, None]
        return torch.where(keep, self.proj(flat.masked_fill(~keep, 0.0)), null)


def condition_parts(
    cond: Cond,
) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """``(labels, values, context, drop)`` of a condition (a bare tensor is the labels).

    Raises:
        TypeError: ``cond`` is neither a tensor, a ``Condition`` nor ``None``.
    """
    if cond is None or isinstance(cond, Tensor):
        return cond, None, None, None
    c = as_condition(cond)
    assert c is not None
    return c.labels, c.values, c.context, c.drop


def check_condition_part(
    name: str, part: Tensor | None, shape: tuple[int, ...] | None, batch: int
) -> None:
    """Validate the ``values``/``context`` part of a condition passed to a model.

    Raises:
        ValueError: the part is given to a model that does not take it (``shape`` None), or
            its shape is not ``(B, *shape)``.
    """
    if part is None:
        return
    if shape is None:
        raise ValueError(
            f"this model takes no {name} conditions (built without {name}); got a {name} "
            f"tensor of shape {tuple(part.shape)}"
        )
    if tuple(part.shape) != (batch, *shape):
        raise ValueError(
            f"cond.{name} must have shape (B, *{name}_shape) = {(batch, *shape)}, got "
            f"{tuple(part.shape)}"
        )
