"""BOSS straightening: fine-tune a velocity model to follow its Bellman-optimal K-step grid.

Nguyen, Nguyen & Nguyen (2024), "Bellman Optimal Step-size Straightening of Flow-Matching
Models". Phase 1 (:func:`boss_grid`): the ``K``-step Euler grid of least one-step error along
the teacher's fine reference trajectories, by the sampling suite's BOSS
(:func:`flowmatch.sampling.boss.boss_grids`: one-step costs on a fine reference trajectory,
:func:`flowmatch.times.boss.bellman_indices` for the dynamic program). Phase 2
(:class:`BossStep`): from the same reference trajectories of the teacher, keep the states at
the Bellman nodes and regress the model at each node onto the chord to the next node,
``(x_{j+1} - x_j) / (tau_{j+1} - tau_j)``, so that ``K`` Euler steps on that grid follow the
teacher's trajectory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from flowmatch.data.batch import Batch
from flowmatch.fewstep.base import FewStepConfig, distance
from flowmatch.fewstep.store import ChunkStore, StoreBatches, TeacherBatch
from flowmatch.interfaces import PREDICTIONS, Cond, Prediction
from flowmatch.objectives.base import (
    OBJECTIVES,
    LossOutput,
    ObjectiveConfig,
    TrainingParts,
    TrainingStep,
)
from flowmatch.paths.affine import AffinePath
from flowmatch.sampling.boss import boss_grids
from flowmatch.solvers.integrate import solve
from flowmatch.solvers.ode import RK4, Euler
from flowmatch.times.grids import uniform_grid
from flowmatch.utils.checks import check_batch, check_in_choices, check_positive_int
from flowmatch.utils.options import option
from flowmatch.utils.tensor import expand_like, mix_seed


@dataclass(frozen=True)
class BossConfig(FewStepConfig):
    """Options of BOSS: the step budget, the reference trajectory and the fine-tuning data."""

    run_defaults: ClassVar[Mapping[str, Any]] = {"sample": {"solver": {"kind": "euler"}}}

    num_steps: int = option(4, ge=1, doc="K: Euler steps of the Bellman grid (the NFE)")
    fine_steps: int = option(
        100, ge=2, doc="intervals of the fine (RK4) reference trajectory and of the grid search"
    )
    grid_samples: int = option(512, ge=1, doc="trajectories averaged in the step costs")
    num_trajectories: int = option(10_000, ge=1, doc="teacher trajectories for fine-tuning")
    chunk: int = option(2048, ge=1, doc="trajectories per file")
    teacher_guidance: float = option(1.0, doc="CFG scale of the teacher's trajectories")


def boss_grid(
    field: Any, x0: Tensor, num_steps: int, *, fine_steps: int = 100, cond: Cond = None
) -> Tensor:
    """The BOSS grid ``(K+1,)`` (float64) of Euler on ``field`` from source samples ``x0``.

    :func:`flowmatch.sampling.boss.boss_grids` with Euler jumps on its default (RK4)
    reference trajectory of ``fine_steps`` uniform intervals: the ``num_steps``-step sub-grid
    of least summed one-step error (BOSS; Kmax = 100 and N = 100-512 in the authors' code).
    """
    check_positive_int(num_steps, "num_steps")
    grids = boss_grids(field, x0, Euler(), [num_steps], fine_steps=fine_steps, cond=cond)
    return grids[num_steps][0]


def reference_trajectory(field: Any, x0: Tensor, fine_steps: int, cond: Cond = None) -> Tensor:
    """The fine reference trajectory ``(M+1, N, *D)`` the BOSS costs are measured on.

    RK4 on the uniform grid of ``fine_steps`` intervals, as
    :func:`flowmatch.sampling.boss.step_costs` integrates it (same states, bit for bit).
    """
    check_batch(x0, "x0")
    check_positive_int(fine_steps, "fine_steps")
    fine = uniform_grid(fine_steps, dtype=torch.float64).to(x0.dtype)
    with torch.no_grad():
        states = solve(field, x0, fine, RK4(), cond=cond, save_trajectory=True).trajectory
    assert states is not None  # save_trajectory=True
    return states


def node_states(field: Any, x0: Tensor, grid: Tensor, fine_steps: int, cond: Cond = None) -> Tensor:
    """States ``(N, K+1, *D)`` of the fine reference trajectories at the grid's nodes.

    Raises:
        ValueError: a grid time is not a node of the fine uniform grid.
    """
    states = reference_trajectory(field, x0, fine_steps, cond)
    idx = torch.round(grid.double() * fine_steps).long()
    if not torch.allclose(idx.double() / fine_steps, grid.double(), atol=1e-6):
        raise ValueError(f"grid {grid.tolist()} is not on the {fine_steps}-step fine grid")
    return states[idx.to(states.device)].transpose(0, 1)


def make_node_store(
    store: ChunkStore,
    field: Any,
    grid: Tensor,
    fine_steps: int,
    noise: Callable[[int, int], Tensor],
    *,
    labels: Callable[[int, int], Tensor | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Fill ``store`` with the teacher's node states ``"nodes"`` ``(count, K+1, *D)`` per chunk."""

    def make(k: int, start: int, count: int) -> dict[str, Tensor]:
        x0 = noise(k, count)
        y = labels(start, count) if labels is not None else None
        out = {"nodes": node_states(field, x0, grid, fine_steps, y)}
        if y is not None:
            out["labels"] = y
        return out

    return store.fill(make, progress=progress)


class SegmentBatches:
    """A ``BatchSource`` of random Bellman segments ``(x_j, x_{j+1}, tau_j, tau_{j+1})``.

    Item ``i`` and segment ``j`` are drawn uniformly from a generator seeded by the step, so
    ``batch_at`` is pure. ``x0`` holds the segment's start state and ``x1`` its end state;
    ``extra["t0"]``/``extra["t1"]`` its times.
    """

    def __init__(
        self,
        store: ChunkStore,
        grid: Tensor,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        fields = {"x1": "nodes"}
        if "labels" in store.manifest["chunks"].get("0", {}):
            fields["labels"] = "labels"
        self.rows = StoreBatches(store, batch_size, fields=fields, seed=seed, rank=rank)
        self.grid = grid.double().cpu()
        self.num_steps = len(grid) - 1
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        self.device = torch.device(device)

    def batch_at(self, step: int) -> TeacherBatch:
        """The segments of step ``step``."""
        check_positive_int(step, "step", minimum=0)
        g = torch.Generator().manual_seed(mix_seed(self.seed, 0xB055, self.rank, step))
        idx = torch.randint(self.rows.num, (self.batch_size,), generator=g)
        j = torch.randint(self.num_steps, (self.batch_size,), generator=g)
        nodes = self.rows.rows("x1", idx)  # (B, K+1, *D)
        ar = torch.arange(self.batch_size)
        x0, x1 = nodes[ar, j], nodes[ar, j + 1]
        labels = self.rows.rows("labels", idx).long() if "labels" in self.rows.fields else None
        t0, t1 = self.grid[j].to(x0.dtype), self.grid[j + 1].to(x0.dtype)
        dev = self.device
        return TeacherBatch(
            x1.to(dev),
            None if labels is None else labels.to(dev),
            x0.to(dev),
            extra={"t0": t0.to(dev), "t1": t1.to(dev)},
            step=step,
        )


def _build_boss(config: ObjectiveConfig, *, parts: TrainingParts) -> BossStep:
    assert isinstance(config, BossConfig)  # guaranteed by Registry.build
    return BossStep(
        parts.path, prediction=parts.prediction, loss=config.loss, huber_c=config.huber_c
    )


@OBJECTIVES.register("boss", config=BossConfig, build=_build_boss)
class BossStep(TrainingStep):
    """BOSS straightening: ``|| v(x_j, tau_j) - (x_{j+1} - x_j) / (tau_{j+1} - tau_j) ||^2``.

    The batch holds Bellman segments of the teacher's trajectories (``x0`` = start state,
    ``x1`` = end state, ``extra["t0"]``, ``extra["t1"]`` their times; see
    :class:`SegmentBatches`). The network is compared as a velocity (an ``x1``/``x0``
    prediction is converted through the path). Its run samples with Euler on the BOSS grid.

    Raises:
        ValueError: a batch without segment times (make it with ``flowmatch distill TEACHER
            --method boss``).
    """

    name: ClassVar[str]

    def __init__(
        self,
        path: AffinePath | None = None,
        *,
        prediction: Prediction = "velocity",
        loss: str = "mse",
        huber_c: float = 1e-3,
    ) -> None:
        self.path = path if path is not None else AffinePath()
        check_in_choices(prediction, [p for p in PREDICTIONS if p != "score"], "prediction")
        self.prediction: Prediction = prediction
        distance(torch.zeros(1, 1), loss, huber_c)  # validates the loss name
        self.loss, self.huber_c = loss, float(huber_c)

    def field(self, modules: Mapping[str, nn.Module]) -> Any:
        """The fine-tuned network as a velocity field."""
        model = modules[self.trains[0]]
        if self.prediction == "velocity":
            return model
        from flowmatch.models.adapters import PredictionAdapter

        return PredictionAdapter(model, self.path, self.prediction)

    def __call__(
        self, modules: Mapping[str, nn.Module], batch: Batch, generator: torch.Generator
    ) -> LossOutput:
        """Per-sample chord regression loss ``(B,)``."""
        extra = batch.extra if isinstance(batch, TeacherBatch) else {}
        if batch.x0 is None or "t0" not in extra or "t1" not in extra:
            raise ValueError(
                "boss trains on Bellman segments of a teacher (x0, x1, t0, t1): make them with "
                "`flowmatch distill TEACHER_RUN --method boss`"
            )
        t0, t1 = extra["t0"], extra["t1"]
        chord = (batch.x1 - batch.x0) / expand_like(t1 - t0, batch.x0)
        v = self.field(modules)(batch.x0, t0, batch.cond)
        return LossOutput(loss=distance(v - chord, self.loss, self.huber_c))
