"""One writer per run directory: an advisory lock file holding the writer's pid and host.

``RUN_DIR/.lock`` is created by the first writer and locked with ``fcntl.flock``; it names
its holder (``pid``, ``host``, start time). A second writer gets one line naming the holder.
The operating system drops an ``flock`` when its process dies (even on ``kill -9``), so a
lock file left behind by a crashed run is not locked any more: the next writer takes it over
and logs a note naming the dead holder. The file is removed when the holder releases it.

The lock is re-entrant within a process (``api.train_run`` holds it around the whole run and
the trainer's ``fit`` takes it again), and only rank 0 of a data-parallel job takes it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from flowmatch.utils.io import write_error

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"

try:  # POSIX; elsewhere the lock degrades to the exclusive creation of the file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunLockedError(RuntimeError):
    """Another process is writing the run directory (the message names it)."""


#: Locks held by this process: real path -> [file descriptor, depth].
_HELD: dict[str, list[int]] = {}


def _describe(holder: dict[str, Any]) -> str:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    since = holder.get("since")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
    return f"pid {pid} on {host}{when}"


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive(pid: Any) -> bool:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _locked_error(run_dir: Path, holder: dict[str, Any]) -> RunLockedError:
    return RunLockedError(
        f"run directory {run_dir} is being written by {_describe(holder)} (lock file "
        f"{run_dir / LOCK_FILE}); wait for that run to finish or stop it"
    )


def check_unlocked(run_dir: str | Path) -> None:
    """Raise if another process holds the lock of ``run_dir``; writes nothing.

    Raises:
        RunLockedError: naming the holder's pid and host.
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    if fcntl is None or os.path.realpath(run_dir) in _HELD or not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _locked_error(run_dir, _read_holder(path)) from None
    finally:
        os.close(fd)


def acquire(run_dir: str | Path) -> None:
    """Take the lock of ``run_dir`` (which must exist) for this process.

    Raises:
        RunLockedError: another live process holds it (the message names pid and host).
    """
    run_dir = Path(run_dir)
    key = os.path.realpath(run_dir)
    if key in _HELD:
        _HELD[key][1] += 1
        return
    path = run_dir / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:  # pragma: no cover
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _locked_error(run_dir, _read_holder(path)) from None
        # The previous holder may have removed the file between our open and flock: then we
        # locked an unlinked inode, and must retry on the new file.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    previous = _read_holder(path)
    host = socket.gethostname()
    if previous and (previous.get("pid"), previous.get("host")) != (os.getpid(), host):
        if previous.get("host") != host:
            dead = ""
        elif _alive(previous.get("pid")):
            dead = " (pid reused; it does not hold the lock)"
        else:
            dead = " (no longer running)"
        logger.warning(
            "taking over the stale lock of run directory %s left by %s%s",
            run_dir,
            _describe(previous),
            dead,
        )
    me = {"pid": os.getpid(), "host": host, "since": time.time()}
    try:  # informational (the flock is the lock): no fsync needed
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
    except OSError as err:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise write_error(path, err) from None
    _HELD[key] = [fd, 1]


def release(run_dir: str | Path) -> None:
    """Release one level of this process's lock of ``run_dir`` (removing the file at the last)."""
    key = os.path.realpath(run_dir)
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] > 0:
        return
    del _HELD[key]
    # Unlink while still holding the lock: a waiter that opened the old file retries (above).
    Path(run_dir, LOCK_FILE).unlink(missing_ok=True)
    os.close(held[0])


class RunLock:
    """``with RunLock(run_dir):`` holds the run directory's lock (see the module docstring).

    Args:
        run_dir: the run directory (created if missing).
        enabled: ``False`` makes it a no-op (ranks other than 0).
    """

    def __init__(self, run_dir: str | Path, *, enabled: bool = True) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled

    def __enter__(self) -> RunLock:
        if self.enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            acquire(self.run_dir)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            release(self.run_dir)


__all__ = ["LOCK_FILE", "RunLock", "RunLockedError", "acquire", "check_unlocked", "release"]
