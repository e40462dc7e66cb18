"""Learned, condition-dependent Gaussian sources: ``x0 = mu(c) + sigma(c) eps``.

One module serves two methods (trained jointly with the velocity field by their steps):

- CSFM (Kim, Park, Jeon & Kim 2026, "Better Source, Better Flow", arXiv:2602.05951): the
  source of a *conditional* flow, regularised by a variance-only KL and a directional
  alignment of ``mu(c)`` with the data (``objective.kind = "csfm"``);
- CrossFlow (Liu et al. 2025, CVPR, arXiv:2412.15213): a variational encoder of another
  modality (here: the condition, of any shape) into the data's shape, the *only* route of the
  condition into an unconditional flow (``objective.kind = "crossflow"``).

The module is a ``Source`` and an ``nn.Module``: a run trains it as the module named
``"source"`` (checkpointed like the model), and ``Run.source`` / ``Run.noise`` sample it with
each sample's condition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flowmatch.interfaces import Cond, CondSpec
from flowmatch.models.embeddings import ConditionEmbedding, LabelEmbedding, condition_parts
from flowmatch.sources import SOURCES, Source, SourceConfig
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import option

__all__ = ["ConditionalGaussianSource", "LearnedGaussianConfig"]

#: ``log sigma^2`` is clamped to this range (a collapsed or exploding source stays finite).
LOGVAR_RANGE = (-12.0, 6.0)


@dataclass(frozen=True)
class LearnedGaussianConfig(SourceConfig):
    """Options of the learned condition-dependent Gaussian source."""

    hidden: int = option(128, ge=1, doc="width of the source network's hidden layers")
    depth: int = option(2, ge=1, doc="hidden layers of the source network")
    embed_dim: int = option(64, ge=1, doc="size of the condition embedding")
    init_logvar: float = option(0.0, doc="initial log sigma^2 (0: the source starts as N(0, I))")


def _build_learned(
    config: SourceConfig, *, sample_shape: tuple[int, ...], cond: CondSpec
) -> ConditionalGaussianSource:
    assert isinstance(config, LearnedGaussianConfig)  # guaranteed by Registry.build
    return ConditionalGaussianSource(
        tuple(sample_shape),
        cond,
        hidden=config.hidden,
        depth=config.depth,
        embed_dim=config.embed_dim,
        init_logvar=config.init_logvar,
    )


@SOURCES.register("learned_gaussian", config=LearnedGaussianConfig, build=_build_learned)
class ConditionalGaussianSource(nn.Module, Source):
    """``p0(x | c) = N(mu_phi(c), diag exp(l_phi(c)))``, a network of the condition ``c``.

    ``c`` is embedded like the reference models embed it (labels, continuous values and/or a
    context tensor, each with a learned null embedding; an unconditional run learns one fixed
    Gaussian), then an MLP outputs ``(mu, l)`` of the sample shape. The last layer starts at
    zero, so the source starts as ``N(0, exp(init_logvar) I)`` for every condition.
    Sampling is reparameterised: ``x0 = mu(c) + exp(l(c) / 2) eps`` (:meth:`transform`), so
    the flow-matching loss trains ``phi`` through ``x0`` (Kim et al. 2026; Liu et al. 2025).

    Args:
        sample_shape: shape ``D`` of one sample.
        cond: the conditioning of the run (what ``c`` may carry).
        hidden: hidden width.
        depth: hidden layers.
        embed_dim: size of the condition embedding.
        init_logvar: initial ``log sigma^2``.
    """

    conditional = True

    def __init__(
        self,
        sample_shape: tuple[int, ...],
        cond: CondSpec | None = None,
        *,
        hidden: int = 128,
        depth: int = 2,
        embed_dim: int = 64,
        init_logvar: float = 0.0,
    ) -> None:
        super().__init__()
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.dim = math.prod(self.sample_shape)
        self.spec = cond or CondSpec()
        check_positive_int(hidden, "hidden")
        check_positive_int(depth, "depth")
        check_positive_int(embed_dim, "embed_dim")
        self.embed_dim = embed_dim
        self.label_embed = (
            None
            if self.spec.num_classes is None
            else LabelEmbedding(self.spec.num_classes, embed_dim)
        )
        self.values_embed = (
            None
            if self.spec.values_dim is None
            else ConditionEmbedding((self.spec.values_dim,), embed_dim)
        )
        self.context_embed = (
            None
            if self.spec.context_shape is None
            else ConditionEmbedding(self.spec.context_shape, embed_dim)
        )
        self.null = nn.Parameter(torch.zeros(embed_dim))  # the input of an unconditional source
        layers: list[nn.Module] = [nn.Linear(embed_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        head = nn.Linear(hidden, 2 * self.dim)
        nn.init.zeros_(head.weight)
        with torch.no_grad():
            head.bias[: self.dim].zero_()
            head.bias[self.dim :].fill_(float(init_logvar))
        self.net = nn.Sequential(*layers, head)

    def _embed(self, cond: Cond, batch: int) -> Tensor:
        labels, values, context, drop = condition_parts(cond)
        e = self.null.expand(batch, -1)
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full((batch,), self.label_embed.null_label, device=e.device)
            e = e + self.label_embed(labels)
        if self.values_embed is not None:
            e = e + self.values_embed(values, drop, batch)
        if self.context_embed is not None:
            e = e + self.context_embed(context, drop, batch)
        return e

    def params(self, cond: Cond, batch: int) -> tuple[Tensor, Tensor]:
        """``(mu, log sigma^2)`` of the source given ``cond``, each ``(B, *D)``.

        Args:
            cond: the condition of ``B`` samples (``None``: the null condition).
            batch: ``B`` (needed when ``cond`` is ``None``).
        """
        out = self.net(self._embed(cond, batch))
        mu, logvar = out[:, : self.dim], out[:, self.dim :].clamp(*LOGVAR_RANGE)
        shape = (batch, *self.sample_shape)
        return mu.reshape(shape), logvar.reshape(shape)

    def transform(self, eps: Tensor, cond: Cond) -> Tensor:
        """``x0 = mu(c) + exp(l(c) / 2) eps`` for standard-normal ``eps`` ``(B, *D)``."""
        mu, logvar = self.params(cond, eps.shape[0])
        return mu.to(eps) + torch.exp(0.5 * logvar).to(eps) * eps

    def sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        cond: Cond = None,
    ) -> Tensor:
        """Draw ``x0`` ``(B, *D)`` given ``cond`` (``None``: the null condition)."""
        eps = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return self.transform(eps, cond)

    def log_prob(self, x: Tensor, cond: Cond = None) -> Tensor:
        """``log N(x; mu(c), diag exp(l(c)))`` summed over ``D``, ``(B,)``."""
        mu, logvar = self.params(cond, x.shape[0])
        z2 = (x - mu.to(x)).square() * torch.exp(-logvar).to(x)
        lp = -0.5 * (z2 + logvar.to(x) + math.log(2 * math.pi))
        return lp.reshape(x.shape[0], -1).sum(1)

    def extra_repr(self) -> str:
        """Summarise size for ``print``."""
        params = sum(p.numel() for p in self.parameters())
        return f"shape={self.sample_shape}, cond={self.spec}, params={params}"
