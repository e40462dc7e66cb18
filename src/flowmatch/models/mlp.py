"""A small MLP velocity field for low-dimensional data (2-D toys, tabular, 8x8 digits)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from flowmatch.interfaces import Cond, CondSpec
from flowmatch.models.base import MODELS, ModelConfig, check_cond_kinds
from flowmatch.models.embeddings import (
    ConditionEmbedding,
    LabelEmbedding,
    SinusoidalTimeEmbedding,
    check_condition_part,
    check_labels,
    condition_parts,
)
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import OptionError, option


@dataclass(frozen=True)
class MLPConfig(ModelConfig):
    """Options of the MLP."""

    hidden: int = option(256, ge=1, doc="width of the hidden layers")
    depth: int = option(4, ge=1, doc="number of hidden layers")
    time_dim: int = option(64, ge=2, doc="size of the sinusoidal time embedding (even)")

    def validate(self) -> None:
        """``time_dim`` must be even."""
        if self.time_dim % 2:
            raise OptionError("time_dim", f"must be even, got {self.time_dim}")


def _build_mlp(config: ModelConfig, *, sample_shape: tuple[int, ...], cond: CondSpec) -> nn.Module:
    assert isinstance(config, MLPConfig)  # guaranteed by Registry.build
    check_cond_kinds("mlp", MLP.cond_kinds, cond)
    return MLP(
        math.prod(sample_shape),
        hidden=config.hidden,
        depth=config.depth,
        time_dim=config.time_dim,
        num_classes=cond.num_classes,
        values_dim=cond.values_dim,
        context_shape=cond.context_shape,
    )


@MODELS.register("mlp", config=MLPConfig, build=_build_mlp)
class MLP(nn.Module):
    """``v(x, t, cond) = MLP([flatten(x), e])`` with SiLU activations, ``e`` the conditioning.

    ``e = emb(t) (+ emb(label)) (+ W_v values) (+ W_c flatten(context))``: the sinusoidal
    time embedding plus one embedding per conditioning kind the net was built for, all of
    size ``time_dim``. Inputs of any feature shape ``(B, *D)`` are flattened and the output
    reshaped back.

    Null conditions (classifier-free guidance, Ho & Salimans 2022): the label ``num_classes``;
    for values and context a learned null vector used where ``Condition.drop`` is True
    (:class:`~flowmatch.models.embeddings.ConditionEmbedding`). A kind the net takes but the
    condition leaves out (``cond=None`` included) is the null condition of that kind.

    The context embedding is the simple baseline: the flattened context ``(B, prod(S))``
    through one linear map. It suits small contexts (a few numbers, a short sequence, a tiny
    image); structured contexts (long sequences, point sets, images) want an encoder or
    cross-attention, which this net does not have.

    Args:
        dim: number of features ``prod(D)``.
        hidden: width of hidden layers.
        depth: number of hidden layers.
        time_dim: size of the sinusoidal time embedding (and of the condition embeddings).
        num_classes: number of classes for label conditioning (``None``: no labels). The
            label ``num_classes`` is the null condition for classifier-free guidance.
        values_dim: number ``C`` of continuous condition values per sample, or ``None``.
        context_shape: shape ``S`` of one sample's context tensor, or ``None``.

    Example:
        >>> import torch
        >>> from flowmatch.interfaces import Condition
        >>> net = MLP(dim=2, hidden=64, depth=3)
        >>> net(torch.randn(5, 2), torch.rand(5)).shape
        torch.Size([5, 2])
        >>> net = MLP(dim=2, hidden=64, depth=3, values_dim=1)
        >>> c = Condition(values=torch.randn(5, 1), drop=torch.tensor([0, 0, 1, 0, 1]).bool())
        >>> net(torch.randn(5, 2), torch.rand(5), c).shape
        torch.Size([5, 2])
    """

    cond_kinds: ClassVar[frozenset[str]] = frozenset({"labels", "values", "context"})

    def __init__(
        self,
        dim: int,
        *,
        hidden: int = 256,
        depth: int = 4,
        time_dim: int = 64,
        num_classes: int | None = None,
        values_dim: int | None = None,
        context_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        check_positive_int(hidden, "hidden")
        check_positive_int(depth, "depth")
        if time_dim % 2:
            raise ValueError(f"time_dim must be even, got {time_dim}")
        self.num_classes = num_classes
        self.values_dim = (
            None if values_dim is None else check_positive_int(values_dim, "values_dim")
        )
        self.context_shape = None if context_shape is None else tuple(context_shape)
        self.time_embed = SinusoidalTimeEmbedding(time_dim)
        self.label_embed = (
            LabelEmbedding(num_classes, time_dim) if num_classes is not None else None
        )
        layers: list[nn.Module] = [nn.Linear(dim + time_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)
        # Built after the layers above, so a label-only net draws the same initial weights as
        # before values/context existed.
        self.values_embed = (
            None if self.values_dim is None else ConditionEmbedding((self.values_dim,), time_dim)
        )
        self.context_embed = (
            None if self.context_shape is None else ConditionEmbedding(self.context_shape, time_dim)
        )

    @property
    def null_label(self) -> int | None:
        """The label id of the empty condition, or ``None`` without labels."""
        return self.num_classes

    def forward(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """Return the velocity ``(B, *D)`` at ``x`` ``(B, *D)``, ``t`` ``(B,)``.

        Args:
            x: samples ``(B, *D)``.
            t: times ``(B,)``.
            cond: labels ``(B,)``, a :class:`~flowmatch.interfaces.Condition` or ``None``.

        Raises:
            ValueError: wrong shapes, or a condition kind this net was not built for.
            TypeError: non-integer labels.
        """
        batch = x.shape[0]
        flat = x.reshape(batch, -1)
        if flat.shape[1] != self.dim:
            raise ValueError(
                f"x has {flat.shape[1]} features per sample (shape {tuple(x.shape)}), "
                f"this MLP expects dim={self.dim}"
            )
        if t.shape != (batch,):
            raise ValueError(f"t must have shape (B,) = ({batch},), got {tuple(t.shape)}")
        labels, values, context, drop = condition_parts(cond)
        check_labels(labels, self.num_classes, batch)
        check_condition_part(
            "values", values, None if self.values_dim is None else (self.values_dim,), batch
        )
        check_condition_part("context", context, self.context_shape, batch)
        emb = self.time_embed(t)
        if self.label_embed is not None:
            # No condition means the null label, the same input classifier-free training uses.
            if labels is None:
                labels = torch.full((batch,), self.label_embed.null_label, device=x.device)
            emb = emb + self.label_embed(labels)
        if self.values_embed is not None:
            emb = emb + self.values_embed(values, drop, batch).to(emb.dtype)
        if self.context_embed is not None:
            emb = emb + self.context_embed(context, drop, batch).to(emb.dtype)
        return self.net(torch.cat([flat, emb], dim=1)).reshape(x.shape)

    def extra_repr(self) -> str:
        """Summarise size for ``print(model)``."""
        params = sum(p.numel() for p in self.parameters())
        return (
            f"dim={self.dim}, params={params} ({params / 1e6:.2f}M), log10={math.log10(params):.1f}"
        )
