"""Training steps that learn the source with the flow: CSFM and CrossFlow.

Both train two modules, ``"model"`` (the velocity field) and ``"source"`` (a learned Gaussian
``x0 = mu(c) + sigma(c) eps``, :class:`~flowmatch.sources_learned.ConditionalGaussianSource`,
``source.kind = "learned_gaussian"``); the flow-matching loss reaches the source through
``x0`` and ``x_t`` (no detach). They differ in what regularises the source and in whether the
velocity field sees the condition:

- ``csfm`` (Kim, Park, Jeon & Kim 2026, arXiv:2602.05951): a conditional field; a
  *variance-only* KL ``-mean(1 + l - e^l) / 2`` (no pull on ``mu``: that would undo the
  benefit) and the directional alignment ``|normalize(mu(c)) - normalize(x1)|^2``; the paper
  finds both critical (without them the source collapses to a point).
- ``crossflow`` (Liu et al. 2025, arXiv:2412.15213): the condition is another modality that
  only the source sees (a variational encoder into the data's shape, whatever the
  condition's own dimension); the field is unconditional. CrossFlow's KL with a weak pull on
  ``mu``, ``-mean(1 + l - (0.3 mu)^6 - e^l) / 2``, and a CLIP-style contrastive alignment of
  ``normalize(x0)`` with ``normalize(x1)`` over the batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowmatch.data.batch import Batch
from flowmatch.interfaces import Cond
from flowmatch.objectives.base import (
    OBJECTIVES,
    LossOutput,
    ObjectiveConfig,
    TrainingParts,
    TrainingStep,
    drop_condition,
)
from flowmatch.objectives.common import per_sample_mse, prediction_field, regression
from flowmatch.sources_learned import ConditionalGaussianSource
from flowmatch.utils.options import OptionError, option

__all__ = [
    "CSFMConfig",
    "CSFMStep",
    "CrossFlowConfig",
    "CrossFlowStep",
    "LearnedSourceStep",
    "UnconditionalField",
]


@dataclass(frozen=True)
class CSFMConfig(ObjectiveConfig):
    """Options of CSFM (Kim et al. 2026; defaults from their ``configs/csfm.yaml``)."""

    kl_weight: float = option(5.0, ge=0, doc="weight of the variance-only KL of the source")
    align_weight: float = option(1.0, ge=0, doc="weight of |normalize(mu) - normalize(x1)|^2")
    deterministic: bool = option(False, doc="x0 = mu(c) without noise (an ablation: collapses)")


@dataclass(frozen=True)
class CrossFlowConfig(ObjectiveConfig):
    """Options of CrossFlow (Liu et al. 2025; KL weight from their configs)."""

    kl_weight: float = option(0.01, ge=0, doc="weight of CrossFlow's KL of the encoder")
    align_weight: float = option(1.0, ge=0, doc="weight of the contrastive x0-x1 alignment")
    temperature: float = option(0.1, gt=0, doc="temperature of the contrastive alignment")
    deterministic: bool = option(False, doc="x0 = mu(c): a plain encoder (an ablation)")


class UnconditionalField(nn.Module):
    """A velocity field that ignores the condition: ``v(x, t, cond) = f(x, t, None)``."""

    def __init__(self, field: Any) -> None:
        super().__init__()
        self.inner = field

    def forward(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """Evaluate the wrapped field without the condition."""
        return self.inner(x, t, None)


def _variance_kl(logvar: Tensor) -> Tensor:
    return -0.5 * (1 + logvar - logvar.exp()).reshape(logvar.shape[0], -1).mean(1)


def _crossflow_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    terms = 1 + logvar - (0.3 * mu).pow(6) - logvar.exp()
    return -0.5 * terms.reshape(mu.shape[0], -1).mean(1)


def _direction_align(mu: Tensor, x1: Tensor) -> Tensor:
    a = F.normalize(mu.reshape(mu.shape[0], -1), dim=1)
    b = F.normalize(x1.reshape(x1.shape[0], -1).to(a), dim=1)
    return (a - b).square().sum(1)


def _contrastive(x0: Tensor, x1: Tensor, temperature: float) -> Tensor:
    a = F.normalize(x0.reshape(x0.shape[0], -1), dim=1)
    b = F.normalize(x1.reshape(x1.shape[0], -1).to(a), dim=1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (
        F.cross_entropy(logits, target, reduction="none")
        + F.cross_entropy(logits.T, target, reduction="none")
    )


class LearnedSourceStep(TrainingStep):
    """One step of flow matching from a learned source, trained jointly (CSFM / CrossFlow).

    ``x0 = mu_phi(c) + exp(l_phi(c) / 2) eps`` (``mu`` when ``deterministic``),
    ``x_t = alpha_t x1 + sigma_t x0``; ``L = |f(x_t, t, c') - y|^2 + kl_weight KL +
    align_weight A`` per sample, with ``c'`` the condition after dropout (CSFM) or nothing
    (CrossFlow); the source always sees the full condition, so guidance keeps the source of
    the condition asked for.

    Args:
        parts: the run's path, time sampler and conditioning (coupling: independent).
        config: a :class:`CSFMConfig` or :class:`CrossFlowConfig`.

    Raises:
        OptionError: a coupling other than the independent one (it would re-pair ``x0`` with
            another sample's condition).
    """

    trains = ("model", "source")

    def __init__(self, parts: TrainingParts, config: CSFMConfig | CrossFlowConfig) -> None:
        if parts.coupling.pairs:
            raise OptionError(
                "coupling.kind",
                f"a learned source is paired with its own sample's condition; use the "
                f"independent coupling, not {parts.coupling.name!r}",
            )
        self.path, self.time_sampler = parts.path, parts.time_sampler
        self.prediction = parts.prediction
        self.config = config
        self.crossflow = isinstance(config, CrossFlowConfig)
        conditional = parts.cond.conditional and not self.crossflow
        self.cond_dropout = config.cond_dropout if conditional else 0.0
        self.null_label = parts.cond.num_classes if self.cond_dropout > 0 else None

    def __repr__(self) -> str:
        return f"LearnedSourceStep({self.config!r})"

    def field(self, modules: Mapping[str, nn.Module]) -> Any:
        """The velocity field (condition-free for CrossFlow)."""
        f = prediction_field(modules["model"], self.path, self.prediction)
        return UnconditionalField(f) if self.crossflow else f

    def __call__(
        self, modules: Mapping[str, nn.Module], batch: Batch, generator: torch.Generator
    ) -> LossOutput:
        """Per-sample losses ``(B,)`` and the terms (``fm``, ``kl``, ``align``, ``sigma``)."""
        model, source = modules["model"], modules["source"]
        x1, cond = batch.x1, batch.cond
        b = x1.shape[0]
        mu, logvar = _params(source, cond, b)
        eps = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        x0 = mu if self.config.deterministic else mu + torch.exp(0.5 * logvar) * eps
        t = self.time_sampler.sample_t(b, generator, device=x1.device, dtype=x1.dtype)
        seen = (
            None
            if self.crossflow
            else drop_condition(cond, self.cond_dropout, self.null_label, generator)
        )
        sample = self.path.sample(x0, x1, t)
        out = model(sample.xt, t, seen)
        out, target = regression(self.path, self.prediction, "prediction", out, x0, x1, sample)
        fm = per_sample_mse(out, target)
        if self.crossflow:
            assert isinstance(self.config, CrossFlowConfig)
            kl = _crossflow_kl(mu, logvar)
            align = _contrastive(x0, x1, self.config.temperature)
        else:
            kl = _variance_kl(logvar)
            align = _direction_align(mu, x1)
        loss = fm + self.config.kl_weight * kl + self.config.align_weight * align
        logs = {
            "fm": fm.detach().mean(),
            "kl": kl.detach().mean(),
            "align": align.detach().mean(),
            "sigma": torch.exp(0.5 * logvar.detach()).mean(),
        }
        return LossOutput(loss=loss, logs=logs)


def _params(source: nn.Module, cond: Cond, batch: int) -> tuple[Tensor, Tensor]:
    inner = getattr(source, "module", source)  # DDP wraps the module
    if not isinstance(inner, ConditionalGaussianSource):
        raise TypeError(
            f"the 'source' module must be a learned Gaussian source (source.kind = "
            f"'learned_gaussian'), got {type(inner).__name__}"
        )
    mu, logvar = inner.params(cond, batch)
    return mu, logvar


def _build(config: ObjectiveConfig, *, parts: TrainingParts) -> LearnedSourceStep:
    assert isinstance(config, CSFMConfig | CrossFlowConfig)  # guaranteed by Registry.build
    if not isinstance(parts.source, ConditionalGaussianSource):
        raise OptionError(
            "source.kind",
            f"objective {config.kind!r} trains the source: set source.kind = "
            f"'learned_gaussian' (got {type(parts.source).__name__})",
        )
    if isinstance(config, CrossFlowConfig) and not parts.cond.conditional:
        raise OptionError(
            "objective.kind",
            "'crossflow' encodes the condition (the other modality) into the source; the data "
            "has no labels or conditions",
        )
    step = CrossFlowStep if isinstance(config, CrossFlowConfig) else CSFMStep
    return step(parts, config)


@OBJECTIVES.register("csfm", config=CSFMConfig, build=_build)
class CSFMStep(LearnedSourceStep):
    """Condition-dependent learned Gaussian source trained with the flow (Kim et al. 2026)."""


@OBJECTIVES.register("crossflow", config=CrossFlowConfig, build=_build)
class CrossFlowStep(LearnedSourceStep):
    """Flow from a variational encoding of the condition; unconditional field (Liu et al. 2025)."""
