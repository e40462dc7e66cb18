"""The training loop: one optimisation step, repeated; bookkeeping only at logging points.

A step ``k`` (0-based) is a pure function of ``(seed, rank, k)`` and the current weights:
its batch is ``BatchSchedule.batch_at(k)`` and all of its randomness (``x0``, ``t``, label
dropout) comes from ``step_generator(seed, rank, k)``. Nothing is carried from step to step
except the model, optimiser and EMA tensors, which is what makes resumed, prefetched and
data-parallel runs reproduce an uninterrupted run exactly.

The loop never waits for the device between logging points: the per-step loss and gradient
norm stay on the device and are read together (one host sync) every ``log_every`` steps,
before each checkpoint and evaluation, and at the end. Non-finite values are located among
them, so a failure is reported with its exact step without checking every step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

from flowmatch._version import __version__
from flowmatch.couplings.base import IndependentCoupling
from flowmatch.data.batch import ArrayDataset, Batch, BatchSchedule
from flowmatch.train import distributed
from flowmatch.train.callbacks import CALLBACK_METHODS, Callback
from flowmatch.train.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    CheckpointError,
    atomic_write_text,
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from flowmatch.train.config import TrainConfig
from flowmatch.train.ema import EMA
from flowmatch.train.lr import WarmupCosine
from flowmatch.utils.tensor import mix_seed

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
EvalFn = Callable[[nn.Module, int], Mapping[str, float]]


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
    """Trains a velocity field with an objective on an in-memory dataset (AdamW, EMA, DDP).

    One step (Lipman et al. 2023, Alg. 1; Tong et al. 2024, Alg. 1 for couplings):

    ``L = mean_i loss_i(theta)``; ``g = grad L``; ``g <- g min(1, c / |g|)``;
    ``theta <- AdamW(theta, g, lr_k)``; ``theta_ema <- lerp(theta_ema, theta, 1 - d_k)``,
    ``d_k = min(ema_decay, (1 + k) / (10 + k))`` (:class:`EMA`).

    Only rank 0 writes ``out_dir`` (``metrics.jsonl``, ``checkpoints/``) and calls callbacks.

    Args:
        model: the network ``(x (B, *D), t (B,), cond) -> (B, *D)``; moved to
            ``config.device``.
        objective: callable ``objective(model, x1, *, x0, cond, generator) -> LossOutput``
            returning a per-sample loss ``(B,)`` (e.g. :class:`FlowMatchingObjective`).
        train_data: the training set (copied to ``config.device`` once).
        config: hyper-parameters.
        out_dir: run directory for metrics and checkpoints (``None``: write nothing).
        run_config: the resolved application config, stored in every checkpoint.
        callbacks: progress hooks (see :class:`Callback`).
        eval_fn: ``eval_fn(model, step) -> {name: value}``, called every ``eval_every`` steps
            and at ``config.steps`` with the EMA model if any, in eval mode under no_grad.

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
        model: nn.Module,
        objective: Callable[..., Any],
        train_data: ArrayDataset,
        config: TrainConfig,
        *,
        out_dir: str | Path | None = None,
        run_config: Mapping[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
        eval_fn: EvalFn | None = None,
    ) -> None:
        _check_arguments(model, objective, train_data, config, run_config, callbacks, eval_fn)
        self.config = config
        self.objective = objective
        self.run_config = dict(run_config) if run_config is not None else None
        self.callbacks = tuple(callbacks)
        self.eval_fn = eval_fn
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.dist, self.device = distributed.setup_distributed(config.device)
        _check_device(self.device)

        self.model = model.to(self.device)
        self.model.train()
        self.data = train_data if train_data.x.device == self.device else train_data.to(self.device)
        self.batches = BatchSchedule(
            self.data,
            config.batch_size,
            seed=config.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        if not self._params:
            raise ValueError("model has no trainable parameters (requires_grad=True)")
        self.optimizer = torch.optim.AdamW(
            self._params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
        self.lr_schedule = WarmupCosine.from_config(config)
        # Wrap first: DDP broadcasts rank 0's weights, and the EMA must start from those.
        net = distributed.wrap_model(self.model, self.dist, self.device)
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay is not None else None
        self.net: nn.Module = torch.compile(net) if config.compile else net  # type: ignore[assignment]

        self.step = 0
        self.last_checkpoint: Path | None = None
        self._last_loss = math.nan
        self._elapsed_before = 0.0
        self._lr = math.nan
        # Device scalars of the current logging window; read together at the next sync point.
        # Keeping the step's own (detached) tensors costs no kernel, unlike copying them.
        self._losses: list[Tensor] = []
        self._gnorms: list[Tensor] = []
        self._gen = torch.Generator(device=self.device)
        self._gnorm_step = -1  # step whose grad norm is in _gnorms when grad_clip is None
        self._window_start = 0
        self._metrics: IO[str] | None = None
        self._t_fit = self._t_window = time.perf_counter()
        self._paused = 0.0

    # ------------------------------------------------------------------ construction
    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        model: nn.Module,
        objective: Callable[..., Any],
        train_data: ArrayDataset,
        config: TrainConfig | None = None,
        *,
        run_config: Mapping[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
        eval_fn: EvalFn | None = None,
    ) -> Trainer:
        """A trainer that continues the run in ``run_dir`` from its latest checkpoint.

        With the saved config (``config=None``) the continued run is bit-identical on CPU to a
        run that was never interrupted. A different ``config`` is allowed (e.g. more
        ``steps``); changed fields are logged, and changing ``steps`` changes the cosine.

        Args:
            run_dir: the ``out_dir`` of the interrupted run; it stays the output directory.
            model: a freshly built model of the same architecture.
            objective: the objective (built like the original one).
            train_data: the same training data.
            config: replacement config, or ``None`` to reuse the checkpoint's.
            run_config: replacement application config, or ``None`` to reuse the saved one.
            callbacks: progress hooks.
            eval_fn: evaluation function (see :class:`Trainer`).

        Returns:
            The restored trainer; call :meth:`fit` to continue.

        Raises:
            FileNotFoundError: ``run_dir`` has no checkpoint.
            CheckpointError: the checkpoint is corrupt or was not written by a ``Trainer``.
        """
        path = latest_checkpoint(run_dir)
        if path is None:
            raise FileNotFoundError(
                f"no checkpoint to resume from under {Path(run_dir)}/checkpoints"
            )
        ckpt = load_checkpoint(path)
        _check_trainer_state(ckpt)
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
            out_dir=run_dir,
            run_config=run_config,
            callbacks=callbacks,
            eval_fn=eval_fn,
        )
        trainer.restore(ckpt)
        return trainer

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore weights, EMA, optimiser, step and RNG from a checkpoint (or run) directory."""
        self.restore(load_checkpoint(path))

    def restore(self, ckpt: Checkpoint) -> None:
        """Restore the state held by a loaded :class:`Checkpoint`.

        Raises:
            CheckpointError: the checkpoint was not written by a ``Trainer``.
            ValueError: the checkpoint does not fit this trainer (architecture, EMA on/off,
                or more steps done than ``config.steps``); the message names the file.
        """
        _check_trainer_state(ckpt)
        if ckpt.step > self.config.steps:
            raise ValueError(
                f"checkpoint {ckpt.path} is at step {ckpt.step}, beyond config.steps = "
                f"{self.config.steps}; pass a config with more steps to continue"
            )
        try:
            self.model.load_state_dict(ckpt.model)
        except RuntimeError as err:
            raise ValueError(
                f"{ckpt.path / 'model.safetensors'} does not fit the model: {err}"
            ) from None
        if (self.ema is None) != (ckpt.ema is None):
            raise ValueError(
                f"checkpoint {ckpt.path} has_ema={ckpt.ema is not None} but config.ema_decay="
                f"{self.config.ema_decay}; use the same EMA setting as the original run"
            )
        if self.ema is not None and ckpt.ema is not None:
            self.ema.load_state_dict(ckpt.ema)
            self.ema.load_extra_state(ckpt.state.get("ema"), step=ckpt.step)
        self.optimizer.load_state_dict(ckpt.optimizer)
        set_rng_state(ckpt.state["rng"])
        self.step = ckpt.step
        self._start_window(ckpt.step, time.perf_counter())
        self._elapsed_before = float(ckpt.state.get("elapsed", 0.0))
        self._last_loss = float(ckpt.state.get("last_loss", math.nan))
        self.last_checkpoint = ckpt.path
        if self.out_dir is not None and self.dist.is_main:
            _truncate_metrics(self.out_dir / METRICS_FILE, ckpt.step)

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
        self._open_metrics()
        prefetcher = None
        try:
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
            self._run(batches, stop)
            self._finish(stop)
        finally:
            if prefetcher is not None:
                prefetcher.close()
            self._close_metrics()
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
            out = self.objective(self.net, batch.x1, x0=batch.x0, cond=batch.labels, generator=g)
        loss = out.loss.float().mean()
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
        if self.ema is not None:
            self.ema.update()
        self._losses.append(loss.detach())

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _make_prefetcher(self, start: int, stop: int) -> Any | None:
        """A ``PairingPrefetcher`` when the coupling does real work, else ``None``.

        A non-trivial coupling (e.g. minibatch OT) pairs ``x0`` with ``x1`` in a background
        thread, ``depth`` steps ahead; its randomness for step ``k`` comes from
        ``step_generator(mix_seed(seed, rank), 0xC0, k)``, so results do not depend on timing.
        """
        if start >= stop or not _needs_pairing(self.objective):
            return None
        from flowmatch.train.prefetch import PairingPrefetcher  # lazy: optional pipeline

        pair = self.objective.pair  # type: ignore[attr-defined]  # checked in __init__

        def pair_fn(batch: Batch, generator: torch.Generator) -> Tensor:
            return pair(batch.x1, labels=batch.labels, generator=generator)

        return PairingPrefetcher(
            self.batches.batch_at,
            pair_fn,
            seed=mix_seed(self.config.seed, self.dist.rank),
            start_step=start,
        )

    # ------------------------------------------------------------------ bookkeeping
    def _window_stats(self) -> tuple[float, float, int, str]:
        """One host sync: window mean loss and grad norm, and the first non-finite step.

        Returns ``(mean_loss, grad_norm, bad_step, quantity)`` with ``bad_step = 0`` when
        everything is finite. Across ranks the sums are averaged and the earliest bad step
        wins, so every rank raises the same error at the same point.
        """
        n = len(self._losses)  # == self.step - self._window_start
        if n == 0:
            return self._last_loss, math.nan, 0, ""
        losses = torch.stack(self._losses)
        if self.config.grad_clip is not None:
            gnorms, offset = torch.stack(self._gnorms), 0  # measured at every step (clipping)
        elif self._gnorm_step == self.step:
            gnorms, offset = self._gnorms[-1].reshape(1), n - 1  # measured at this log step
        else:
            gnorms, offset = losses[:0], 0  # not measured in this window
        inf = losses.new_tensor(math.inf, dtype=torch.float64)
        stats = torch.stack(
            [
                losses.sum().double(),
                gnorms.sum().double() / max(1, gnorms.numel()),
                _first_nonfinite(losses, inf),
                _first_nonfinite(gnorms, inf) + offset,
            ]
        )
        if self.dist.enabled:
            distributed.all_reduce_(stats[:2], self.dist, "sum")
            distributed.all_reduce_(stats[2:], self.dist, "min")
        loss_sum, gnorm, bad_loss, bad_grad = stats.tolist()
        world = self.dist.world_size
        if gnorms.numel() == 0:
            gnorm = math.nan
        bad = min(bad_loss, bad_grad)
        if bad == math.inf:
            return loss_sum / (n * world), gnorm / world, 0, ""
        quantity = "loss" if bad_loss <= bad_grad else "grad_norm"
        return math.nan, math.nan, self._window_start + int(bad) + 1, quantity

    def _check_finite(self) -> tuple[float, float]:
        loss, gnorm, bad_step, quantity = self._window_stats()
        if bad_step:
            raise NonFiniteError(bad_step, quantity, self.last_checkpoint)
        return loss, gnorm

    def _log(self, step: int) -> None:
        n = step - self._window_start
        loss, gnorm = self._check_finite()
        now = time.perf_counter()
        busy = now - self._t_window - self._paused
        record = {
            "step": step,
            "loss": loss,
            "lr": self._lr,
            "grad_norm": gnorm,
            "steps_per_sec": n / busy if busy > 0 else math.nan,
            "elapsed": self._elapsed_before + now - self._t_fit,
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
            model = self.ema.module_synced() if self.ema is not None else self.model
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    raw = self.eval_fn(model, step)
            finally:
                model.train(was_training)
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
            path = save_checkpoint(
                self.out_dir,
                step,
                model=self.model.state_dict(),
                optimizer=self.optimizer.state_dict(),
                ema=self.ema.state_dict() if self.ema is not None else None,
                extra=self._extra_state(),
                keep=self.config.keep_checkpoints,
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
            "ema": self.ema.extra_state() if self.ema is not None else None,
            "rng": rng_state(),
            "config": self.config.to_dict(),
            "run_config": self.run_config,
            "elapsed": self._elapsed_before + time.perf_counter() - self._t_fit,
            "last_loss": self._last_loss,
            "world_size": self.dist.world_size,
            "flowmatch_version": __version__,
            "torch_version": torch.__version__,
        }

    def _start_window(self, step: int, now: float) -> None:
        """Begin a new logging window after ``step`` (its steps/s is timed from ``now``)."""
        self._window_start, self._t_window, self._paused = step, now, 0.0
        self._losses, self._gnorms = [], []

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

    def _open_metrics(self) -> None:
        if self.out_dir is not None and self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._metrics = open(self.out_dir / METRICS_FILE, "a")  # closed by fit

    def _close_metrics(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    def _write_record(self, record: dict[str, Any]) -> None:
        if self._metrics is not None:
            self._metrics.write(json.dumps(record) + "\n")
            self._metrics.flush()

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


def _check_trainer_state(ckpt: Checkpoint) -> None:
    missing = sorted({"config", "rng"} - set(ckpt.state))
    if missing:
        raise CheckpointError(
            f"{ckpt.path / 'state.json'} lacks {missing}: it was not written by Trainer, so it "
            f"holds weights only; load them with model.load_state_dict(load_checkpoint(...).model)"
        )


def _needs_pairing(objective: Any) -> bool:
    """Whether the objective's coupling does real work (anything but the independent one)."""
    coupling = getattr(objective, "coupling", None)
    return coupling is not None and not isinstance(coupling, IndependentCoupling)


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


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records after ``step`` (written after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= step]
    if len(keep) != len(lines):
        atomic_write_text(path, "".join(keep))


def _check_device(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config.device is {str(device)!r} but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"config.device is {str(device)!r} but MPS is not available")


def _check_arguments(
    model: Any,
    objective: Any,
    train_data: Any,
    config: Any,
    run_config: Any,
    callbacks: Any,
    eval_fn: Any,
) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(objective):
        raise TypeError(
            f"objective must be callable like FlowMatchingObjective, got {type(objective).__name__}"
        )
    if _needs_pairing(objective) and not callable(getattr(objective, "pair", None)):
        raise TypeError(
            f"objective {type(objective).__name__} has a coupling "
            f"({type(objective.coupling).__name__}) but no pair(x1, *, labels, generator) method"
        )
    if not isinstance(train_data, ArrayDataset):
        raise TypeError(f"train_data must be an ArrayDataset, got {type(train_data).__name__}")
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
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"eval_fn must be callable (model, step) -> dict, got {eval_fn!r}")


__all__ = ["NonFiniteError", "TrainResult", "Trainer"]
