"""``metrics.jsonl``: one JSON record per line, read strictly except for a crash's torn tail.

The trainer appends one record per logging point. A crash (``kill -9``, power loss) during an
append can leave the last line incomplete; that is the only damage an append-only file can
suffer, so it is tolerated: :func:`read_metrics` reports it separately and
:func:`truncate_metrics` (run on resume) drops it with a log note. Anything malformed before
the last line, and any record without an integer ``step``, is an error naming the file and
the line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowmatch.utils.io import atomic_write_bytes

logger = logging.getLogger(__name__)


class MetricsError(ValueError):
    """A ``metrics.jsonl`` line is malformed (the message names the file and the line)."""


@dataclass(frozen=True)
class MetricsLog:
    """The content of a ``metrics.jsonl``.

    Attributes:
        records: the records, in file order (each a dict with an int ``step``).
        lines: each record's line as stored (bytes, without the newline).
        torn: the incomplete last line a crash left (``None`` if the file ends cleanly).
    """

    records: list[dict[str, Any]]
    lines: list[bytes]
    torn: bytes | None = None


def read_metrics(path: str | Path) -> MetricsLog:
    """Read and check ``metrics.jsonl`` (an absent file is empty).

    Raises:
        MetricsError: a line other than an unterminated last one is not a JSON object, or a
            record lacks an integer ``step >= 0`` (the message names the file and line).
    """
    path = Path(path)
    if path.is_dir():
        raise MetricsError(f"{path} is a directory, not a metrics file")
    if not path.exists():
        return MetricsLog([], [])
    chunks = path.read_bytes().split(b"\n")
    records: list[dict[str, Any]] = []
    lines: list[bytes] = []
    torn = None
    for number, line in enumerate(chunks, 1):
        if not line.strip():
            continue
        unterminated = number == len(chunks)  # after the last newline: an interrupted append
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if unterminated:
                torn = line
                continue
            raise MetricsError(f"{path} line {number} is not a JSON record: {err}") from None
        if not isinstance(record, dict):
            raise MetricsError(f"{path} line {number} is not a JSON object: {line[:80]!r}")
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise MetricsError(
                f"{path} line {number} has no integer 'step' (got {step!r}); every record "
                "needs the step it was logged at"
            )
        records.append(record)
        lines.append(line)
    return MetricsLog(records, lines, torn)


def truncate_metrics(path: str | Path, step: int) -> None:
    """Keep the records up to ``step`` (the checkpoint a run resumes from); drop a torn tail.

    Rewrites the file atomically only when something is dropped, and logs what was.

    Raises:
        MetricsError: as :func:`read_metrics` (checked before anything is rewritten).
    """
    path = Path(path)
    log = read_metrics(path)
    keep = [ln for ln, rec in zip(log.lines, log.records, strict=True) if rec["step"] <= step]
    if len(keep) == len(log.lines) and log.torn is None:
        if path.is_file() and not path.read_bytes().endswith(b"\n") and keep:
            atomic_write_bytes(path, b"".join(ln + b"\n" for ln in keep))
        return
    if log.torn is not None:
        logger.warning(
            "%s: dropping an incomplete last line (%d bytes) left by an interrupted run",
            path,
            len(log.torn),
        )
    if len(keep) != len(log.lines):
        logger.info(
            "%s: dropping %d records after step %d (written after the checkpoint resumed from)",
            path,
            len(log.lines) - len(keep),
            step,
        )
    atomic_write_bytes(path, b"".join(ln + b"\n" for ln in keep))


__all__ = ["MetricsError", "MetricsLog", "read_metrics", "truncate_metrics"]
