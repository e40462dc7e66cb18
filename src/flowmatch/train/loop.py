"""The training loop: one optimisation step, repeated; bookkeeping only at logging points.

The loop is generic: the algorithm is a :class:`~flowmatch.objectives.TrainingStep`
(``step(modules, batch, generator) -> LossOutput``) over any number of trained modules and
frozen ones (a teacher, a reference policy), fed by any batch source with a pure
``batch_at(k)``. Flow matching is one such step. The trainer owns the bookkeeping: AdamW, the
learning-rate schedule, one EMA per trained module, bf16, compile, atomic checkpoints of every
module, exact resume, NaN detection and DDP, for every step alike.

A step ``k`` (0-based) is a pure function of ``(seed, rank, k)`` and the current weights:
its batch is ``batch_at(k)`` and all of its randomness (``x0``, ``t``, condition dropout)
comes from ``step_generator(seed, rank, k)``. Nothing is carried from step to step
except the model, optimiser and EMA tensors, which is what makes resumed, prefetched and
data-parallel runs reproduce an uninterrupted run exactly.

The loop never waits for the device between logging points: the per-step loss and gradient
norm stay on the device and are read together (one host sync) every ``log_every`` steps,
before each checkpoint and evaluation, and at the end. Non-finite values are located among
them, so a failure is reported with its exact step without checking every step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from flowmatch._version import __version__
from flowmatch.data.batch import ArrayDataset, Batch, BatchSchedule
from flowmatch.objectives.base import (
    LossOutput,
    ObjectiveStep,
    TrainingStep,
    ema_key,
    teacher_ema_name,
)
from flowmatch.train import distributed, lock
from flowmatch.train.callbacks import CALLBACK_METHODS, Callback
from flowmatch.train.checkpoint import (
    CHECKPOINT_DIR,
    STATE_FILE,
    Checkpoint,
    CheckpointError,
    check_module_name,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    module_file,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from flowmatch.train.config import TrainConfig
from flowmatch.train.ema import EMA
from flowmatch.train.lr import WarmupCosine
from flowmatch.train.records import read_metrics, truncate_metrics
from flowmatch.utils.io import write_error
from flowmatch.utils.tensor import mix_seed

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
EvalFn = Callable[[Any, int], Mapping[str, float]]


@runtime_checkable
class BatchSource(Protocol):
    """Anything with a pure ``batch_at(step) -> Batch`` (the batch of a 0-based step).

    ``BatchSchedule`` over an in-memory dataset is one; a source that generates teacher pairs
    on the fly is another. Purity in ``step`` is what makes resume exact.
    """

    def batch_at(self, step: int) -> Batch:
        """The batch of optimisation step ``step`` (on the training device)."""
        ...


class NonFiniteError(FloatingPointError):
    """The loss or the gradient norm became NaN/inf; no checkpoint of that state is written.

    Attributes:
        step: the step (counted from 1, as in ``metrics.jsonl``) whose value was non-finite.
        quantity: ``"loss"`` or ``"grad_norm"``.
    """

    def __init__(self, step: int, quantity: str, last_checkpoint: Path | None = None) -> None:
        self.step, self.quantity = step, quantity
        where = f"; the last good checkpoint is {last_checkpoint}" if last_checkpoint else ""
        super().__init__(
            f"{quantity} became non-finite (NaN or inf) at step {step}{where}. Try a lower lr, "
            f"grad_clip, precision='fp32', or check the data for extreme values"
        )


@dataclass(frozen=True)
class TrainResult:
    """Summary returned by :meth:`Trainer.fit`.

    Attributes:
        step: number of optimisation steps completed.
        loss: mean loss over the last logging window (NaN if no step was run yet).
        checkpoint: the last checkpoint written (``None`` without ``out_dir``).
        wall_time: seconds spent in this ``fit`` call.
        steps_per_sec: optimisation steps per second over this ``fit`` call.
    """

    step: int
    loss: float
    checkpoint: Path | None
    wall_time: float
    steps_per_sec: float


class Trainer:
    """Trains modules with a pluggable training step (AdamW, schedule, EMA, checkpoints, DDP).

    One step (Lipman et al. 2023, Alg. 1 for flow matching; any ``TrainingStep`` alike):

    ``L = mean_i step(modules, batch_k, g_k).loss_i``; ``g = grad L``;
    ``g <- g min(1, c / |g|)``; ``theta <- AdamW(theta, g, lr_k)``;
    ``theta_ema <- lerp(theta_ema, theta, 1 - d_k)`` for every trained module, with
    ``d_k = min(ema_decay, (1 + k) / (10 + k))`` (:class:`EMA`'s warm-up).

    Only rank 0 writes ``out_dir`` (``metrics.jsonl``, ``checkpoints/``) and calls callbacks;
    it holds the run directory's lock (:mod:`flowmatch.train.lock`) while ``fit`` runs. A
    fresh trainer refuses an ``out_dir`` that already holds another run's checkpoints or
    metrics (continue that run with :meth:`resume`).

    Args:
        model: the trained network, or a dict ``{name: module}`` of trained modules; moved to
            ``config.device``. A single module is named ``"model"``.
        objective: a :class:`~flowmatch.objectives.TrainingStep`, or a per-model objective
            ``objective(model, x1, *, x0, x0_paired, cond, generator) -> LossOutput`` (e.g.
            :class:`FlowMatchingObjective`), which is wrapped in an ``ObjectiveStep``.
        train_data: an in-memory training set (copied to ``config.device`` once and batched
            by a ``BatchSchedule``) or any ``BatchSource``.
        config: hyper-parameters.
        frozen: modules the step reads but does not train (moved to the device, eval mode,
            ``requires_grad=False``); their weights are fingerprinted in every checkpoint.
        out_dir: run directory for metrics and checkpoints (``None``: write nothing).
        run_config: the resolved application config, stored in every checkpoint.
        callbacks: progress hooks (see :class:`Callback`).
        eval_fn: ``eval_fn(model, step) -> {name: value}``, called every ``eval_every`` steps
            and at ``config.steps`` with the EMA weights if any, in eval mode under no_grad;
            ``model`` is the module for a single-module trainer, else the dict of modules.
        run_id: the identity of the run, recorded in every checkpoint (``None``: a new
            uuid4); a checkpoint of another run is never restored into this one.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: the device is unavailable, the model has no trainable parameters, or
            ``run_config`` is not JSON-serialisable.

    Example:
        >>> import torch
        >>> from flowmatch.data import ArrayDataset
        >>> from flowmatch.models import MLP
        >>> from flowmatch.objectives import FlowMatchingObjective
        >>> data = ArrayDataset(torch.randn(512, 2))
        >>> cfg = TrainConfig(steps=20, batch_size=64, log_every=10)
        >>> result = Trainer(MLP(2, hidden=32, depth=2), FlowMatchingObjective(), data, cfg).fit()
        >>> result.step
        20
    """

    def __init__(
        self,
        model: nn.Module | Mapping[str, nn.Module],
        objective: TrainingStep | Callable[..., Any],
        train_data: ArrayDataset | BatchSource,
        config: TrainConfig,
        *,
        frozen: Mapping[str, nn.Module] | None = None,
        out_dir: str | Path | None = None,
        run_config: Mapping[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
        eval_fn: EvalFn | None = None,
        run_id: str | None = None,
    ) -> None:
        modules, self._single = _as_modules(model, "model")
        frozen_modules, _ = _as_modules(frozen or {}, "frozen")
        step = _as_step(objective, modules)
        _check_arguments(step, modules, frozen_modules, train_data, config, run_config, callbacks)
        if eval_fn is not None and not callable(eval_fn):
            raise TypeError(f"eval_fn must be callable (model, step) -> dict, got {eval_fn!r}")
        if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
            raise TypeError(f"run_id must be a non-empty str or None, got {run_id!r}")
        self.run_id = run_id if run_id is not None else uuid.uuid4().hex
        self.config = config
        self.objective = objective
        self.step_fn = step
        self.run_config = dict(run_config) if run_config is not None else None
        self.callbacks = tuple(callbacks)
        self.eval_fn = eval_fn
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.dist, self.device = distributed.setup_distributed(
            config.device, timeout=config.dist_timeout
        )
        _check_device(self.device)

        self.modules = {name: m.to(self.device).train() for name, m in modules.items()}
        self.frozen = {name: _freeze(m.to(self.device)) for name, m in frozen_modules.items()}
        self.batches = self._batch_source(train_data)
        self._params = [p for m in self.modules.values() for p in m.parameters() if p.requires_grad]
        if not self._params:
            raise ValueError("model has no trainable parameters (requires_grad=True)")
        self.optimizer = torch.optim.AdamW(
            self._params,
            lr=config.lr,
            betas=(config.betas[0], config.betas[1]),
            weight_decay=config.weight_decay,
        )
        self.lr_schedule = WarmupCosine.from_config(config)
        # Wrap first: DDP broadcasts rank 0's weights, and the EMA must start from those.
        with self._collectives("while starting"):
            nets = {
                n: distributed.wrap_model(m, self.dist, self.device)
                for n, m in self.modules.items()
            }
        decay = config.ema_decay
        self.emas = (
            None
            if decay is None
            else {n: EMA(m, decay, warmup=config.ema_warmup) for n, m in self.modules.items()}
        )
        if config.compile:
            nets = {n: torch.compile(net) for n, net in nets.items()}  # type: ignore[misc]
        # What the step sees: wrapped trained modules and the frozen ones.
        self._step_modules: dict[str, nn.Module] = {**nets, **self.frozen}
        for name in getattr(step, "reads_ema", ()):  # a self-teacher: a slow average from step 0
            if self.emas is None or name not in self.emas:
                raise ValueError(
                    f"{type(step).__name__} reads averaged weights of {name!r} (its self-teacher), "
                    f"but train.ema_decay is {config.ema_decay!r}: set an EMA decay "
                    "(e.g. 0.999) or the objective's self_teacher option to 'current'"
                )
            teacher = EMA(self.modules[name], step.teacher_decay, warmup=False)
            self.emas[teacher_ema_name(name)] = teacher
            self._step_modules[ema_key(name)] = teacher.module
        self._fingerprints = {n: _fingerprint(m) for n, m in self.frozen.items()}

        self.step = 0
        self.last_checkpoint: Path | None = None
        self._last_loss = math.nan
        self._elapsed_before = 0.0
        self._lr = math.nan
        # Device scalars of the current logging window; read together at the next sync point.
        # Keeping the step's own (detached) tensors costs no kernel, unlike copying them.
        self._losses: list[Tensor] = []
        self._gnorms: list[Tensor] = []
        self._logs: dict[str, list[Tensor]] = {}
        self._gen = torch.Generator(device=self.device)
        self._gnorm_step = -1  # step whose grad norm is in _gnorms when grad_clip is None
        self._window_start = 0
        self._metrics: IO[str] | None = None
        self._t_fit = self._t_window = time.perf_counter()
        self._paused = 0.0
        self._owns_out_dir = False  # restored from this run, or already written by it
        self._truncate_at: int | None = None  # metrics to cut back to this step at fit start

    @property
    def model(self) -> nn.Module:
        """The trained module named ``"model"`` (or the only one)."""
        return self.modules[_main(self.modules)]

    @property
    def ema(self) -> EMA | None:
        """The EMA of :attr:`model` (``None`` without EMA)."""
        return None if self.emas is None else self.emas[_main(self.modules)]

    @property
    def net(self) -> nn.Module:
        """:attr:`model` as the step calls it (DDP-wrapped and/or compiled)."""
        return self._step_modules[_main(self.modules)]

    def _batch_source(self, data: ArrayDataset | BatchSource) -> BatchSource:
        if not isinstance(data, ArrayDataset):
            return data
        self.data = data if data.x.device == self.device else data.to(self.device)
        return BatchSchedule(
            self.data,
            self.config.batch_size,
            seed=self.config.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        model: nn.Module | Mapping[str, nn.Module],
        objective: TrainingStep | Callable[..., Any],
        train_data: ArrayDataset | BatchSource,
        config: TrainConfig | None = None,
        *,
        frozen: Mapping[str, nn.Module] | None = None,
        run_config: Mapping[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
        eval_fn: EvalFn | None = None,
        run_id: str | None = None,
        restart_if_empty: bool = False,
    ) -> Trainer:
        """A trainer that continues the run in ``run_dir`` from its latest checkpoint.

        With the saved config (``config=None``) the continued run is bit-identical on CPU to a
        run that was never interrupted. A different ``config`` is allowed (e.g. more
        ``steps``); changed fields are logged, and changing ``steps`` changes the cosine.

        Args:
            run_dir: the ``out_dir`` of the interrupted run; it stays the output directory.
            model: freshly built module(s) of the same architecture.
            objective: the training step or objective (built like the original one).
            train_data: the same training data.
            frozen: the same frozen modules (checked against their fingerprints).
            config: replacement config, or ``None`` to reuse the checkpoint's.
            run_config: replacement application config, or ``None`` to reuse the saved one.
            callbacks: progress hooks.
            eval_fn: evaluation function (see :class:`Trainer`).
            run_id: the id the run's checkpoints must carry (e.g. from the run's
                ``config.json``); ``None``: the latest checkpoint's, which every other
                checkpoint of ``run_dir`` must share.
            restart_if_empty: a run that stopped before its first checkpoint restarts from
                step 0 (with ``config``, required then) instead of raising; its metrics are
                cut back to step 0 when :meth:`fit` starts.

        Returns:
            The restored trainer; call :meth:`fit` to continue. Nothing in ``run_dir`` is
            changed until :meth:`fit` runs.

        Raises:
            FileNotFoundError: ``run_dir`` has no checkpoint.
            CheckpointError: the checkpoint is corrupt, edited, belongs to another run, or
                was not written by a ``Trainer``.
            MetricsError: ``metrics.jsonl`` is malformed before its last line.
        """
        path = latest_checkpoint(run_dir)
        if path is None and restart_if_empty and config is not None:
            logger.info("%s has no checkpoint yet: restarting it from step 0", run_dir)
            trainer = cls(
                model,
                objective,
                train_data,
                config,
                frozen=frozen,
                out_dir=run_dir,
                run_config=run_config,
                callbacks=callbacks,
                eval_fn=eval_fn,
                run_id=run_id,
            )
            if trainer.dist.is_main:
                read_metrics(Path(run_dir) / METRICS_FILE)
            trainer._owns_out_dir, trainer._truncate_at = True, 0
            return trainer
        if path is None:
            raise FileNotFoundError(
                f"no checkpoint to resume from under {Path(run_dir)}/checkpoints"
            )
        ckpt = load_checkpoint(path, run_id=run_id)
        _check_trainer_state(ckpt)
        if run_id is None:
            _check_one_run(run_dir, ckpt)
        saved = TrainConfig.from_dict(ckpt.state["config"])
        if config is None:
            config = saved
        else:
            before = saved.to_dict()
            changed = {k: v for k, v in config.to_dict().items() if before[k] != v}
            if changed:
                logger.info("resuming %s with changed config fields %s", path, changed)
        if run_config is None:
            run_config = ckpt.state.get("run_config")
        trainer = cls(
            model,
            objective,
            train_data,
            config,
            frozen=frozen,
            out_dir=run_dir,
            run_config=run_config,
            callbacks=callbacks,
            eval_fn=eval_fn,
            run_id=run_id if run_id is not None else ckpt.run_id,
        )
        trainer.restore(ckpt)
        return trainer

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore weights, EMA, optimiser, step and RNG from a checkpoint (or run) directory."""
        self.restore(load_checkpoint(path))

    def restore(self, ckpt: Checkpoint) -> None:
        """Restore the state held by a loaded :class:`Checkpoint`.

        A checkpoint of another run (another ``run_id``) is refused when this trainer writes
        an ``out_dir`` other than the checkpoint's own run directory: its new checkpoints
        would mix the two runs. Nothing on disk changes here; ``metrics.jsonl`` is cut back
        to the checkpoint's step when :meth:`fit` starts.

        Raises:
            CheckpointError: the checkpoint was not written by a ``Trainer``, or belongs to
                another run.
            ValueError: the checkpoint does not fit this trainer (architecture, EMA on/off,
                optimiser, or more steps done than ``config.steps``); the message names the
                file.
            MetricsError: this trainer's ``metrics.jsonl`` is malformed before its last line.
        """
        _check_trainer_state(ckpt)
        self._check_run_id(ckpt)
        if ckpt.step > self.config.steps:
            raise ValueError(
                f"checkpoint {ckpt.path} is at step {ckpt.step}, beyond config.steps = "
                f"{self.config.steps}; pass a config with more steps to continue"
            )
        if set(ckpt.modules) != set(self.modules):
            raise ValueError(
                f"checkpoint {ckpt.path} holds modules {sorted(ckpt.modules)}, this trainer "
                f"trains {sorted(self.modules)}"
            )
        for name, module in self.modules.items():
            try:
                module.load_state_dict(ckpt.modules[name])
            except RuntimeError as err:
                what = "the model" if name == "model" else f"the {name!r} module"
                detail = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()]
                raise ValueError(
                    f"{ckpt.path / module_file(name)} does not fit {what} (another "
                    f"architecture?): {detail[0] if detail else err}"
                ) from None
        if (self.emas is None) != (ckpt.emas is None):
            raise ValueError(
                f"checkpoint {ckpt.path} has_ema={ckpt.emas is not None} but config.ema_decay="
                f"{self.config.ema_decay}; use the same EMA setting as the original run"
            )
        if self.emas is not None and ckpt.emas is not None:
            for name, ema in self.emas.items():
                try:
                    ema.load_state_dict(ckpt.emas[name])
                except (RuntimeError, KeyError) as err:
                    raise ValueError(
                        f"{ckpt.path / module_file(name, ema=True)} does not fit the EMA of "
                        f"{name!r}: {_first_line(err)}"
                    ) from None
            counts = ckpt.state.get("ema")  # None: written before the EMA warm-up
            if counts is not None and not isinstance(counts, dict):
                raise ValueError(
                    f"{ckpt.path / 'state.json'}: 'ema' must map module names to EMA states, "
                    f"got {counts!r}"
                )
            for name, ema in self.emas.items():
                ema.load_extra_state(
                    None if counts is None else counts.get(name, {}), step=ckpt.step
                )
        saved = ckpt.state.get("frozen", {})
        if saved and saved != self._fingerprints:
            raise ValueError(
                f"checkpoint {ckpt.path} was trained with other frozen modules (fingerprints "
                f"{saved}, now {self._fingerprints}); resume with the same teacher/reference"
            )
        try:
            self.optimizer.load_state_dict(ckpt.optimizer)
            set_rng_state(ckpt.state["rng"])
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            raise CheckpointError(
                f"{ckpt.path / STATE_FILE}: the optimiser/RNG state does not fit this trainer: "
                f"{_first_line(err)}"
            ) from None
        saved_schedule = ckpt.state.get("lr_schedule")
        if saved_schedule is not None and saved_schedule != self.lr_schedule.state_dict():
            logger.info(
                "resuming %s with another learning-rate schedule: %s -> %s (the lr curve "
                "changes from step %d on)",
                ckpt.path,
                saved_schedule,
                self.lr_schedule.state_dict(),
                ckpt.step,
            )
        if self.out_dir is not None and self.dist.is_main:
            read_metrics(self.out_dir / METRICS_FILE)  # malformed records refuse before writing
            self._truncate_at = ckpt.step
        self.step = ckpt.step
        self._start_window(ckpt.step, time.perf_counter())
        self._elapsed_before = float(ckpt.state.get("elapsed", 0.0))
        self._last_loss = float(ckpt.state.get("last_loss", math.nan))
        self.last_checkpoint = ckpt.path
        self._owns_out_dir = True

    def _check_run_id(self, ckpt: Checkpoint) -> None:
        theirs = ckpt.run_id
        if theirs is None or theirs == self.run_id:
            return
        own_dir = ckpt.path.parent.parent
        if self.out_dir is None or _same_path(own_dir, self.out_dir):
            self.run_id = theirs  # continuing that run (in its own directory, or nowhere)
            return
        raise CheckpointError(
            f"checkpoint {ckpt.path} belongs to run {theirs}, but this trainer writes run "
            f"{self.run_id} into {self.out_dir}: restoring it would mix two runs; continue "
            f"that run with Trainer.resume({str(own_dir)!r}, ...), or load only its weights "
            "with model.load_state_dict(load_checkpoint(...).model)"
        )

    # ------------------------------------------------------------------ the loop
    def fit(self, until_step: int | None = None) -> TrainResult:
        """Train from the current step up to ``until_step`` (default ``config.steps``).

        Args:
            until_step: stop after this many completed steps, in
                ``[trainer.step, config.steps]``; a checkpoint is written there.

        Returns:
            The :class:`TrainResult`.

        Raises:
            ValueError: ``until_step`` out of range.
            NonFiniteError: the loss or gradient norm became NaN/inf (exact step named).
        """
        stop = self.config.steps if until_step is None else until_step
        if isinstance(stop, bool) or not isinstance(stop, int):
            raise TypeError(f"until_step must be an int or None, got {until_step!r}")
        if not self.step <= stop <= self.config.steps:
            raise ValueError(
                f"until_step must be in [{self.step}, {self.config.steps}] (current step, "
                f"config.steps), got {until_step}"
            )
        locked = self._claim_out_dir()
        prefetcher = None
        try:
            self._open_metrics()
            with self._collectives(f"at step {self.step}"):
                self._flush_window()  # what an interrupted fit left behind (re-raises its NaN)
            start_step, t_start = self.step, time.perf_counter()
            self._t_fit = t_start
            self._start_window(start_step, t_start)
            self._emit("on_train_start", self)
            prefetcher = self._make_prefetcher(start_step, stop)
            batches: Iterator[tuple[int, Batch]]
            if prefetcher is None:
                batches = ((k, self.batches.batch_at(k)) for k in range(start_step, stop))
            else:
                batches = _take(prefetcher, stop)
            with self._collectives("at step {step}"):
                self._run(batches, stop)
                self._finish(stop)
        finally:
            if prefetcher is not None:
                prefetcher.close()
            self._close_metrics()
            if locked:
                lock.release(self.out_dir)  # type: ignore[arg-type]
        wall = time.perf_counter() - t_start
        self._elapsed_before += wall
        done = self.step - start_step
        result = TrainResult(
            step=self.step,
            loss=self._last_loss,
            checkpoint=self.last_checkpoint,
            wall_time=wall,
            steps_per_sec=done / wall if wall > 0 else math.nan,
        )
        self._emit("on_train_end", result)
        return result

    def _run(self, batches: Iterator[tuple[int, Batch]], stop: int) -> None:
        cfg = self.config
        measure_grad = cfg.grad_clip is None
        for k, batch in batches:
            done = k + 1
            is_log = done % cfg.log_every == 0 or done == stop
            self._train_step(k, batch, measure_grad and is_log)
            self.step = done
            if is_log:
                self._log(done)
            if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                self._evaluate(done)
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done != stop:
                self._checkpoint(done)

    def _train_step(self, k: int, batch: Batch, measure_grad: bool) -> None:
        """One optimisation step on ``batch`` with the randomness of step ``k``; no host sync."""
        cfg = self.config
        # Same stream as step_generator(seed, rank, k); re-seeding one generator is cheaper
        # than building a new one every step.
        g = self._gen
        g.manual_seed(mix_seed(cfg.seed, self.dist.rank, k))
        with self._autocast():
            out = self.step_fn(self._step_modules, batch, g)
        if not isinstance(out, LossOutput):
            raise TypeError(
                f"{type(self.step_fn).__name__} must return a LossOutput, got {type(out).__name__}"
            )
        loss = out.loss.float().mean()
        for key, value in out.logs.items():
            self._logs.setdefault(key, []).append(value.detach().float().mean())
        loss.backward()
        if cfg.grad_clip is not None:
            self._gnorms.append(nn.utils.clip_grad_norm_(self._params, cfg.grad_clip))
        elif measure_grad:
            grads = [p.grad for p in self._params if p.grad is not None]
            self._gnorms.append(nn.utils.get_total_norm(grads))
            self._gnorm_step = k + 1
        lr = self.lr_schedule(k)
        if lr != self._lr:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self._lr = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.emas is not None:
            for ema in self.emas.values():
                ema.update()
        self._losses.append(loss.detach())

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _make_prefetcher(self, start: int, stop: int) -> Any | None:
        """A ``PairingPrefetcher`` when the step's ``prepare`` does work, else ``None``.

        A non-trivial coupling (e.g. minibatch OT) pairs ``x0`` with ``x1`` in a background
        thread (``TrainingStep.prepare``), ``depth`` steps ahead; its randomness for step ``k`` comes from
        ``step_generator(mix_seed(seed, rank), 0xC0, k)``, so results do not depend on timing.
        """
        if start >= stop or not self.step_fn.prepares:
            return None
        from flowmatch.train.prefetch import PairingPrefetcher  # lazy: optional pipeline

        return PairingPrefetcher(
            self.batches.batch_at,
            self.step_fn.prepare,
            seed=mix_seed(self.config.seed, self.dist.rank),
            start_step=start,
        )

    # ------------------------------------------------------------------ bookkeeping
    def _window_stats(self) -> tuple[float, float, int, str, dict[str, float]]:
        """One host sync: window means of loss, grad norm and step logs, first non-finite step.

        Returns ``(mean_loss, grad_norm, bad_step, quantity, logs)`` with ``bad_step = 0``
        when everything is finite. Across ranks the sums are averaged and the earliest bad
        step wins, so every rank raises the same error at the same point.
        """
        n = len(self._losses)  # == self.step - self._window_start
        if n == 0:
            return self._last_loss, math.nan, 0, "", {}
        losses = torch.stack(self._losses)
        if self.config.grad_clip is not None:
            gnorms, offset = torch.stack(self._gnorms), 0  # measured at every step (clipping)
        elif self._gnorm_step == self.step:
            gnorms, offset = self._gnorms[-1].reshape(1), n - 1  # measured at this log step
        else:
            gnorms, offset = losses[:0], 0  # not measured in this window
        inf = losses.new_tensor(math.inf, dtype=torch.float64)
        names = sorted(self._logs)
        stats = torch.stack(
            [
                losses.sum().double(),
                gnorms.sum().double() / max(1, gnorms.numel()),
                *(torch.stack(self._logs[k]).mean().double() for k in names),
                _first_nonfinite(losses, inf),
                _first_nonfinite(gnorms, inf) + offset,
            ]
        )
        if self.dist.enabled:
            distributed.all_reduce_(stats[:-2], self.dist, "sum")
            distributed.all_reduce_(stats[-2:], self.dist, "min")
        values = stats.tolist()
        loss_sum, gnorm, bad_loss, bad_grad = values[0], values[1], values[-2], values[-1]
        world = self.dist.world_size
        logs = {k: v / world for k, v in zip(names, values[2:-2], strict=True)}
        if gnorms.numel() == 0:
            gnorm = math.nan
        bad = min(bad_loss, bad_grad)
        if bad == math.inf:
            return loss_sum / (n * world), gnorm / world, 0, "", logs
        quantity = "loss" if bad_loss <= bad_grad else "grad_norm"
        return math.nan, math.nan, self._window_start + int(bad) + 1, quantity, {}

    def _check_finite(self) -> tuple[float, float, dict[str, float]]:
        loss, gnorm, bad_step, quantity, logs = self._window_stats()
        if bad_step:
            raise NonFiniteError(bad_step, quantity, self.last_checkpoint)
        return loss, gnorm, logs

    def _log(self, step: int) -> None:
        n = step - self._window_start
        loss, gnorm, logs = self._check_finite()
        now = time.perf_counter()
        busy = now - self._t_window - self._paused
        record = {
            "step": step,
            "loss": loss,
            "lr": self._lr,
            "grad_norm": gnorm,
            "steps_per_sec": n / busy if busy > 0 else math.nan,
            "elapsed": self._elapsed_before + now - self._t_fit,
            **{k: v for k, v in logs.items() if k not in _RECORD_KEYS},
        }
        self._start_window(step, now)
        self._last_loss = loss
        if not self.dist.is_main:
            return
        logger.info(
            "step %d/%d  loss %.4g  lr %.3g  grad_norm %.3g  %.1f it/s",
            step,
            self.config.steps,
            loss,
            self._lr,
            gnorm,
            record["steps_per_sec"],
        )
        self._write_record(record)
        self._emit("on_log", step, {k: v for k, v in record.items() if k != "step"})

    def _evaluate(self, step: int) -> None:
        if self.eval_fn is None:
            return
        self._check_finite()
        t0 = time.perf_counter()
        if self.dist.is_main:
            models = {
                n: (self.emas[n].module_synced() if self.emas is not None else m)
                for n, m in self.modules.items()
            }
            modes = {n: m.training for n, m in models.items()}
            for m in models.values():
                m.eval()
            try:
                with torch.no_grad():
                    raw = self.eval_fn(models[_main(models)] if self._single else models, step)
            finally:
                for n, m in models.items():
                    m.train(modes[n])
            results = _eval_results(raw)
            self._write_record({"step": step, **{f"eval/{k}": v for k, v in results.items()}})
            logger.info("eval at step %d: %s", step, results)
            self._emit("on_eval", step, results)
        self._paused += time.perf_counter() - t0

    def _checkpoint(self, step: int) -> None:
        if self.out_dir is None:
            return
        self._check_finite()  # never write a broken state
        t0 = time.perf_counter()
        path = self.out_dir / CHECKPOINT_DIR / checkpoint_name(step)
        if self.dist.is_main:
            emas = self.emas
            path = save_checkpoint(
                self.out_dir,
                step,
                modules={n: m.state_dict() for n, m in self.modules.items()},
                emas=None if emas is None else {n: e.state_dict() for n, e in emas.items()},
                optimizer=self.optimizer.state_dict(),
                extra=self._extra_state(),
                keep=self.config.keep_checkpoints,
                run_id=self.run_id,
            )
            logger.info("saved checkpoint %s", path)
            self._emit("on_checkpoint", step, path)
        distributed.barrier(self.dist)
        self.last_checkpoint = path  # on every rank, so all ranks take the same decisions
        self._paused += time.perf_counter() - t0

    def _extra_state(self) -> dict[str, Any]:
        return {
            "lr_schedule": self.lr_schedule.state_dict(),
            "lr": self._lr,
            "ema": None
            if self.emas is None
            else {n: e.extra_state() for n, e in self.emas.items()},
            "rng": rng_state(),
            "config": self.config.to_dict(),
            "run_config": self.run_config,
            "elapsed": self._elapsed_before + time.perf_counter() - self._t_fit,
            "last_loss": self._last_loss,
            "world_size": self.dist.world_size,
            "frozen": self._fingerprints,
            "flowmatch_version": __version__,
            "torch_version": torch.__version__,
        }

    def _start_window(self, step: int, now: float) -> None:
        """Begin a new logging window after ``step`` (its steps/s is timed from ``now``)."""
        self._window_start, self._t_window, self._paused = step, now, 0.0
        self._losses, self._gnorms, self._logs = [], [], {}

    def _flush_window(self) -> None:
        """Log the steps done since the last logging point, if any."""
        if self.step > self._window_start:
            self._log(self.step)

    def _finish(self, stop: int) -> None:
        """End of ``fit``: flush the last window, checkpoint at ``stop`` (once)."""
        self._flush_window()
        if self.out_dir is not None and (
            self.last_checkpoint is None or self.last_checkpoint.name != checkpoint_name(stop)
        ):
            self._checkpoint(stop)

    @contextlib.contextmanager
    def _collectives(self, where: str) -> Iterator[None]:
        """Turn a failed collective (a silent rank) into one error naming the rank."""
        try:
            yield
        except RuntimeError as err:
            if not (self.dist.enabled and distributed.is_comm_failure(err)):
                raise
            raise distributed.unresponsive_error(
                self.dist,
                err,
                timeout=self.config.dist_timeout,
                where=where.format(step=self.step + 1),
            ) from None

    def _claim_out_dir(self) -> bool:
        """Rank 0 checks that ``out_dir`` is this run's and locks it; returns whether it locked.

        All ranks learn rank 0's verdict (one collective), so a refusal stops every rank.
        """
        refusal: Exception | None = None
        locked = False
        if self.out_dir is not None and self.dist.is_main:
            try:
                if not self._owns_out_dir:
                    _check_fresh_out_dir(self.out_dir)
                self.out_dir.mkdir(parents=True, exist_ok=True)
                lock.acquire(self.out_dir)
                locked = True
                self._owns_out_dir = True  # from now on out_dir holds this run
            except (ValueError, OSError, lock.RunLockedError) as err:
                refusal = err
        if self.dist.enabled and self.out_dir is not None:
            flag = torch.tensor([1.0 if refusal is not None else 0.0], device=self.device)
            with self._collectives("while starting"):
                distributed.all_reduce_(flag, self.dist, "sum")
            if refusal is None and flag.item() > 0:
                raise RuntimeError(f"rank 0 refused to write {self.out_dir} (see its message)")
        if refusal is not None:
            raise refusal
        return locked

    def _open_metrics(self) -> None:
        if self.out_dir is not None and self.dist.is_main:
            path = self.out_dir / METRICS_FILE
            if self._truncate_at is not None:
                truncate_metrics(path, self._truncate_at)
                self._truncate_at = None
            try:
                self._metrics = open(path, "a")  # closed by fit
            except OSError as err:
                raise write_error(path, err) from None

    def _close_metrics(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    def _write_record(self, record: dict[str, Any]) -> None:
        if self._metrics is not None:
            try:
                self._metrics.write(json.dumps(record) + "\n")
                self._metrics.flush()
            except OSError as err:
                raise write_error(Path(self._metrics.name), err) from None

    def _emit(self, method: str, *args: Any) -> None:
        if self.dist.is_main:
            for cb in self.callbacks:
                getattr(cb, method)(*args)

    def close(self) -> None:
        """Leave the process group if this trainer joined it (call once, after training)."""
        distributed.cleanup(self.dist)

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_nonfinite(values: Tensor, inf: Tensor) -> Tensor:
    """Index (float64) of the first non-finite entry of ``values``, or ``inf`` if none."""
    if values.numel() == 0:  # no grad norm measured in the window (grad_clip=None)
        return inf
    bad = ~torch.isfinite(values)
    # argmax returns the first maximal index, i.e. the first True.
    return torch.where(bad.any(), bad.to(torch.uint8).argmax().double(), inf)


def _take(prefetcher: Iterator[tuple[int, Batch]], stop: int) -> Iterator[tuple[int, Batch]]:
    """The prefetcher's ``(k, batch)`` up to ``k = stop - 1``, without pulling one more."""
    for k, batch in prefetcher:
        yield k, batch
        if k + 1 >= stop:
            return


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _check_one_run(run_dir: str | Path, ckpt: Checkpoint) -> None:
    """Every checkpoint of ``run_dir`` must carry the run id of ``ckpt`` (the latest)."""
    if ckpt.run_id is None:
        return
    for path in list_checkpoints(run_dir):
        try:
            other = json.loads((path / STATE_FILE).read_text()).get("run_id")
        except (OSError, ValueError, AttributeError):
            continue  # unreadable: reported when (if ever) it is loaded
        if isinstance(other, str) and other != ckpt.run_id:
            raise CheckpointError(
                f"checkpoint {ckpt.path} belongs to run {ckpt.run_id} but {path} of the same "
                f"directory to run {other}: one was copied from another run; remove it"
            )


def _check_fresh_out_dir(out_dir: Path) -> None:
    """A fresh trainer must not write into a directory that holds another run."""
    found = []
    if list_checkpoints(out_dir):
        found.append(f"{CHECKPOINT_DIR}/")
    metrics = out_dir / METRICS_FILE
    if metrics.exists() and (metrics.is_dir() or metrics.stat().st_size > 0):
        found.append(METRICS_FILE)
    if found:
        raise ValueError(
            f"out_dir {out_dir} already holds a run ({', '.join(found)}); continue it with "
            "Trainer.resume(out_dir, ...), or train into another (or an empty) directory"
        )


def _check_trainer_state(ckpt: Checkpoint) -> None:
    missing = sorted({"config", "rng"} - set(ckpt.state))
    if missing:
        raise CheckpointError(
            f"{ckpt.path / 'state.json'} lacks {missing}: it was not written by Trainer, so it "
            f"holds weights only; load them with model.load_state_dict(load_checkpoint(...).model)"
        )


#: Keys of a metrics record that a step's logs may not overwrite.
_RECORD_KEYS = frozenset({"step", "loss", "lr", "grad_norm", "steps_per_sec", "elapsed"})


def _main(modules: Mapping[str, Any]) -> str:
    """The name of the main module: ``"model"``, or the first one."""
    return "model" if "model" in modules else next(iter(modules))


def _as_modules(value: Any, what: str) -> tuple[dict[str, nn.Module], bool]:
    """``{name: module}`` from a module or a mapping; and whether a single module was given."""
    if isinstance(value, nn.Module):
        return {"model": value}, True
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{what} must be a torch.nn.Module, got {type(value).__name__} (or pass a dict of "
            "modules by name)"
        )
    out: dict[str, nn.Module] = {}
    for name, module in value.items():
        check_module_name(name)
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"{what}[{name!r}] must be a torch.nn.Module, got {type(module).__name__}"
            )
        out[name] = module
    if what == "model" and not out:
        raise ValueError("model must hold at least one trained module")
    return out, False


