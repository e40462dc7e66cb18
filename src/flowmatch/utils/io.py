"""Durable, atomic file writes shared by checkpoints, run files and caches."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

#: Prefix of temporary siblings; readers and cleaners skip names starting with it.
TMP_PREFIX = ".tmp-"


def fsync_dir(path: str | Path) -> None:
    """Persist a rename or creation inside directory ``path`` (no-op where unsupported)."""
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_durable(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (not atomic by itself)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically: temporary sibling, fsync, ``os.replace``.

    Readers see the old or the new content, never a partial file; an interrupted write leaves
    at most a ``.tmp-`` sibling behind.

    Args:
        path: the destination file; its directory must exist.
        data: the full new content.
    """
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex}")
    try:
        write_bytes_durable(tmp, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """``atomic_write_bytes`` for UTF-8 text."""
    atomic_write_bytes(path, text.encode())
