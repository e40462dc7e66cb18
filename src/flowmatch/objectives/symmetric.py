"""Symmetrical flow matching: one field generates images from labels and labels from images.

Caetano, Viviers, de With & van der Sommen (2026), "Symmetrical Flow Matching" (AAAI; code
``caetas/SymmetricFlow``). The state is ``z = [x, y]`` (image block, label block ``K``); the
two blocks move in *opposite* time directions on the linear path: the image from noise to
data, the label from data to noise,

    x_t = (1 - t) eps_x + t x,    y_t = (1 - t) code(c) + t eps_y,
    target = [x - eps_x, eps_y - code(c)],

i.e. flow matching with the source ``z0 = [eps_x, code(c)]`` and the data ``z1 = [x, eps_y]``
(``code(c) = scale (2 onehot(c) - 1)``). Generation given a class starts at ``[eps_x,
code(c)]`` and integrates to ``t = 1`` (the image block is the sample); classification starts
at ``[x, eps_y]`` at ``t = 1`` and integrates *backwards* to ``t = 0``, where the label block
is read (:func:`flowmatch.api.symmetric.classify`). The field never takes the label as a
conditioning input: the label is part of the state.

A run: ``objective.kind = "symmetric"``, ``source.kind = "symmetric_labels"``,
``model.kind = "mlp"`` on labelled data; the flow's state space is
:class:`~flowmatch.latent.JointLabelSpace` (stored with the run; samples are decoded to the
image block).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowmatch.data.batch import Batch
from flowmatch.interfaces import Cond, CondSpec
from flowmatch.latent.space import JointLabelSpace
from flowmatch.models.embeddings import condition_parts
from flowmatch.objectives.base import (
    OBJECTIVES,
    LossOutput,
    ObjectiveConfig,
    TrainingParts,
    TrainingStep,
)
from flowmatch.objectives.learned_source import UnconditionalField
from flowmatch.paths.schedules import LinearSchedule
from flowmatch.sources import SOURCES, Source, SourceConfig
from flowmatch.utils.options import OptionError, option

__all__ = ["SymmetricConfig", "SymmetricLabelSource", "SymmetricStep", "label_code"]


def label_code(labels: Tensor, num_classes: int, scale: float, dtype: torch.dtype) -> Tensor:
    """``scale (2 onehot(labels) - 1)``, ``(B, K)``."""
    onehot = torch.nn.functional.one_hot(labels, num_classes).to(dtype)
    return scale * (2 * onehot - 1)


@dataclass(frozen=True)
class SymmetricSourceConfig(SourceConfig):
    """Options of the symmetric label source."""

    code_scale: float = option(1.0, gt=0, doc="magnitude of the label code (+-scale per channel)")


def _build_symmetric_source(
    config: SourceConfig, *, sample_shape: tuple[int, ...], cond: CondSpec
) -> SymmetricLabelSource:
    assert isinstance(config, SymmetricSourceConfig)  # guaranteed by Registry.build
    if cond.num_classes is None:
        raise OptionError("source.kind", "'symmetric_labels' needs labelled data")
    return SymmetricLabelSource(math.prod(sample_shape), cond.num_classes, config.code_scale)


@SOURCES.register("symmetric_labels", config=SymmetricSourceConfig, build=_build_symmetric_source)
class SymmetricLabelSource(Source):
    """The source of symmetrical flow matching: ``z0 = [eps_x, code(c)]`` given class ``c``.

    The label block is data at ``t = 0`` (a point mass at the class code), so the source is
    conditional (``transform(eps, labels)``) and has no density (``has_log_prob`` False).

    Args:
        dim: state size ``D + K``.
        num_classes: ``K``.
        code_scale: the code magnitude.
    """

    conditional = True
    has_log_prob = False

    def __init__(self, dim: int, num_classes: int, code_scale: float = 1.0) -> None:
        self.dim, self.num_classes, self.code_scale = dim, num_classes, float(code_scale)

    def __repr__(self) -> str:
        return f"SymmetricLabelSource(dim={self.dim}, K={self.num_classes})"

    def transform(self, eps: Tensor, cond: Cond) -> Tensor:
        """``[eps[:, :D], code(labels)]`` for standard-normal ``eps`` ``(B, D + K)``.

        Raises:
            ValueError: no labels (a symmetric run generates given a class).
        """
        labels = condition_parts(cond)[0]
        if labels is None:
            raise ValueError("symmetrical flow matching generates given class labels (cond)")
        code = label_code(labels, self.num_classes, self.code_scale, eps.dtype)
        return torch.cat([eps[:, : self.dim - self.num_classes], code.to(eps.device)], dim=1)

    def sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        cond: Cond = None,
    ) -> Tensor:
        """``[eps_x, code(c)]`` ``(B, D + K)`` given labels ``cond``."""
        eps = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return self.transform(eps, cond)

    def log_prob(self, x: Tensor) -> Tensor:
        """Not defined (the label block is a point mass).

        Raises:
            ValueError: always.
        """
        raise ValueError("the symmetric label source has no density (its label block is fixed)")


@dataclass(frozen=True)
class SymmetricConfig(ObjectiveConfig):
    """Options of symmetrical flow matching."""

    image_weight: float = option(
        0.5, gt=0, lt=1, doc="w of w MSE(image) + (1 - w) MSE(label) (caetas/SymmetricFlow)"
    )
    cond_dropout: float = option(0.0, ge=0, lt=1, doc="must be 0: the label is part of the state")

    def validate(self) -> None:
        """No condition dropout (the field takes no condition)."""
        if self.cond_dropout != 0.0:
            raise OptionError("cond_dropout", "must be 0 for 'symmetric' (labels are in the state)")

    def state_space(self, sample_shape: tuple[int, ...], cond: CondSpec) -> JointLabelSpace:
        """``[image, label]`` with ``K = num_classes`` label channels.

        Raises:
            OptionError: unlabelled data.
        """
        if cond.num_classes is None:
            raise OptionError(
                "objective.kind", "'symmetric' needs labelled data (and model.conditional='auto')"
            )
        return JointLabelSpace(tuple(sample_shape), cond.num_classes)


class SymmetricStep(TrainingStep):
    """The symmetrical flow-matching loss on the joint state (see the module docstring)."""

    def __init__(self, parts: TrainingParts, config: SymmetricConfig) -> None:
        if not isinstance(parts.path.schedule, LinearSchedule) or parts.prediction != "velocity":
            raise OptionError("path", "'symmetric' uses the linear path with velocity prediction")
        if not isinstance(parts.source, SymmetricLabelSource):
            raise OptionError(
                "source.kind", "objective 'symmetric' needs source.kind = 'symmetric_labels'"
            )
        if parts.coupling.pairs:
            raise OptionError("coupling.kind", "'symmetric' needs the independent coupling")
        self.source, self.path, self.time_sampler = parts.source, parts.path, parts.time_sampler
        self.weight = config.image_weight

    def __repr__(self) -> str:
        return f"SymmetricStep(image_weight={self.weight})"

    def field(self, modules: Mapping[str, nn.Module]) -> Any:
        """The joint field (it ignores conditioning: labels live in the state)."""
        return UnconditionalField(modules["model"])

    def __call__(
        self, modules: Mapping[str, nn.Module], batch: Batch, generator: torch.Generator
    ) -> LossOutput:
        """Per-sample ``2 (w MSE_x + (1 - w) MSE_y)`` ``(B,)``."""
        z = batch.x1  # [x, 0_K]: the data encoded by the JointLabelSpace
        k = self.source.num_classes
        eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        x0 = self.source.transform(eps, batch.labels)
        x1 = torch.cat([z[:, :-k], eps[:, -k:]], dim=1)  # the label block ends as noise
        t = self.time_sampler.sample_t(z.shape[0], generator, device=z.device, dtype=z.dtype)
        sample = self.path.sample(x0, x1, t)
        diff = (modules["model"](sample.xt, t, None) - sample.v_target).square()
        loss = 2 * (self.weight * diff[:, :-k].mean(1) + (1 - self.weight) * diff[:, -k:].mean(1))
        return LossOutput(loss=loss)


def _build_symmetric(config: ObjectiveConfig, *, parts: TrainingParts) -> SymmetricStep:
    assert isinstance(config, SymmetricConfig)  # guaranteed by Registry.build
    return SymmetricStep(parts, config)


OBJECTIVES.add("symmetric", SymmetricStep, config=SymmetricConfig, build=_build_symmetric)
