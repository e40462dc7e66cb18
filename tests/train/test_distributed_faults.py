"""Distributed faults: a stopped rank ends the run within train.dist_timeout with one line
naming it, and ranks other than 0 never touch the run directory.

The end-to-end tests start 2 CPU ranks (gloo) of the real CLI (~30 s each on 2 shared cores:
marked slow, run with ``pytest -m slow``); the default run checks the same logic in-process:
the timeout reaches the process group, a failed collective becomes one line naming the
silent rank, found through the rendezvous store.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from flowmatch.train import distributed
from flowmatch.train.distributed import DistributedContext, RankTimeoutError

WORKER = Path(__file__).with_name("_ddp_cli_worker.py")
TIMEOUT = 3  # train.dist_timeout of these runs, seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path, out, steps, extra=()):
    port = _free_port()
    argv = [
        "train", "--out", str(out), "--steps", str(steps), "--quiet",
        "--set", "model.hidden=16", "--set", "model.depth=2", "--set", "data.n_train=512",
        "--set", "data.n_test=256", "--set", "train.batch_size=16",
        "--set", "train.log_every=5", "--set", "train.checkpoint_every=50",
        "--set", "sample.num_samples=50", "--set", f"train.dist_timeout={TIMEOUT}",
        *extra,
    ]  # fmt: skip
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(out), "--", *argv],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def _stop_all(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()  # SIGKILL also ends a stopped process
        p.wait(timeout=30)


@pytest.mark.slow
def test_two_ranks_train_and_rank1_never_touches_the_run_directory(tmp_path):
    out = tmp_path / "run"
    procs = _launch(tmp_path, out, steps=20)
    try:
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        _stop_all(procs)
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-2000:]  # rank 1 exits 3 with an AUDIT line on a write
    info = json.loads((out / "config.json").read_text())
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 20 and info["run_id"]
    assert not (out / ".lock").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stopped", [1, 0])
def test_a_stopped_rank_ends_the_run_within_the_timeout_with_one_line(tmp_path, stopped):
    out = tmp_path / "run"
    procs = _launch(tmp_path, out, steps=100_000)
    survivor = procs[1 - stopped]
    try:
        deadline = time.monotonic() + 90
        metrics = out / "metrics.jsonl"
        while not (metrics.is_file() and metrics.stat().st_size > 0):  # training is under way
            assert time.monotonic() < deadline, "training did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.2)
        os.kill(procs[stopped].pid, signal.SIGSTOP)
        t0 = time.monotonic()
        _, err = survivor.communicate(timeout=60)
        waited = time.monotonic() - t0
    finally:
        _stop_all(procs)
    # The timeout, a grace period for the other ranks to answer (<= 5 s), and slack.
    assert waited < TIMEOUT + 5 + 10, waited
    assert survivor.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert (
        f"rank {stopped} of 2 did not respond within {TIMEOUT} s (train.dist_timeout)" in (lines[0])
    )


# ------------------------------------------------------------------------ in-process (fast)

GLOO_TIMEOUT = (
    "[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
    "3000ms for recv operation to complete"
)


def test_the_timeout_reaches_the_process_group(monkeypatch):
    seen = {}
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: seen.update(kw))
    for var, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(var, value)
    ctx, _ = distributed.setup_distributed("cpu", timeout=7.5)
    assert ctx.rank == 1 and ctx.owns_group
    assert seen["timeout"].total_seconds() == 7.5 and seen["backend"] == "gloo"


def test_a_rank_that_never_joins_is_one_line(monkeypatch):
    def hang(**kw):
        raise RuntimeError("Timed out after 4 seconds waiting for clients. 1/2 clients joined.")

    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", hang)
    for var, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(
        RankTimeoutError, match=r"the process group of 2 ranks did not form within 4 s"
    ):
        distributed.setup_distributed("cpu", timeout=4)


def test_train_config_dist_timeout():
    from flowmatch.train import TrainConfig

    assert TrainConfig().dist_timeout == 300.0
    with pytest.raises(ValueError, match=r"dist_timeout must be > 0, got 0"):
        TrainConfig(dist_timeout=0)


def test_comm_failures_are_recognised():
    assert distributed.is_comm_failure(RuntimeError(GLOO_TIMEOUT))
    assert distributed.is_comm_failure(RuntimeError("Connection closed by peer [127.0.0.1]:1"))
    assert not distributed.is_comm_failure(
        RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    )
    assert not distributed.is_comm_failure(ValueError("timed out"))


@pytest.fixture
def store(monkeypatch):
    hs = dist.HashStore()
    monkeypatch.setattr(distributed, "_store", lambda: hs)
    monkeypatch.setattr(distributed, "_BROKEN", False)
    return hs


def test_the_silent_rank_is_named(store):
    ctx = DistributedContext(rank=0, world_size=3)
    store.set("flowmatch/alive//0/2", "1")  # rank 2 answered, rank 1 did not
    err = distributed.unresponsive_error(
        ctx, RuntimeError(GLOO_TIMEOUT), timeout=2, where="at step 12"
    )
    text = str(err)
    assert "\n" not in text
    assert text.startswith("rank 1 of 3 did not respond within 2 s (train.dist_timeout)")
    assert "rank 0 stops at step 12 (" in text and "Timed out waiting 3000ms" in text
    assert distributed._BROKEN  # cleanup will not wait for the silent rank


def test_a_store_that_does_not_answer_means_rank0_is_silent(monkeypatch):
    class Stuck:
        def set_timeout(self, _):
            pass

        def set(self, *_):
            pass

        def check(self, _):
            time.sleep(60)  # a store whose host process is stopped never answers

    monkeypatch.setattr(distributed, "_store", lambda: Stuck())
    monkeypatch.setattr(distributed, "_BROKEN", False)
    t0 = time.monotonic()
    err = distributed.unresponsive_error(
        DistributedContext(rank=1, world_size=2), RuntimeError(GLOO_TIMEOUT), timeout=2, where="x"
    )
    assert time.monotonic() - t0 < 6  # grace (1 s) + 2 s for the probe thread
    assert str(err).startswith("rank 0 of 2 did not respond within 2 s")
    assert "the rendezvous store does not answer either" in str(err)


def test_the_trainer_turns_a_failed_collective_into_one_line(store, monkeypatch):
    from flowmatch.data import ArrayDataset
    from flowmatch.models import MLP
    from flowmatch.objectives import FlowMatchingObjective
    from flowmatch.train import TrainConfig, Trainer

    trainer = Trainer(
        MLP(2, hidden=8, depth=1, time_dim=8),
        FlowMatchingObjective(),
        ArrayDataset(torch.randn(64, 2)),
        TrainConfig(steps=4, batch_size=8, log_every=2, dist_timeout=1),
    )
    # Pretend to be rank 0 of 2 whose all-reduce of the logging window times out.
    trainer.dist = DistributedContext(rank=0, world_size=2)

    def fail(*args, **kwargs):
        raise RuntimeError(GLOO_TIMEOUT)

    monkeypatch.setattr(distributed, "all_reduce_", fail)
    with pytest.raises(
        RankTimeoutError, match=r"^rank 1 of 2 did not respond within 1 s .* at step"
    ):
        trainer.fit()
