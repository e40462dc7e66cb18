"""The run-directory lock: one writer, a second one gets one line naming the holder, the
lock of a dead process is taken over with a note."""

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from flowmatch.train import lock
from flowmatch.train.lock import LOCK_FILE, RunLock, RunLockedError

HOLDER = textwrap.dedent(
    """
    import fcntl, json, os, socket, sys, time
    path = sys.argv[1]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.time()}).encode())
    print("locked", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path (the same protocol, plain Python)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / LOCK_FILE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, holder):
    host = socket.gethostname()
    match = rf"run directory {tmp_path} is being written by pid {holder.pid} on {host} since"
    with pytest.raises(RunLockedError, match=match):
        lock.check_unlocked(tmp_path)
    with pytest.raises(RunLockedError, match=match + r".*wait for that run to finish or stop it"):
        with RunLock(tmp_path):
            pass
    holder.kill()
    holder.wait()
    with RunLock(tmp_path):  # the holder died: its flock went with it
        pass


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    stale = {"pid": int(dead), "host": socket.gethostname(), "since": 0}
    (tmp_path / LOCK_FILE).write_text(json.dumps(stale))
    with caplog.at_level(logging.WARNING, logger="flowmatch.train.lock"):
        with RunLock(tmp_path):
            held = json.loads((tmp_path / LOCK_FILE).read_text())
            assert held["pid"] == os.getpid()
    assert f"taking over the stale lock of run directory {tmp_path} left by pid {dead}" in (
        caplog.text
    )
    assert "(no longer running)" in caplog.text
    assert not (tmp_path / LOCK_FILE).exists()  # released: removed


def test_the_lock_is_reentrant_in_a_process_and_checking_writes_nothing(tmp_path):
    lock.check_unlocked(tmp_path / "missing")  # nothing to check, nothing created
    assert not (tmp_path / "missing").exists()
    with RunLock(tmp_path):
        with RunLock(tmp_path):  # api.train_run holds it, the trainer's fit takes it again
            lock.check_unlocked(tmp_path)
        assert (tmp_path / LOCK_FILE).exists()
    assert not (tmp_path / LOCK_FILE).exists()
    with RunLock(tmp_path / "rank1", enabled=False):
        pass
    assert not (tmp_path / "rank1").exists()
