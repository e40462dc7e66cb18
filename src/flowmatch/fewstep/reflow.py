"""Reflow / k-rectified flow and Rectified Diffusion: retrain on a teacher's (noise, sample) pairs.

Liu, Gong & Liu (2023), "Flow Straight and Fast" (reflow and its distillation): the teacher's ODE gives a
deterministic coupling ``(z0, z1 = ODE(z0))``; flow matching on that coupling (initialised from
the teacher) straightens the flow, so few Euler steps suffice; training only at ``t = 0``
distils one step (``z0 + v(z0, 0) = z1``). Wang et al. (2024), "Rectified Diffusion": what
matters is the pairing, not the path — the same training on the teacher's own (any affine)
path and prediction works, so the student here takes the run's path and prediction. The
pseudo-Huber distance is the option of both papers' code.

:func:`make_pairs` writes the pairs to a :class:`~flowmatch.fewstep.store.ChunkStore` chunk
by chunk (resumable, never all in memory); :class:`ReflowStep` trains on them (the batch's
``x0`` are the paired noises).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from flowmatch.data.batch import Batch
from flowmatch.fewstep.base import FewStepConfig, distance
from flowmatch.fewstep.store import ChunkStore
from flowmatch.interfaces import PREDICTIONS, Prediction
from flowmatch.objectives.base import (
    OBJECTIVES,
    LossOutput,
    ObjectiveConfig,
    TrainingParts,
    TrainingStep,
    drop_condition,
)
from flowmatch.paths.affine import AffinePath
from flowmatch.solvers.base import Sampler
from flowmatch.solvers.integrate import solve
from flowmatch.times.samplers import TimeSampler, UniformTime
from flowmatch.utils.checks import check_batch, check_in_choices, check_positive_int
from flowmatch.utils.options import option


@dataclass(frozen=True)
class ReflowConfig(FewStepConfig):
    """Options of reflow: the training objective and how the teacher pairs are made."""

    run_defaults: ClassVar[Mapping[str, Any]] = {
        "sample": {"solver": {"kind": "euler", "nfe": 1}},
        "eval": {"nfe": [1, 2, 4], "solvers": ["euler"]},
    }

    one_step: bool = option(False, doc="distil one step: train only at t = 0 (then Euler NFE 1)")
    num_pairs: int = option(50_000, ge=1, doc="teacher pairs generated (distill)")
    pair_solver: str = option("dopri5", doc="sampler of the teacher ODE for the pairs")
    pair_nfe: int = option(100, ge=1, doc="NFE of a fixed-step pair_solver")
    chunk: int = option(4096, ge=1, doc="pairs per file (and per teacher batch)")
    teacher_guidance: float = option(1.0, doc="CFG scale of the teacher when making pairs")


def make_pairs(
    store: ChunkStore,
    field: Any,
    sampler: Sampler,
    grid: Tensor,
    noise: Callable[[int, int], Tensor],
    *,
    labels: Callable[[int, int], Tensor | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Fill ``store`` with teacher pairs ``x0`` (noise) and ``x1 = ODE(x0)`` (and ``labels``).

    Args:
        store: the chunk store (chunks already written are kept: resumable).
        field: the teacher's velocity field (guided if wanted).
        sampler: any sampler (an accurate one: pair error becomes coupling bias).
        grid: its time grid from 0 to 1.
        noise: ``noise(k, count)``: the source samples of chunk ``k`` (a pure function of ``k``).
        labels: ``labels(start, count)``: the classes of items ``[start, start + count)`` for a
            conditional teacher, or ``None``.
        progress: called with ``(chunks done, chunks)``.

    Returns:
        The number of chunks made now.
    """

    def make(k: int, start: int, count: int) -> dict[str, Tensor]:
        x0 = noise(k, count)
        if x0.shape[0] != count:
            raise ValueError(f"noise(k, count) must return {count} samples, got {x0.shape[0]}")
        y = labels(start, count) if labels is not None else None
        with torch.no_grad():
            x1 = solve(field, x0, grid, sampler, cond=None if y is None else y.to(x0.device)).x
        out = {"x0": x0, "x1": x1}
        if y is not None:
            out["labels"] = y
        return out

    return store.fill(make, progress=progress)


