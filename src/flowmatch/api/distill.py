"""Distil a trained teacher run into a few-step student run: reflow, flow maps, FreeFlow, sCM, BOSS.

``distill(teacher_dir, method, out_dir)`` loads the teacher (its EMA weights when it kept them),
derives the student's configuration from the teacher's (same data, network and training
budget unless overridden), makes what the method trains on (teacher pairs or trajectories on
disk, resumable; the teacher's data; or prior samples only), trains the student with the
generic :class:`~flowmatch.train.Trainer` (the teacher as a frozen module) and writes an
ordinary run directory: ``load_run``, ``generate``, ``flowmatch sample`` and ``flowmatch eval``
work on it unchanged. ``config.json`` records the teacher (run path, checkpoint, step, which
weights and their sha256); a resumed distillation refuses a changed teacher.

Methods (``--method``) and the objective each trains by default (``--set objective.kind=...``
picks another of the same family, e.g. ``meanflow`` or ``splitmeanflow`` for ``flowmap``):

========  =============  ===================================================================
method    objective      trains on
========  =============  ===================================================================
reflow    reflow         teacher pairs (noise, ODE sample) on disk; student = teacher's net
flowmap   flowmap_lsd    the teacher's training data, teacher velocities; two-time student
freeflow  freeflow       prior samples only; two-time student + a fake velocity net
scm       scm            the teacher's training data (TrigFlow); student = teacher's net
boss      boss           teacher trajectories at the Bellman-optimal grid nodes
========  =============  ===================================================================
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flowmatch.api.config import (
    fill_missing,
    load_data,
    load_run_data,
    objective_run_defaults,
    read_run_info,
    resume_config,
)
from flowmatch.api.run import Run, data_info, load_run
from flowmatch.api.sample import field_kind, guided_field
from flowmatch.api.train import (
    check_config_run_id,
    clear_run,
    prepare_dataset,
    refuse_existing_run,
    remove_stale_temporaries,
    write_snapshot,
)
from flowmatch.config.build import build_model, build_modules, build_parts, build_step, cond_spec
from flowmatch.config.schema import (
    ConfigError,
    RunConfig,
    from_dict,
    merge,
    overrides_dict,
    to_dict,
)
from flowmatch.data.batch import ArrayDataset, Batch, BatchSchedule
from flowmatch.fewstep.boss import SegmentBatches, boss_grid, make_node_store
from flowmatch.fewstep.reflow import make_pairs
from flowmatch.fewstep.store import ChunkStore, StoreBatches, WithStep, wait_for_store
from flowmatch.solvers.base import SAMPLERS, FixedStepConfig
from flowmatch.times.grids import GRIDS, make_grid
from flowmatch.train.checkpoint import discard_dir, module_file
from flowmatch.train.distributed import process_rank
from flowmatch.train.lock import RunLock, check_unlocked
from flowmatch.utils.io import atomic_write_text
from flowmatch.utils.options import OptionError
from flowmatch.utils.tensor import mix_seed, step_generator

logger = logging.getLogger(__name__)

#: Distillation methods and the objective each trains by default.
METHODS: dict[str, str] = {
    "reflow": "reflow",
    "flowmap": "flowmap_lsd",
    "freeflow": "freeflow",
    "scm": "scm",
    "boss": "boss",
}
#: Objectives each method accepts (``--set objective.kind=...``).
FAMILIES: dict[str, tuple[str, ...]] = {
    "reflow": ("reflow",),
    "flowmap": ("flowmap_lsd", "flowmap_esd", "flowmap_psd", "meanflow", "splitmeanflow"),
    "freeflow": ("freeflow",),
    "scm": ("scm",),
    "boss": ("boss",),
}
_PAIR_STREAM, _GRID_STREAM, _PRIOR_STREAM = 0x9A1, 0xB05, 0xF4EE
#: Methods that make their own inputs from noise (and label them), not from the teacher's data.
_DRAWS_CONDITIONS = ("reflow", "boss", "freeflow")


class TeacherField(nn.Module):
    """A frozen teacher run as a velocity field module (optionally classifier-free guided).

    Holds the teacher's network as a submodule (so the trainer moves, freezes and fingerprints
    its weights) and calls the run's field (a non-velocity prediction converted through the
    teacher's path, guidance applied).
    """

    def __init__(self, run: Run, guidance: float = 1.0) -> None:
        super().__init__()
        if field_kind(run.field) != "velocity":
            raise ValueError(
                "the teacher must be a velocity-field run (flow matching, reflow, ...), got a "
                f"{field_kind(run.field)} run"
            )
        self.net = run.model
        self._field = guided_field(run, guidance)
        self.guidance = guidance

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """The teacher's (guided) velocity ``(B, *D)``."""
        return self._field(x, t, cond)