def _as_step(objective: Any, modules: Mapping[str, nn.Module]) -> TrainingStep:
    if isinstance(objective, TrainingStep):
        return objective
    if not callable(objective):
        raise TypeError(
            f"objective must be callable like FlowMatchingObjective (or a TrainingStep), got "
            f"{type(objective).__name__}"
        )
    return ObjectiveStep(objective, _main(modules))


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


def _fingerprint(module: nn.Module) -> str:
    """sha256 (first 16 hex digits) of a module's state: names, shapes, dtypes and values."""
    h = hashlib.sha256()
    for key, value in module.state_dict().items():
        t = value.detach().to("cpu").contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _eval_results(raw: Any) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        raise TypeError(
            f"eval_fn must return a mapping of name -> number, got {type(raw).__name__}"
        )
    out: dict[str, float] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise TypeError(f"eval_fn result keys must be str, got {key!r}")
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"eval_fn result {key!r} must be a number, got {value!r}")
        out[key] = float(value)
    return out


def _check_device(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config.device is {str(device)!r} but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"config.device is {str(device)!r} but MPS is not available")


def _check_arguments(
    step: TrainingStep,
    modules: Mapping[str, nn.Module],
    frozen: Mapping[str, nn.Module],
    train_data: Any,
    config: Any,
    run_config: Any,
    callbacks: Any,
) -> None:
    missing = [n for n in step.trains if n not in modules]
    if missing:
        raise ValueError(
            f"{type(step).__name__} trains modules {list(step.trains)}, but the trainer got "
            f"{sorted(modules)}; pass model={{name: module, ...}}"
        )
    needed = [n for n in step.uses if n not in frozen]
    if needed:
        raise ValueError(
            f"{type(step).__name__} reads frozen modules {list(step.uses)}; pass "
            f"frozen={{{', '.join(repr(n) for n in needed)}: module}}"
        )
    clash = sorted(set(modules) & set(frozen))
    if clash:
        raise ValueError(f"modules {clash} are both trained and frozen")
    if not isinstance(train_data, ArrayDataset | BatchSource):
        raise TypeError(
            f"train_data must be an ArrayDataset, got {type(train_data).__name__} (or pass a "
            "batch source with batch_at(step) -> Batch)"
        )
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if run_config is not None:
        if not isinstance(run_config, Mapping):
            raise TypeError(f"run_config must be a dict or None, got {type(run_config).__name__}")
        try:
            json.dumps(dict(run_config))
        except (TypeError, ValueError) as err:
            raise ValueError(f"run_config must be JSON-serialisable: {err}") from None
    for cb in callbacks:
        missing = [m for m in CALLBACK_METHODS if not callable(getattr(cb, m, None))]
        if missing:
            raise TypeError(
                f"callback {cb!r} lacks {missing}; subclass flowmatch.train.Callback to get "
                f"no-op defaults"
            )


__all__ = ["BatchSource", "NonFiniteError", "TrainResult", "Trainer"]