def _build_reflow(config: ObjectiveConfig, *, parts: TrainingParts) -> ReflowStep:
    assert isinstance(config, ReflowConfig)  # guaranteed by Registry.build
    dropout = config.cond_dropout if parts.cond.conditional else 0.0
    return ReflowStep(
        parts.path,
        parts.time_sampler,
        prediction=parts.prediction,
        one_step=config.one_step,
        loss=config.loss,
        huber_c=config.huber_c,
        cond_dropout=dropout,
        null_label=parts.cond.num_classes,
    )


@OBJECTIVES.register("reflow", config=ReflowConfig, build=_build_reflow)
class ReflowStep(TrainingStep):
    """Flow matching on paired ``(x0, x1)`` (``batch.x0`` required): ``d(f(x_t, t), y)``.

    ``x_t = alpha_t x1 + sigma_t x0`` on any affine path, ``y`` the target of the network's
    prediction (the velocity ``d_alpha x1 + d_sigma x0``, ``x1`` or ``x0``), ``d`` the squared
    error or pseudo-Huber distance; ``t ~ time_sampler``, or ``t = 0`` with ``one_step``
    (one-step distillation, Liu et al. 2023). The run samples the trained network as
    a velocity field (an ``x1``/``x0``-prediction converted through the path).

    Raises:
        ValueError: the batch has no paired ``x0`` (make pairs with ``flowmatch distill
            TEACHER --method reflow``).
    """

    name: ClassVar[str]

    def __init__(
        self,
        path: AffinePath | None = None,
        time_sampler: TimeSampler | None = None,
        *,
        prediction: Prediction = "velocity",
        one_step: bool = False,
        loss: str = "mse",
        huber_c: float = 1e-3,
        cond_dropout: float = 0.0,
        null_label: int | None = None,
    ) -> None:
        self.path = path if path is not None else AffinePath()
        self.time_sampler = time_sampler if time_sampler is not None else UniformTime()
        check_in_choices(prediction, [p for p in PREDICTIONS if p != "score"], "prediction")
        self.prediction: Prediction = prediction
        self.one_step = bool(one_step)
        distance(torch.zeros(1, 1), loss, huber_c)  # validates the loss name
        self.loss, self.huber_c = loss, float(huber_c)
        self.cond_dropout, self.null_label = float(cond_dropout), null_label

    def __repr__(self) -> str:
        return (
            f"ReflowStep({self.path!r}, prediction={self.prediction!r}, one_step={self.one_step}, "
            f"loss={self.loss!r})"
        )

    def field(self, modules: Mapping[str, nn.Module]) -> Any:
        """The trained network as a velocity field (converted when it predicts ``x1``/``x0``)."""
        model = modules[self.trains[0]]
        if self.prediction == "velocity":
            return model
        from flowmatch.models.adapters import PredictionAdapter

        return PredictionAdapter(model, self.path, self.prediction)

    def __call__(
        self, modules: Mapping[str, nn.Module], batch: Batch, generator: torch.Generator
    ) -> LossOutput:
        """Per-sample loss ``(B,)`` on the paired batch."""
        x1 = check_batch(batch.x1, "x1")
        if batch.x0 is None:
            raise ValueError(
                "reflow trains on teacher pairs (batch.x0 paired with x1): make them with "
                "`flowmatch distill TEACHER_RUN --method reflow` (or flowmatch.api.distill)"
            )
        n = check_positive_int(x1.shape[0], "batch size")
        if self.one_step:
            t = x1.new_zeros(n)
        else:
            t = self.time_sampler.sample_t(n, generator, device=x1.device, dtype=x1.dtype)
        cond = drop_condition(batch.cond, self.cond_dropout, self.null_label, generator)
        sample = self.path.sample(batch.x0, x1, t)
        out = modules[self.trains[0]](sample.xt, t, cond)
        target = self.path.target(sample, self.prediction)
        return LossOutput(loss=distance(out - target, self.loss, self.huber_c))