@dataclass(frozen=True)
class Teacher:
    """A loaded teacher run and what the student's ``config.json`` records about it."""

    run: Run
    record: dict[str, Any]


def load_teacher(teacher_dir: str | Path, *, device: str = "cpu") -> Teacher:
    """Load a teacher run (its sample-time weights) and describe it (path, checkpoint, sha256).

    Raises:
        FileNotFoundError: no run or no checkpoint at ``teacher_dir``.
    """
    run = load_run(teacher_dir, device=device)
    assert run.checkpoint is not None  # loaded from disk
    ema = run.config.sample.use_ema and (run.checkpoint / module_file("model", ema=True)).is_file()
    weights = run.checkpoint / module_file("model", ema=ema)
    record = {
        "run": str(Path(teacher_dir).resolve()),
        "checkpoint": run.checkpoint.name,
        "step": run.step,
        "weights": "ema" if ema else "raw",
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "objective": run.config.objective.kind,
    }
    return Teacher(run, record)


def student_config(teacher_cfg: RunConfig, method: str, overrides: Sequence[str] = ()) -> RunConfig:
    """The student's configuration: the teacher's, the method's objective and its run defaults.

    Precedence (lowest first): the teacher's config, the method's objective
    (:data:`METHODS`), the objective's ``run_defaults`` (e.g. a two-time model and the
    flow-map sampler), then ``overrides`` (``"section.key=value"``).

    Raises:
        ConfigError: an unknown method, an objective outside the method's family, or a bad key.
    """
    if method not in METHODS:
        raise ConfigError("--method", f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    user = overrides_dict(list(overrides))
    raw = merge(to_dict(teacher_cfg), {"objective": {"kind": METHODS[method]}})
    kind = merge(raw, user)["objective"]
    kind = kind if isinstance(kind, str) else kind.get("kind")
    if kind not in FAMILIES[method]:
        raise ConfigError(
            "objective.kind",
            f"{kind!r} is not a {method} objective; choose one of {list(FAMILIES[method])}",
        )
    raw = merge(raw, {"objective": {"kind": kind}})
    # The objective's needs replace the teacher's settings of those keys, unless the user
    # sets them: fill the user's table with them, then lay it over the teacher's.
    needs = objective_run_defaults({"objective": kind})
    # The student keeps the teacher's time embedding: its weights are the starting point.
    needs.get("model", {}).pop("time_scale", None)
    return from_dict(RunConfig, merge(raw, fill_missing(user, needs)))


def _rank_world() -> tuple[int, int]:
    return process_rank(), int(os.environ.get("WORLD_SIZE", "1"))


def _noise_fn(teacher: Run, seed: int, stream: int) -> Callable[[int, int], Tensor]:
    def noise(k: int, count: int) -> Tensor:
        g = step_generator(seed, stream, k)
        return teacher.source.sample((count, *teacher.sample_shape), g).to(teacher.device)

    return noise


def _labels_fn(teacher: Run) -> Callable[[int, int], Tensor | None] | None:
    classes = teacher.num_classes
    if classes is None:
        return None
    return lambda start, count: (torch.arange(start, start + count) % classes).long()


def _teacher_sampler(cfg: Any) -> tuple[Any, Tensor, dict[str, Any]]:
    """The pair sampler and grid of a reflow config (a fixed sampler at ``pair_nfe``)."""
    entry = SAMPLERS.entry(cfg.pair_solver)
    if SAMPLERS[cfg.pair_solver].field_kind != "velocity":
        raise OptionError("objective.pair_solver", f"{cfg.pair_solver!r} is not a velocity sampler")
    fixed = issubclass(entry.config, FixedStepConfig)
    config = SAMPLERS.config(cfg.pair_solver, **({"nfe": cfg.pair_nfe} if fixed else {}))
    steps = config.num_steps()
    return SAMPLERS.build(config), make_grid("uniform", steps), config.to_dict()


class _PriorBatches:
    """Data-free batches: ``x1`` is a zero placeholder giving the shape (FreeFlow draws noise)."""

    def __init__(self, shape: tuple[int, ...], batch: int, classes: int | None, seed: int, device):  # type: ignore[no-untyped-def]
        self.shape, self.batch, self.classes, self.seed = shape, batch, classes, seed
        self.device = torch.device(device)
        self.rank, _ = _rank_world()

    def batch_at(self, step: int) -> Batch:
        x = torch.zeros((self.batch, *self.shape), device=self.device)
        labels = None
        if self.classes is not None:
            g = torch.Generator().manual_seed(mix_seed(self.seed, _PRIOR_STREAM, self.rank, step))
            labels = torch.randint(self.classes, (self.batch,), generator=g).to(self.device)
        return Batch(x1=x, labels=labels)


def _init_from_teacher(student: nn.Module, teacher: nn.Module) -> list[str]:
    """Load the teacher's weights into the student (missing keys allowed: a two-time student)."""
    result = student.load_state_dict(teacher.state_dict(), strict=False)
    if result.unexpected_keys:
        raise ValueError(
            f"the student's network does not fit the teacher's weights (unexpected keys "
            f"{result.unexpected_keys[:3]}); distil into the teacher's architecture "
            "(only model.time_inputs may differ)"
        )
    bad = [k for k in result.missing_keys if not k.startswith("interval_embed.")]
    if bad:
        raise ValueError(f"the student lacks the teacher's weights {bad[:3]}")
    return list(result.missing_keys)


def _batches(ds: ArrayDataset, cfg: RunConfig) -> BatchSchedule:
    rank, world = _rank_world()
    data = ds.to(cfg.train.device)
    return BatchSchedule(
        data, cfg.train.batch_size, seed=cfg.train.seed, rank=rank, world_size=world
    )


Prepared = tuple[RunConfig, Any, dict[str, nn.Module]]


def _open_store(root: Path, *, replace_other: bool, **settings: Any) -> ChunkStore:
    """The teacher-sample store at ``root``; ``replace_other``: one of other settings is deleted.

    Without ``replace_other`` a store made with other settings is an error (``ChunkStore``).
    """
    try:
        return ChunkStore(root, **settings)
    except ValueError:
        if not replace_other or not root.is_dir():
            raise
        logger.info("--overwrite: removing %s (made with other settings)", root)
        discard_dir(root)
        return ChunkStore(root, **settings)


def _prepare_reflow(
    cfg: RunConfig, teacher: Teacher, out: Path, log: Any, overwrite: bool
) -> Prepared:
    """Teacher pairs on disk (made once, resumable) and batches of them."""
    run, obj = teacher.run, _objective(cfg)
    sampler, grid, solver = _teacher_sampler(obj)
    meta = {"teacher": teacher.record["sha256"], "solver": solver, "guidance": obj.teacher_guidance}
    settings = {"num": obj.num_pairs, "chunk": obj.chunk, "meta": meta}
    rank, _ = _rank_world()
    if rank == 0:
        store = _open_store(out / "pairs", replace_other=overwrite, **settings)
        if not store.complete:
            log(f"making {obj.num_pairs} teacher pairs with {solver['kind']} in {out / 'pairs'}")
            field = TeacherField(run, obj.teacher_guidance)
            noise = _noise_fn(run, 0, _PAIR_STREAM)
            make_pairs(store, field, sampler, grid, noise, labels=_labels_fn(run))
    else:  # rank 0 makes the pairs; the others read them once they are complete
        store = wait_for_store(out / "pairs", log=log, **settings)
    fields = {"x0": "x0", "x1": "x1", **({"labels": "labels"} if run.num_classes else {})}
    tc = cfg.train
    source = StoreBatches(
        store, tc.batch_size, fields=fields, seed=tc.seed, rank=rank, device=tc.device
    )
    return cfg, source, {}


def _prepare_boss(
    cfg: RunConfig, teacher: Teacher, out: Path, log: Any, overwrite: bool
) -> Prepared:
    """The BOSS grid, the teacher's trajectories at its nodes, batches of their segments."""
    run, obj = teacher.run, _objective(cfg)
    field = TeacherField(run, obj.teacher_guidance)
    labels = _labels_fn(run)
    x0 = _noise_fn(run, 0, _GRID_STREAM)(0, obj.grid_samples)
    y = None if labels is None else labels(0, obj.grid_samples)
    grid = boss_grid(field, x0, obj.num_steps, fine_steps=obj.fine_steps, cond=y)
    log(f"BOSS grid ({obj.num_steps} steps): {[round(v, 4) for v in grid.tolist()]}")
    k = obj.num_steps
    grid_cfg = GRIDS.config("values", values=tuple(grid.tolist()))
    sample = replace(cfg.sample, solver=SAMPLERS.config("euler", nfe=k), grid=grid_cfg)
    cfg = replace(cfg, sample=sample, eval=replace(cfg.eval, nfe=(k,), solvers=("euler",)))
    meta = {
        "teacher": teacher.record["sha256"],
        "grid": grid.tolist(),
        "fine": obj.fine_steps,
        "reference": "rk4",  # the sampling suite's BOSS reference trajectory
    }
    settings = {"num": obj.num_trajectories, "chunk": obj.chunk, "meta": meta}
    rank, _ = _rank_world()
    if rank == 0:
        store = _open_store(out / "trajectories", replace_other=overwrite, **settings)
        if not store.complete:
            log(f"making {obj.num_trajectories} teacher trajectories in {out / 'trajectories'}")
            noise = _noise_fn(run, 0, _PAIR_STREAM)
            make_node_store(store, field, grid, obj.fine_steps, noise, labels=labels)
    else:  # as for reflow's pairs
        store = wait_for_store(out / "trajectories", log=log, **settings)
    tc = cfg.train
    source = SegmentBatches(store, grid, tc.batch_size, seed=tc.seed, rank=rank, device=tc.device)
    return cfg, source, {}


def _prepare_freeflow(cfg: RunConfig, teacher: Teacher, train_ds: ArrayDataset) -> Prepared:
    """Prior-only batches and the fake velocity net (initialised from the teacher)."""
    run, obj, tc = teacher.run, _objective(cfg), cfg.train
    shape = tuple(train_ds.sample_shape)
    source = _PriorBatches(shape, tc.batch_size, run.num_classes, tc.seed, tc.device)
    extra: dict[str, nn.Module] = {}
    if obj.corrector_weight > 0:
        fake = build_model(run.config.model, shape, run.cond)
        fake.load_state_dict(run.model.state_dict())
        extra["fake"] = fake
    return cfg, source, extra


def _objective(cfg: RunConfig) -> Any:
    return cfg.objective  # typed loosely: each method reads its own objective's options


def _prepare(
    method: str,
    cfg: RunConfig,
    teacher: Teacher,
    out: Path,
    train_ds: ArrayDataset,
    log: Any,
    overwrite: bool = False,
) -> Prepared:
    """What the method trains on, its config after preparation (BOSS's grid), extra modules."""
    if method == "reflow":
        return _prepare_reflow(cfg, teacher, out, log, overwrite)
    if method == "boss":
        return _prepare_boss(cfg, teacher, out, log, overwrite)
    if method == "freeflow":
        return _prepare_freeflow(cfg, teacher, train_ds)
    if method == "scm":  # the warm-up reads the step index off the batch
        return cfg, WithStep(_batches(train_ds, cfg)), {}
    return cfg, _batches(train_ds, cfg), {}  # flowmap: the teacher's data


def distill(
    teacher_dir: str | Path,
    method: str,
    out_dir: str | Path,
    *,
    overrides: Sequence[str] = (),
    steps: int | None = None,
    callbacks: Sequence[Any] = (),
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = logger.info,
) -> Any:
    """Distil the teacher run at ``teacher_dir`` into a student run at ``out_dir``.

    The student's directory is guarded as :func:`~flowmatch.api.train.train_run` guards a
    run's: one writer (its lock), an existing run refused unless ``resume`` or ``overwrite``,
    on resume the stored run id, checkpoints and data fingerprint checked before anything is
    written, and a run id in ``config.json`` and every checkpoint.

    Args:
        teacher_dir: a trained velocity-field run (``flowmatch train``).
        method: one of :data:`METHODS`.
        out_dir: the student's run directory.
        overrides: ``"section.key=value"`` settings of the student (e.g.
            ``"objective.one_step=true"``, ``"train.steps=2000"``).
        steps: total training steps (overrides ``train.steps``).
        callbacks: trainer callbacks (the CLI's progress bar).
        resume: continue an interrupted distillation in ``out_dir`` (same teacher required);
            teacher pairs/trajectories already on disk are always reused.
        overwrite: replace the student run already in ``out_dir`` (its run files; teacher
            pairs/trajectories made with the same settings are kept and reused).
        log: where progress messages go.

    Returns:
        The trainer's ``TrainResult`` (``wall_time == 0`` when a resumed run had nothing to do).

    Raises:
        ConfigError: a bad method, objective or key.
        ValueError: ``out_dir`` already holds a run and neither ``resume`` nor ``overwrite``
            is given (or both are), a teacher that does not fit the method, a changed teacher
            or changed data on resume.
        RunLockedError: another process is writing ``out_dir``.
    """
    from flowmatch.train import Trainer, TrainResult

    if resume and overwrite:
        raise ValueError(
            "resume=True continues the run in out_dir and overwrite=True replaces it: pass one"
        )
    out = Path(out_dir)
    rank0 = process_rank() == 0
    if rank0:
        if out.exists() and not out.is_dir():
            raise ValueError(f"run directory {str(out)!r} exists and is not a directory")
        check_unlocked(out)
    teacher = load_teacher(teacher_dir)
    info: dict[str, Any] = {}
    if resume:
        info = read_run_info(out)
        check_config_run_id(info, out)
        stored = info.get("teacher", {})
        if stored.get("sha256") != teacher.record["sha256"]:
            raise ValueError(
                f"{out} was distilled from a teacher with weights sha256 "
                f"{stored.get('sha256')}, but {teacher_dir} now has {teacher.record['sha256']}"
            )
        cfg, _ = resume_config(out, steps=steps)
        train_ds, test_ds = load_run_data(cfg, info, out)
    else:
        if rank0 and not overwrite:
            refuse_existing_run(out, resume_flag="--resume")
        ov = list(overrides) + ([f"train.steps={steps}"] if steps is not None else [])
        cfg = student_config(teacher.run.config, method, ov)
        train_ds, test_ds = load_data(cfg.data)
        given = teacher.run.info["data"].get("given")
        if given is not None:  # the teacher's data path as its user typed it
            for ds in (train_ds, test_ds):
                ds.meta["given"] = given
    other = [k for k in teacher.run.cond.kinds if k != "labels"]
    if other and method in _DRAWS_CONDITIONS:
        raise ValueError(
            f"--method {method} draws the teacher's conditions itself, labels only, but "
            f"{teacher_dir} is conditioned on {other}: distil it with --method flowmap or scm "
            "(they train on the teacher's data and its conditions)"
        )
    if method == "scm" and teacher.run.config.path.kind != "linear":
        raise ValueError(
            f"scm needs a linear-path teacher (the exact TrigFlow adapter), got path "
            f"{teacher.run.config.path.kind!r}"
        )
    train_ds = prepare_dataset(cfg, train_ds)
    cond = cond_spec(cfg.model, train_ds)
    with RunLock(out, enabled=rank0):
        if rank0:
            remove_stale_temporaries(out)
            if overwrite:
                clear_run(out)
            elif not resume:
                refuse_existing_run(out, resume_flag="--resume")  # again, under the lock
        cfg, source, extra = _prepare(method, cfg, teacher, out, train_ds, log, overwrite)
        modules = build_modules(cfg, train_ds.sample_shape, cond)
        step = build_step(build_parts(cfg, train_ds.sample_shape, cond), cfg)
        if not resume and cfg.objective.init_from_teacher:  # type: ignore[attr-defined]
            _init_from_teacher(modules["model"], teacher.run.model)
        modules = {**modules, **{k: v for k, v in extra.items() if k in step.trains}}
        guidance = getattr(cfg.objective, "teacher_guidance", 1.0)
        # Two-time objectives read a teacher when there is one (its velocity replaces the
        # conditional one), without declaring it: pass it to every method that distils velocities.
        reads = method in ("flowmap", "freeflow", "scm") or "teacher" in step.uses
        frozen = {"teacher": TeacherField(teacher.run, guidance)} if reads else {}
        kwargs: dict[str, Any] = {"frozen": frozen, "callbacks": callbacks}
        if resume:
            trainer = Trainer.resume(
                out,
                modules,
                step,
                source,
                cfg.train,
                run_id=info.get("run_id"),
                restart_if_empty=True,
                **kwargs,
            )
        else:
            trainer = Trainer(modules, step, source, cfg.train, out_dir=out, **kwargs)
        data = data_info(train_ds)
        if "given" in info.get("data", {}):  # the data path as first typed survives a resume
            data.setdefault("given", info["data"]["given"])
        run_config = {
            "run_id": trainer.run_id,
            "config": to_dict(cfg),
            "data": data,
            "teacher": teacher.record,
        }
        trainer.run_config = run_config
        if resume and trainer.step >= cfg.train.steps:
            log(f"{out} is already at step {trainer.step} = train.steps: nothing to do")
            trainer.close()
            return TrainResult(trainer.step, math.nan, trainer.last_checkpoint, 0.0, 0.0)
        if rank0:
            atomic_write_text(out / "config.json", json.dumps(run_config, indent=2))
        with trainer:
            result = trainer.fit()
        if rank0:
            write_snapshot(out, cfg, test_ds)
    return result


def teacher_of(run_dir: str | Path) -> dict[str, Any] | None:
    """The teacher record of a distilled run (``None`` for a run trained from data)."""
    return copy.deepcopy(read_run_info(run_dir).get("teacher"))


__all__ = [
    "FAMILIES",
    "METHODS",
    "Teacher",
    "TeacherField",
    "distill",
    "load_teacher",
    "student_config",
    "teacher_of",
]
