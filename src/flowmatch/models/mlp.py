"""A small MLP velocity field for low-dimensional data (2-D toys, tabular, 8x8 digits)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from flowmatch.interfaces import CondSpec
from flowmatch.models.base import MODELS, ModelConfig, check_cond_kinds
from flowmatch.models.embeddings import (
    IntervalEmbedding,
    LabelEmbedding,
    SinusoidalTimeEmbedding,
    check_labels,
    check_time_inputs,
    interval_of,
)
from flowmatch.utils.checks import check_positive_float, check_positive_int
from flowmatch.utils.options import OptionError, option


@dataclass(frozen=True)
class MLPConfig(ModelConfig):
    """Options of the MLP."""

    hidden: int = option(256, ge=1, doc="width of the hidden layers")
    depth: int = option(4, ge=1, doc="number of hidden layers")
    time_dim: int = option(64, ge=2, doc="size of the sinusoidal time embedding (even)")
    time_inputs: int = option(
        1, ge=1, le=2, doc="1: v(x, t); 2: two-time u(x, t, t_end) for flow maps / MeanFlow"
    )
    time_scale: float = option(
        1000.0, gt=0, doc="t is embedded as sinusoids of time_scale * t (1: smooth in t, for JVPs)"
    )

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
        time_inputs=config.time_inputs,
        time_scale=config.time_scale,
    )


@MODELS.register("mlp", config=MLPConfig, build=_build_mlp)
class MLP(nn.Module):
    """``v(x, t, cond) = MLP([flatten(x), emb(t) (+ emb(label))])`` with SiLU activations.

    Inputs of any feature shape ``(B, *D)`` are flattened and the output reshaped back.

    Args:
        dim: number of features ``prod(D)``.
        hidden: width of hidden layers.
        depth: number of hidden layers.
        time_dim: size of the sinusoidal time embedding.
        num_classes: number of classes for conditioning (``None``: unconditional). The label
            ``num_classes`` is the null condition for classifier-free guidance.
        time_inputs: 1 for a velocity field ``v(x, t)``; 2 for a two-time network
            ``u(x, t, t_end)`` (an average velocity over ``[t, t_end]``, see
            ``flowmatch.models.AverageVelocityMap``): the interval ``t_end - t`` gets its own
            zero-initialised embedding (:class:`IntervalEmbedding`) added to the time
            embedding, so one-time weights load into it (``strict=False``) unchanged.
        time_scale: the sinusoidal features are of ``time_scale * t`` (default 1000, the
            DiT/transformer convention); ``1`` keeps the network smooth in ``t``, which
            objectives that differentiate in time (MeanFlow, flow maps, sCM) benefit from.

    Example:
        >>> import torch
        >>> net = MLP(dim=2, hidden=64, depth=3)
        >>> net(torch.randn(5, 2), torch.rand(5)).shape
        torch.Size([5, 2])
    """

    cond_kinds: ClassVar[frozenset[str]] = frozenset({"labels"})

    def __init__(
        self,
        dim: int,
        *,
        hidden: int = 256,
        depth: int = 4,
        time_dim: int = 64,
        num_classes: int | None = None,
        time_inputs: int = 1,
        time_scale: float = 1000.0,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.time_inputs = check_time_inputs(time_inputs)
        check_positive_int(hidden, "hidden")
        check_positive_int(depth, "depth")
        if time_dim % 2:
            raise ValueError(f"time_dim must be even, got {time_dim}")
        self.num_classes = num_classes
        self.time_embed = SinusoidalTimeEmbedding(
            time_dim, scale=check_positive_float(time_scale, "time_scale")
        )
        self.label_embed = (
            LabelEmbedding(num_classes, time_dim) if num_classes is not None else None
        )
        self.interval_embed = (
            IntervalEmbedding(time_dim, scale=time_scale) if self.time_inputs == 2 else None
        )
        layers: list[nn.Module] = [nn.Linear(dim + time_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)

    @property
    def null_label(self) -> int | None:
        """The label id of the empty condition, or ``None`` if unconditional."""
        return self.num_classes

    def forward(
        self, x: Tensor, t: Tensor, cond: Tensor | None = None, t_end: Tensor | None = None
    ) -> Tensor:
        """Return the velocity ``(B, *D)`` at ``x`` ``(B, *D)``, ``t`` ``(B,)``.

        A two-time net (``time_inputs=2``) returns the average velocity over ``[t, t_end]``
        (``t_end`` ``(B,)``; omitted: ``t_end = t``, the instantaneous velocity).
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
        emb = self.time_embed(t)
        h = interval_of(t, t_end, self.time_inputs, batch)
        if self.interval_embed is not None and h is not None:
            emb = emb + self.interval_embed(h)
        check_labels(cond, self.num_classes, batch)
        if self.label_embed is not None:
            # No condition means the null label, the same input classifier-free training uses.
            if cond is None:
                cond = torch.full((batch,), self.label_embed.null_label, device=x.device)
            emb = emb + self.label_embed(cond)
        return self.net(torch.cat([flat, emb], dim=1)).reshape(x.shape)

    def extra_repr(self) -> str:
        """Summarise size for ``print(model)``."""
        params = sum(p.numel() for p in self.parameters())
        return (
            f"dim={self.dim}, params={params} ({params / 1e6:.2f}M), log10={math.log10(params):.1f}"
        )
