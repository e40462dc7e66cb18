"""Background pairing: draw and couple ``x0`` for upcoming steps while the current step trains.

Exact minibatch OT costs a few milliseconds per batch on the CPU, comparable to a small
model's training step. The :class:`PairingPrefetcher` computes the pairs of steps
``k + 1 .. k + depth`` in a daemon thread while step ``k`` trains. The assignment solvers
release the GIL (numba ``nogil`` kernels, scipy's C++ solver, torch ops), so on a machine
with a spare core the pairing cost disappears from the step time (docs/couplings.md).

Determinism: the randomness of step ``k`` comes only from
``step_generator(seed, 0xC0, k)``, so the stream equals that of the synchronous loop
``pair_fn(batch_fn(k), step_generator(seed, 0xC0, k))`` whatever the thread timing, and a run
resumed at ``start_step`` reproduces an uninterrupted one.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from types import TracebackType

import torch
from torch import Tensor

from flowmatch.data.batch import Batch
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.tensor import step_generator

logger = logging.getLogger(__name__)

#: Stream id mixed into the per-step seed of the pairing randomness (source draw, coupling).
PAIRING_STREAM = 0xC0

# How often (s) a blocked worker or consumer re-checks whether the other side is gone.
_POLL_S = 0.05


@dataclass(frozen=True)
class _Item:
    step: int
    batch: Batch | None
    error: BaseException | None


def _work(
    batch_fn: Callable[[int], Batch],
    pair_fn: Callable[[Batch, torch.Generator], Tensor | Batch],
    seed: int,
    step: int,
    out: queue.Queue[_Item],
    stop: threading.Event,
) -> None:
    """Worker loop. Holds no reference to the prefetcher, so dropping it lets GC close it."""
    while not stop.is_set():
        try:
            batch = batch_fn(step)
            result = pair_fn(batch, step_generator(seed, PAIRING_STREAM, step))
            prepared = result if isinstance(result, Batch) else None  # TrainingStep.prepare
            x0 = prepared.x0 if prepared is not None else result
            if not isinstance(x0, Tensor) or x0.shape != batch.x1.shape:
                got = tuple(x0.shape) if isinstance(x0, Tensor) else type(x0).__name__
                raise ValueError(
                    f"pair_fn must return x0 shaped like batch.x1 {tuple(batch.x1.shape)}, "
                    f"got {got}"
                )
            item = _Item(step, prepared or replace(batch, x0=x0), None)
        except BaseException as exc:  # forwarded to the consumer, which re-raises it
            item = _Item(step, None, exc)
        while not stop.is_set():
            try:
                out.put(item, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        if item.error is not None:
            return
        step += 1


class PairingPrefetcher(Iterator[tuple[int, Batch]]):
    """Iterator over ``(step, batch)`` with ``batch.x0`` paired ``depth`` steps ahead.

    For ``k = start_step, start_step + 1, ...`` it yields ``(k, replace(b, x0=x0))`` with
    ``b = batch_fn(k)`` and ``x0 = pair_fn(b, step_generator(seed, 0xC0, k))``, computed in
    a daemon thread that stays at most ``depth`` finished batches ahead of the consumer.
    ``batch_fn`` and ``pair_fn`` are only ever called from that thread, one step at a time,
    in step order.

    Args:
        batch_fn: the data batch of a step, e.g. ``BatchSchedule.batch_at``.
        pair_fn: ``(batch, generator) -> x0`` shaped like ``batch.x1``, or the prepared
            ``Batch`` (with ``x0``) of a ``TrainingStep.prepare``; all its randomness must
            come from ``generator``, e.g.
            ``lambda b, g: objective.pair(b.x1, labels=b.labels, generator=g)``.
        seed: base seed of the per-step generators.
        start_step: first step to produce (``> 0`` when resuming).
        depth: number of finished batches kept ready (queue size), ``>= 1``.

    Raises:
        TypeError: if ``batch_fn``/``pair_fn`` are not callable or ``seed``/``start_step``/
            ``depth`` are not ints.
        ValueError: if ``start_step < 0`` or ``depth < 1``.
        RuntimeError: from ``next()``, naming the step, when ``batch_fn`` or ``pair_fn``
            raised in the worker (the original exception is chained as ``__cause__``), or
            when the prefetcher is closed.

    Example:
        >>> import torch
        >>> from flowmatch.data.batch import Batch
        >>> batch_fn = lambda k: Batch(x1=torch.full((4, 2), float(k)))
        >>> pair_fn = lambda b, g: torch.randn(b.x1.shape, generator=g)
        >>> with PairingPrefetcher(batch_fn, pair_fn, seed=0, start_step=10) as batches:
        ...     step, batch = next(batches)
        >>> step, batch.x0.shape
        (10, torch.Size([4, 2]))
    """

    def __init__(
        self,
        batch_fn: Callable[[int], Batch],
        pair_fn: Callable[[Batch, torch.Generator], Tensor | Batch],
        *,
        seed: int,
        start_step: int,
        depth: int = 2,
    ) -> None:
        for name, fn in (("batch_fn", batch_fn), ("pair_fn", pair_fn)):
            if not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
        check_positive_int(start_step, "start_step", minimum=0)
        check_positive_int(depth, "depth")
        self.depth = depth
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._next_step = start_step
        self._closed = False
        self._thread = threading.Thread(
            target=_work,
            args=(batch_fn, pair_fn, seed, start_step, self._queue, self._stop),
            name=f"flowmatch-pairing-{start_step}",
            daemon=True,  # never keeps the interpreter alive
        )
        self._thread.start()
        logger.debug("pairing prefetcher started at step %d (depth %d)", start_step, depth)

    def __iter__(self) -> PairingPrefetcher:
        return self

    def __next__(self) -> tuple[int, Batch]:
        """Return ``(step, batch)`` for the next step, waiting for the worker if needed."""
        if self._closed:
            raise RuntimeError("PairingPrefetcher is closed; create a new one to continue")
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self.close()
                    raise RuntimeError(
                        f"PairingPrefetcher worker stopped before producing step {self._next_step}"
                    ) from None
        if item.error is not None:
            self.close()
            raise RuntimeError(
                f"PairingPrefetcher: pairing step {item.step} failed in the background "
                f"worker: {type(item.error).__name__}: {item.error}"
            ) from item.error
        assert item.step == self._next_step and item.batch is not None  # worker invariant
        self._next_step += 1
        return item.step, item.batch

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the worker and wait up to ``timeout`` seconds for it (idempotent).

        The worker finishes the step it is computing, then exits; pending batches are dropped.
        """
        self._closed = True
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning(
                    "pairing worker still busy after %s s; it is a daemon thread and will "
                    "exit after its current step",
                    timeout,
                )

    def __enter__(self) -> PairingPrefetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Only signal: joining in a finaliser could block garbage collection.
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
