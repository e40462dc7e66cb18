"""Training steps: the protocol every training method implements, and the objective registry.

The trainer (``flowmatch.train.Trainer``) owns the bookkeeping (optimiser, schedule, EMA,
checkpoints, resume, NaN detection, DDP, logging); a :class:`TrainingStep` owns the algorithm:
given the modules (trained and frozen) and a batch, it returns a per-sample loss and scalars
to log. Flow matching is one step among others (distillation from a frozen teacher,
MeanFlow's two-time objective, reward fine-tuning with rollouts).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from flowmatch.couplings.base import Coupling
from flowmatch.data.batch import Batch
from flowmatch.interfaces import Cond, Condition, CondSpec, Prediction, as_condition
from flowmatch.paths.affine import AffinePath
from flowmatch.registry import ComponentConfig, Registry
from flowmatch.sources import Source
from flowmatch.times.samplers import TimeSampler
from flowmatch.utils.options import option


@dataclass(frozen=True)
class LossOutput:
    """Per-sample loss ``(B,)`` and detached scalars to log (written to ``metrics.jsonl``)."""

    loss: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


class TrainingStep(ABC):
    """One training algorithm: ``step(modules, batch, generator) -> LossOutput``.

    Attributes:
        trains: names of the modules this step optimises (keys of ``modules``).
        uses: names of frozen modules it reads (a teacher, a reference policy, a critic).
        reads_ema: trained modules whose slowly averaged weights the step reads (a
            self-teacher): the trainer keeps one more average per name, with decay
            ``teacher_decay`` from step 0 (no warm-up; separate from the EMA the run samples
            with), checkpoints it, and passes it as ``modules[ema_key(name)]``.
        teacher_decay: the decay of those averages.
    """

    trains: tuple[str, ...] = ("model",)
    uses: tuple[str, ...] = ()
    reads_ema: tuple[str, ...] = ()
    teacher_decay: float = 0.999

    @property
    def prepares(self) -> bool:
        """Whether :meth:`prepare` does work worth running ahead of the step (in a thread)."""
        return False

    def prepare(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Host-side work on a batch that needs no gradients (e.g. minibatch OT pairing).

        Must be a pure function of ``(batch, generator)``: the trainer may run it steps ahead
        in a background thread with a generator derived from the step index.
        """
        return batch

    @abstractmethod
    def __call__(
        self, modules: Mapping[str, nn.Module], batch: Batch, generator: torch.Generator
    ) -> LossOutput:
        """Per-sample losses ``(B,)`` of ``batch``; all randomness from ``generator``."""

    def field(self, modules: Mapping[str, nn.Module]) -> Any:
        """The field a run trained by this step samples with, from its trained ``modules``.

        A ``VelocityField`` (a network predicting ``x1`` is wrapped so it returns a velocity)
        or a ``FlowMap`` for two-time methods; ``flowmatch.api.load_run`` uses it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not say which field its runs sample with; override field()"
        )


def ema_key(name: str) -> str:
    """The key under which a step that ``reads_ema`` finds module ``name``'s averaged weights."""
    return f"{name}.ema"


def teacher_ema_name(name: str) -> str:
    """The name (and checkpoint file stem) of module ``name``'s self-teacher average."""
    return f"{name}_teacher"


