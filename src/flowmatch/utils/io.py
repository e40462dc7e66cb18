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


def write_error(path: str | Path, err: OSError) -> OSError:
    """``err`` re-worded to name ``path``: ``[Errno 28] could not write P: No space left ...``.

    The errno (and so the subclass, e.g. ``PermissionError``) is kept; the message names the
    file the caller meant to write, not a temporary sibling.
    """
    if err.errno is None:
        return OSError(f"could not write {path}: {err}")
    return OSError(err.errno, f"could not write {path}: {err.strerror}")


def write_bytes_durable(path: str | Path, data: bytes, *, name: str | Path | None = None) -> None:
    """Write ``data`` to ``path`` and fsync it (not atomic by itself).

    Raises:
        OSError: the write failed (disk full, permissions, ...); the message names ``name``
            (default ``path``).
    """
    try:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise write_error(name if name is not None else path, err) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically: temporary sibling, fsync, ``os.replace``.

    Readers see the old or the new content, never a partial file; an interrupted write leaves
    at most a ``.tmp-`` sibling behind.

    Args:
        path: the destination file; its directory must exist.
        data: the full new content.

    Raises:
        OSError: the write failed; the message names ``path`` (e.g. ``[Errno 28] could not
            write runs/a/config.json: No space left on device``) and ``path`` is unchanged.
    """
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex}")
    try:
        write_bytes_durable(tmp, data, name=path)
        try:
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as err:
            raise write_error(path, err) from None
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """``atomic_write_bytes`` for UTF-8 text."""
    atomic_write_bytes(path, text.encode())
