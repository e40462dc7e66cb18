"""The network of Difference Transition Matching: a backbone and a small flow head.

Shaul, Singer, Gat & Lipman (2025), "Transition Matching", arXiv:2506.23589. The backbone
(one large evaluation per transition) maps the state ``X_t`` and the time to features ``h``;
the head (a small MLP, evaluated a few times per transition) is a velocity field in the
space of the transition's latent ``Y = X_T - X_0`` conditioned on ``h``. Trained by the
``dtm`` objective, sampled by the ``transition`` sampler.
"""

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
    condition_parts,
)
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import OptionError, option

__all__ = ["DTMConfig", "DTMNet"]


def _mlp(n_in: int, hidden: int, depth: int, n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(n_in, hidden), nn.SiLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(hidden, hidden), nn.SiLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, n_out))


@dataclass(frozen=True)
class DTMConfig(ModelConfig):
    """Options of the DTM network."""

    hidden: int = option(256, ge=1, doc="backbone width")
    depth: int = option(4, ge=1, doc="backbone hidden layers")
    features: int = option(128, ge=1, doc="size of the backbone's output features h")
    head_hidden: int = option(128, ge=1, doc="flow-head width")
    head_depth: int = option(3, ge=1, doc="flow-head hidden layers")
    time_dim: int = option(64, ge=2, doc="size of the time embeddings (even)")

    def validate(self) -> None:
        """``time_dim`` must be even."""
        if self.time_dim % 2:
            raise OptionError("time_dim", f"must be even, got {self.time_dim}")


def _build_dtm(config: ModelConfig, *, sample_shape: tuple[int, ...], cond: CondSpec) -> nn.Module:
    assert isinstance(config, DTMConfig)  # guaranteed by Registry.build
    check_cond_kinds("dtm", DTMNet.cond_kinds, cond)
    return DTMNet(
        math.prod(sample_shape),
        hidden=config.hidden,
        depth=config.depth,
        features=config.features,
        head_hidden=config.head_hidden,
        head_depth=config.head_depth,
        time_dim=config.time_dim,
        cond=cond,
    )


@MODELS.register("dtm", config=DTMConfig, build=_build_dtm)
class DTMNet(nn.Module):
    """``h = B([x, e(t), e(c)])``, ``u = H([y, e(s), h])``: backbone and flow head of DTM.

    ``backbone(x, t, cond)`` returns ``h`` ``(B, features)``; ``head(y, s, h)`` the velocity
    ``(B, *D)`` of the inner flow of ``Y`` at inner time ``s``. Null conditions as in
    :class:`~flowmatch.models.MLP` (label ``num_classes``; learned null vectors).

    Args:
        dim: number of features ``prod(D)``.
        hidden: backbone width.
        depth: backbone hidden layers.
        features: size of ``h``.
        head_hidden: head width.
        head_depth: head hidden layers.
        time_dim: size of the time embeddings.
        cond: the conditioning the backbone takes.
    """

    cond_kinds: ClassVar[frozenset[str]] = frozenset({"labels", "values", "context"})

    def __init__(
        self,
        dim: int,
        *,
        hidden: int = 256,
        depth: int = 4,
        features: int = 128,
        head_hidden: int = 128,
        head_depth: int = 3,
        time_dim: int = 64,
        cond: CondSpec | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        spec = cond or CondSpec()
        self.num_classes = spec.num_classes
        self.time_embed = SinusoidalTimeEmbedding(time_dim)
        self.label_embed = (
            None if spec.num_classes is None else LabelEmbedding(spec.num_classes, time_dim)
        )
        self.values_embed = (
            None if spec.values_dim is None else ConditionEmbedding((spec.values_dim,), time_dim)
        )
        self.context_embed = (
            None if spec.context_shape is None else ConditionEmbedding(spec.context_shape, time_dim)
        )
        self.body = _mlp(dim + time_dim, hidden, depth, features)
        self.head_time = SinusoidalTimeEmbedding(time_dim)
        self.head_net = _mlp(dim + time_dim + features, head_hidden, head_depth, dim)

    @property
    def null_label(self) -> int | None:
        """The label id of the empty condition, or ``None`` without labels."""
        return self.num_classes

    def backbone(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """Features ``h`` ``(B, features)`` of the state ``x`` ``(B, *D)`` at times ``t`` ``(B,)``."""
        batch = x.shape[0]
        emb = self.time_embed(t)
        labels, values, context, drop = condition_parts(cond)
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full((batch,), self.label_embed.null_label, device=x.device)
            emb = emb + self.label_embed(labels)
        if self.values_embed is not None:
            emb = emb + self.values_embed(values, drop, batch).to(emb.dtype)
        if self.context_embed is not None:
            emb = emb + self.context_embed(context, drop, batch).to(emb.dtype)
        return self.body(torch.cat([x.reshape(batch, -1), emb], dim=1))

    def head(self, y: Tensor, s: Tensor, h: Tensor) -> Tensor:
        """Inner velocity ``(B, *D)`` at ``y`` ``(B, *D)``, inner times ``s`` ``(B,)``, features ``h``."""
        batch = y.shape[0]
        z = torch.cat([y.reshape(batch, -1), self.head_time(s), h], dim=1)
        return self.head_net(z).reshape(y.shape)

    def forward(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """The backbone features (``backbone``); DTM runs sample with the transition sampler."""
        return self.backbone(x, t, cond)
