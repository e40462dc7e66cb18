"""Turn configuration sections into library objects (the only place that does so).

Every builder goes through a registry: there is no ``if/elif`` over component names here.
Model initialisation is seeded from ``train.seed``, so the same config gives the same
weights, bit for bit, on CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from flowmatch.config.schema import RunConfig
from flowmatch.couplings.base import COUPLINGS
from flowmatch.data.batch import ArrayDataset
from flowmatch.interfaces import CondSpec
from flowmatch.models.base import MODELS, ModelConfig
from flowmatch.objectives.base import OBJECTIVES, TrainingParts, TrainingStep
from flowmatch.paths.schedules import PATHS
from flowmatch.solvers.base import SAMPLERS, Sampler, SamplerConfig
from flowmatch.sources import SOURCES, Source
from flowmatch.times.samplers import TIME_SAMPLERS
from flowmatch.utils.options import OptionError
from flowmatch.utils.tensor import mix_seed

#: Stream id of the model-initialisation seed (``mix_seed(train.seed, INIT_STREAM)``).
INIT_STREAM = 0x1217


def cond_spec(cfg: ModelConfig, dataset: ArrayDataset) -> CondSpec:
    """What the model is conditioned on: every condition the data carries.

    Labels, continuous values and context, unless ``model.conditional = "no"``, which drops
    all of them.

    Raises:
        OptionError: ``model.conditional = "yes"`` on data without any condition.
    """
    if cfg.conditional == "yes" and not dataset.cond_kinds:
        raise OptionError(
            "model.conditional",
            f"is 'yes' but dataset {dataset.name!r} has no labels or conditions (for CSV data "
            "set data.label_column or data.cond_columns; for .npz store 'labels', 'cond' or "
            "'context')",
        )
    if cfg.conditional == "no":
        return CondSpec()
    return CondSpec(
        num_classes=dataset.num_classes if dataset.labels is not None else None,
        values_dim=None if dataset.values is None else int(dataset.values.shape[1]),
        context_shape=None if dataset.context is None else tuple(dataset.context.shape[1:]),
    )


def build_model(
    cfg: ModelConfig, sample_shape: tuple[int, ...], cond: CondSpec | None = None
) -> nn.Module:
    """The network for samples of shape ``sample_shape`` (e.g. ``(2,)`` or ``(1, 8, 8)``).

    Raises:
        OptionError: the model does not fit the data (shape or conditioning kind).
    """
    return MODELS.build(cfg, sample_shape=tuple(sample_shape), cond=cond or CondSpec())


def build_modules(
    cfg: RunConfig, sample_shape: tuple[int, ...], cond: CondSpec
) -> dict[str, nn.Module]:
    """The trained modules of a run, initialised from ``train.seed`` (bit-reproducible).

    ``"model"``, plus ``"source"`` when the source is learned (a ``Source`` that is an
    ``nn.Module``, e.g. ``learned_gaussian``), plus the modules the objective adds
    (``ObjectiveConfig.extra_modules``, e.g. REPA's projector). The global RNG is used only
    inside a forked RNG state, so building a run changes no global random state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(mix_seed(cfg.train.seed, INIT_STREAM))
        model = build_model(cfg.model, sample_shape, cond)
        modules = {"model": model}
        source = SOURCES.build(cfg.source, sample_shape=tuple(sample_shape), cond=cond)
        if isinstance(source, nn.Module):
            modules["source"] = source
        modules.update(cfg.objective.extra_modules(model, tuple(sample_shape), cond))
        return modules


def fit_source(source: Source, train_ds: ArrayDataset) -> dict[str, Any]:
    """Fit a data-dependent source on the training set; return its state to store in the run.

    A no-op (empty state) for sources that fit nothing (``Source.fit``).
    """
    source.fit(train_ds.x)
    return source.fitted_state()


def restore_source(source: Source, state: Mapping[str, Any] | None) -> Source:
    """Give a freshly built source the fitted state stored with its run (``fit_source``)."""
    source.load_fitted_state(dict(state or {}))
    return source


def build_parts(
    cfg: RunConfig,
    sample_shape: tuple[int, ...],
    cond: CondSpec,
    frozen: Mapping[str, Any] | None = None,
) -> TrainingParts:
    """The run's path, coupling, time sampler and source, composed for an objective."""
    coupling = COUPLINGS.build(cfg.coupling)
    if getattr(coupling, "uses_labels", False) and cond.num_classes is None:
        raise OptionError(
            "coupling.kind",
            f"{cfg.coupling.kind!r} pairs within classes and needs a conditional run: set "
            "model.conditional = 'yes' on labelled data",
        )
    return TrainingParts(
        path=PATHS.build(cfg.path),
        coupling=coupling,
        time_sampler=TIME_SAMPLERS.build(cfg.time),
        source=SOURCES.build(cfg.source, sample_shape=tuple(sample_shape), cond=cond),
        prediction=cfg.path.prediction,
        cond=cond,
        frozen=dict(frozen or {}),
    )


def build_step(parts: TrainingParts, cfg: RunConfig) -> TrainingStep:
    """The training step of ``cfg.objective`` over ``parts``."""
    return OBJECTIVES.build(cfg.objective, parts=parts)


def build_sampler(cfg: SamplerConfig | str, **options: Any) -> Sampler:
    """A sampler from its config or its name (with options, e.g. ``atol`` for ``dopri5``).

    Raises:
        OptionError: unknown name or option.
    """
    config = SAMPLERS.config(cfg, **options) if isinstance(cfg, str) else cfg
    return SAMPLERS.build(config)