class ObjectiveStep(TrainingStep):
    """The step of a per-model objective ``objective(model, x1, *, x0, x0_paired, cond, generator)``.

    ``FlowMatchingObjective`` is such an objective. When its coupling does real work (e.g.
    minibatch OT), the pairing runs in :meth:`prepare` so the trainer can do it ahead. An
    objective with a ``compute`` method (the same loss without its input checks) is called
    through it: the trainer's data were checked once, when the data set was built.

    Args:
        objective: the objective (with ``pair(x1, *, labels, generator)`` when it couples).
        module: the name of the trained module passed as ``model``.
    """

    def __init__(self, objective: Callable[..., LossOutput], module: str = "model") -> None:
        if not callable(objective):
            raise TypeError(f"objective must be callable, got {type(objective).__name__}")
        self.objective = objective
        # The trainer checked its data once: call the objective's unchecked core when it has
        # one (FlowMatchingObjective.compute), so no step pays for input checks.
        compute = getattr(objective, "compute", None)
        self._call: Callable[..., LossOutput] = compute if callable(compute) else objective
        self.trains = (module,)
        coupling = getattr(objective, "coupling", None)
        self._pairs = bool(getattr(coupling, "pairs", False))
        if self._pairs and not callable(getattr(objective, "pair", None)):
            raise TypeError(
                f"objective {type(objective).__name__} has a coupling "
                f"({type(coupling).__name__}) but no pair(x1, *, labels, generator) method"
            )

    def __repr__(self) -> str:
        return f"ObjectiveStep({self.objective!r})"

    @property
    def prepares(self) -> bool:
        """True when the objective's coupling pairs (anything but the independent one)."""
        return self._pairs

    def field(self, modules: Mapping[str, nn.Module]) -> Any:
        """The trained network as a velocity field (converted when it predicts ``x1``/``x0``)."""
        model = modules[self.trains[0]]
        prediction: Any = getattr(self.objective, "prediction", "velocity")
        if prediction == "velocity":
            return model
        from flowmatch.models.adapters import PredictionAdapter

        path = self.objective.path  # type: ignore[attr-defined]  # objectives with a prediction
        return PredictionAdapter(model, path, prediction)

    def prepare(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Draw and couple the sources of ``batch`` (``batch.x0``)."""
        pair = self.objective.pair  # type: ignore[attr-defined]  # checked in __init__
        return replace(batch, x0=pair(batch.x1, labels=batch.labels, generator=generator))

    def __call__(
        self, modules: Mapping[str, nn.Module], batch: Batch, generator: torch.Generator
    ) -> LossOutput:
        """The objective on ``batch`` (its ``x0``, when present, is already paired)."""
        model = modules[self.trains[0]]
        if batch.x0 is None:
            return self._call(model, batch.x1, cond=batch.cond, generator=generator)
        return self._call(
            model, batch.x1, x0=batch.x0, x0_paired=True, cond=batch.cond, generator=generator
        )


def drop_condition(
    cond: Cond, p: float, null_label: int | None, generator: torch.Generator | None
) -> Cond:
    """Classifier-free-guidance dropout: replace each sample's condition by the null one w.p. ``p``.

    Labels become ``null_label``; values and context are marked in ``Condition.drop`` (the
    model then uses its learned null embedding). One Bernoulli draw per sample decides for all
    kinds at once (Ho & Salimans 2022).

    Args:
        cond: labels ``(B,)``, a ``Condition`` or ``None``.
        p: drop probability in ``[0, 1)``.
        null_label: the null label id (required when ``cond`` has labels and ``p > 0``).
        generator: randomness.

    Returns:
        The condition with dropped samples replaced.
    """
    if cond is None or p == 0.0:
        return cond
    c = as_condition(cond)
    assert c is not None and c.batch_size is not None  # a non-empty condition
    drop = torch.rand(c.batch_size, generator=generator, device=c.device) < p
    labels = c.labels
    if labels is not None:
        if null_label is None:
            raise ValueError("label dropout needs null_label (the id of the empty condition)")
        labels = torch.where(drop, null_label, labels)
    if isinstance(cond, Tensor):
        return labels
    drop = drop if c.drop is None else c.drop | drop
    return Condition(labels=labels, values=c.values, context=c.context, drop=drop)


# ---------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class TrainingParts:
    """What a run's components give an objective builder (composed at one call site).

    Attributes:
        path: the affine path.
        coupling: the coupling.
        time_sampler: the training-time sampler.
        source: the source distribution.
        prediction: what the network predicts.
        cond: the run's conditioning (empty when unconditional).
        frozen: frozen modules available to the step (e.g. ``{"teacher": net}``).
    """

    path: AffinePath
    coupling: Coupling
    time_sampler: TimeSampler
    source: Source
    prediction: Prediction
    cond: CondSpec
    frozen: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectiveConfig(ComponentConfig):
    """The ``[objective]`` section: ``kind`` names the training method."""

    cond_dropout: float = option(
        0.1, ge=0, lt=1, doc="probability of dropping the condition (classifier-free guidance)"
    )

    def extra_modules(
        self, model: nn.Module, sample_shape: tuple[int, ...], cond: CondSpec
    ) -> dict[str, nn.Module]:
        """Modules this method trains besides ``model`` (e.g. a projector), by name.

        Built right after the model, from the same seeded initialisation stream, by the
        application layer; the step names them in ``trains``. Default: none.
        """
        return {}

    def state_space(self, sample_shape: tuple[int, ...], cond: CondSpec) -> Any:
        """The space the flow lives in when this method defines one (a ``LatentSpace``).

        E.g. symmetrical flow matching's ``[image, label]`` state. ``None`` (default): the
        data's own space (or ``data.latent``). Stored with the run like ``data.latent``.
        """
        return None


#: Training methods by name; a builder gets the run's ``parts`` and returns a TrainingStep.
OBJECTIVES: Registry[TrainingStep, ObjectiveConfig] = Registry(
    "objective", ObjectiveConfig, default="flow_matching", context=("parts",)
)
