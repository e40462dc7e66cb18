"""Progress reporting: the trainer calls these hooks; the CLI turns them into a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from flowmatch.train.loop import Trainer, TrainResult

CALLBACK_METHODS: tuple[str, ...] = (
    "on_train_start",
    "on_log",
    "on_eval",
    "on_checkpoint",
    "on_train_end",
)


@runtime_checkable
class Callback(Protocol):
    """Hooks called by :class:`~flowmatch.train.loop.Trainer` on rank 0.

    Subclass it and override only the hooks you need (the others do nothing). Hooks run on
    the host between steps, at logging points only, so they never slow the step loop down.

    Example:
        >>> class PrintLoss(Callback):
        ...     def on_log(self, step, logs):
        ...         print(step, round(logs["loss"], 3))
    """

    def on_train_start(self, trainer: Trainer) -> None:
        """Called once at the start of ``fit`` (``trainer.step`` is the starting step)."""

    def on_log(self, step: int, logs: dict[str, float]) -> None:
        """Called every ``log_every`` steps with the metrics record (loss, lr, grad_norm, ...)."""

    def on_eval(self, step: int, results: dict[str, float]) -> None:
        """Called after each evaluation with the results of ``eval_fn``."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """Called after a checkpoint has been written completely to ``path``."""

    def on_train_end(self, result: TrainResult) -> None:
        """Called once when ``fit`` returns normally."""


class History(Callback):
    """Keeps every record in memory (for notebooks and tests).

    Attributes:
        logs: ``{"step": s, **logs}`` per logging point.
        evals: ``{"step": s, **results}`` per evaluation.
        checkpoints: ``(step, path)`` per checkpoint.
        result: the :class:`~flowmatch.train.loop.TrainResult` of the last ``fit``.
    """

    def __init__(self) -> None:
        self.logs: list[dict[str, float]] = []
        self.evals: list[dict[str, float]] = []
        self.checkpoints: list[tuple[int, Path]] = []
        self.result: TrainResult | None = None

    def on_log(self, step: int, logs: dict[str, float]) -> None:
        """Append ``{"step": step, **logs}`` to :attr:`logs`."""
        self.logs.append({"step": step, **logs})

    def on_eval(self, step: int, results: dict[str, float]) -> None:
        """Append ``{"step": step, **results}`` to :attr:`evals`."""
        self.evals.append({"step": step, **results})

    def on_checkpoint(self, step: int, path: Path) -> None:
        """Append ``(step, path)`` to :attr:`checkpoints`."""
        self.checkpoints.append((step, path))

    def on_train_end(self, result: TrainResult) -> None:
        """Store ``result``."""
        self.result = result

    def losses(self) -> list[float]:
        """The logged losses in order."""
        return [rec["loss"] for rec in self.logs]
