"""A dependency-free progress bar fed by trainer callbacks (loss, steps/s, ETA)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(seconds))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressBar:
    """Trainer callback drawing ``step/total [bar] loss, it/s, ETA`` on a terminal.

    On a non-terminal stream (CI logs, files) it prints one line per log event instead of
    redrawing.
    """

    def __init__(self, total_steps: int, *, stream: TextIO | None = None, width: int = 24) -> None:
        self.total = total_steps
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.start_step = 0

    def on_train_start(self, trainer: Any) -> None:
        """Remember where a (possibly resumed) run starts."""
        self.start = time.perf_counter()
        self.start_step = int(getattr(trainer, "step", 0))

    def on_log(self, step: int, logs: dict[str, float]) -> None:
        """Redraw with the latest logged values."""
        frac = min(1.0, step / max(1, self.total))
        done = int(self.width * frac)
        rate = logs.get("steps_per_sec", 0.0)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        line = (
            f"step {step:>{len(str(self.total))}}/{self.total} "
            f"[{'#' * done}{'.' * (self.width - done)}] "
            f"loss {logs.get('loss', float('nan')):.4f}  {rate:.1f} it/s  "
            f"ETA {_fmt_time(eta) if eta == eta else '--:--'}"
        )
        if self.tty:
            self.stream.write("\r" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def on_eval(self, step: int, results: dict[str, float]) -> None:
        """Print evaluation results on their own line."""
        text = ", ".join(f"{k} {v:.4g}" for k, v in results.items())
        self.stream.write(("\n" if self.tty else "") + f"eval @ {step}: {text}\n")

    def on_checkpoint(self, step: int, path: Any) -> None:
        """Checkpoints are silent (listed by ``flowmatch info``)."""

    def on_train_end(self, result: Any) -> None:
        """Finish the line and print a summary."""
        if self.tty:
            self.stream.write("\n")
        elapsed = time.perf_counter() - self.start
        self.stream.write(
            f"trained to step {getattr(result, 'step', '?')} in {_fmt_time(elapsed)}\n"
        )
        self.stream.flush()
