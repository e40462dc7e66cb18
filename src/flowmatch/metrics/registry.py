"""The metric registry: sample-quality metrics by name, each declaring the data it applies to.

``flowmatch eval`` scores generated samples with every registered metric that applies to the
run's data (``eval.metrics = []``, the default) or with the names listed in ``eval.metrics``.
A metric is a class with ``applies(kind, sample_shape)`` and
``__call__(samples, reference, *, labels, generator) -> float``; register your own with
``@METRICS.register("name")`` in a plugin module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from flowmatch.registry import ComponentConfig, Registry


@dataclass(frozen=True)
class MetricConfig(ComponentConfig):
    """A metric (``eval.metrics`` entries); ``kind`` names it."""


class Metric(ABC):
    """A score of generated samples against reference samples (lower is better unless stated).

    Attributes:
        name: registry name (set by the registration).
        higher_is_better: direction of the score.
        needs_labels: the score compares samples with the labels they were generated for.
        auto: included when ``eval.metrics`` is empty (the default set for its data).
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    auto: ClassVar[bool] = True

    @classmethod
    @abstractmethod
    def applies(cls, kind: str, sample_shape: tuple[int, ...]) -> bool:
        """Whether the metric is meaningful for data of this kind and sample shape."""

    @abstractmethod
    def __call__(
        self,
        samples: Tensor,
        reference: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> float:
        """Score ``samples`` ``(N, *D)`` against ``reference`` ``(M, *D)``."""


#: Metrics by name.
METRICS: Registry[Metric, MetricConfig] = Registry("metric", MetricConfig)


class VectorMetric(Metric):
    """A metric of vector data ``(N, D)`` (2-D toys, tables)."""

    @classmethod
    def applies(cls, kind: str, sample_shape: tuple[int, ...]) -> bool:
        """Vectors only (images use feature-space metrics)."""
        return len(sample_shape) == 1


class DigitsMetric(Metric):
    """A metric in the feature space of flowmatch's 8x8 digits classifier."""

    @classmethod
    def applies(cls, kind: str, sample_shape: tuple[int, ...]) -> bool:
        """Images of shape ``(1, 8, 8)``."""
        return tuple(sample_shape) == (1, 8, 8)


@METRICS.register("w2")
class W2(VectorMetric):
    """Exact 2-Wasserstein distance (subsample of 2000 per side)."""

    def __call__(
        self,
        samples: Tensor,
        reference: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> float:
        """``W2(samples, reference)``."""
        from flowmatch.metrics.wasserstein import wasserstein2

        return wasserstein2(samples, reference, generator=generator)


@METRICS.register("sliced_w2")
class SlicedW2(VectorMetric):
    """Sliced 2-Wasserstein distance (random 1-D projections)."""

    def __call__(
        self,
        samples: Tensor,
        reference: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> float:
        """Sliced ``W2(samples, reference)``."""
        from flowmatch.metrics.wasserstein import sliced_wasserstein2

        return sliced_wasserstein2(samples, reference, generator=generator)


@METRICS.register("mmd")
class MMD(VectorMetric):
    """Squared MMD with an RBF kernel (median-heuristic bandwidth; biased, never negative)."""

    def __call__(
        self,
        samples: Tensor,
        reference: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> float:
        """``MMD^2(samples, reference)``."""
        from flowmatch.metrics.kernel import mmd_rbf

        return mmd_rbf(samples, reference, estimator="biased")


@METRICS.register("energy")
class Energy(VectorMetric):
    """Energy distance (biased V-statistic)."""

    def __call__(
        self,
        samples: Tensor,
        reference: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> float:
        """Energy distance of ``samples`` and ``reference``."""
        from flowmatch.metrics.kernel import energy_distance

        return energy_distance(samples, reference)


@METRICS.register("fd_digits")
class DigitsFD(DigitsMetric):
    """Frechet distance in the features of flowmatch's digits classifier (8x8 images)."""

    def __call__(
        self,
        samples: Tensor,
        reference: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> float:
        """FD between classifier features of ``samples`` and ``reference``."""
        from flowmatch.metrics.digits_features import digits_frechet_distance

        return digits_frechet_distance(samples, reference)


@METRICS.register("class_acc")
class DigitsClassAccuracy(DigitsMetric):
    """Class accuracy of conditional digit samples on the real-digit manifold (next to FD only).

    A sample counts when the digits classifier reads its intended label *and* its features
    lie within the 3-NN radius of a reference digit (Kynkäänniemi et al. 2019), so noise
    carrying a faint class template does not score as a digit.
    """

    higher_is_better = True
    needs_labels = True

    def __call__(
        self,
        samples: Tensor,
        reference: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> float:
        """Fraction of samples classified as the label they were generated for."""
        from flowmatch.metrics.digits_features import digits_classifier_accuracy

        if labels is None:
            raise ValueError("class_acc needs the labels the samples were generated for")
        return digits_classifier_accuracy(samples, labels, reference=reference)


def metrics_for(
    kind: str, sample_shape: tuple[int, ...], names: tuple[str, ...] = (), *, labelled: bool
) -> dict[str, Metric]:
    """The metrics to report for data of ``kind`` / ``sample_shape``.

    Args:
        kind: the data kind (``"2d"``, ``"tabular"``, ``"image"``, ...).
        sample_shape: one sample's shape.
        names: explicit metric names (each must apply); empty: every applicable ``auto`` one.
        labelled: whether samples come with the labels they were generated for.

    Raises:
        ValueError: an unknown name, or one that does not apply to this data.
    """
    if names:
        out: dict[str, Metric] = {}
        for n in names:
            cls = metric_class(n)
            if not cls.applies(kind, sample_shape):
                raise ValueError(
                    f"metric {n!r} does not apply to {kind} data of shape {sample_shape}"
                )
            if cls.needs_labels and not labelled:
                raise ValueError(f"metric {n!r} needs a conditional model (labelled samples)")
            out[n] = cls()
        if "class_acc" in out and "fd_digits" not in out:
            raise ValueError(
                "metric 'class_acc' is reported only next to 'fd_digits' (an accuracy alone "
                "does not show sample quality): add fd_digits to the metrics"
            )
        return out
    chosen = [metric_class(e.name) for e in METRICS.entries()]
    return {
        c.name: c()
        for c in chosen
        if c.auto and c.applies(kind, sample_shape) and (labelled or not c.needs_labels)
    }


def metric_class(name: str) -> type[Metric]:
    """The metric class registered as ``name`` (unknown names list the registered ones)."""
    target = METRICS.entry(name).target
    if not (isinstance(target, type) and issubclass(target, Metric)):
        raise TypeError(f"metric {name!r} must be a Metric subclass, got {target!r}")
    return target
