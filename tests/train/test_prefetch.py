"""PairingPrefetcher: equals the synchronous loop, forwards errors, shuts down cleanly."""

import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

from flowmatch.couplings import ExactOTCoupling
from flowmatch.data.batch import Batch
from flowmatch.objectives.flow_matching import FlowMatchingObjective
from flowmatch.train.prefetch import PAIRING_STREAM, PairingPrefetcher
from flowmatch.utils.tensor import step_generator

SEED = 1234


def batch_fn(step: int) -> Batch:
    g = torch.Generator().manual_seed(step)
    return Batch(x1=torch.randn(16, 2, generator=g), labels=torch.arange(16) % 3)


def make_pair_fn(jitter: bool = False):
    objective = FlowMatchingObjective(coupling=ExactOTCoupling())

    def pair_fn(batch: Batch, g: torch.Generator) -> torch.Tensor:
        if jitter:  # timing noise that must not change the output
            time.sleep(0.001 * (hash((batch.x1[0, 0].item(), 7)) % 5))
        return objective.pair(batch.x1, labels=batch.labels, generator=g)

    return pair_fn


def synchronous(pair_fn, start: int, count: int) -> list[tuple[int, Batch]]:
    out = []
    for k in range(start, start + count):
        b = batch_fn(k)
        out.append(
            (
                k,
                Batch(
                    x1=b.x1, labels=b.labels, x0=pair_fn(b, step_generator(SEED, PAIRING_STREAM, k))
                ),
            )
        )
    return out


@pytest.mark.parametrize("depth", [1, 3])
def test_equals_synchronous_loop_regardless_of_timing(depth):
    expected = synchronous(make_pair_fn(), start=5, count=12)
    with PairingPrefetcher(
        batch_fn, make_pair_fn(jitter=True), seed=SEED, start_step=5, depth=depth
    ) as pf:
        got = []
        for i, item in enumerate(pf):
            if i % 4 == 0:
                time.sleep(0.01)  # a slow consumer lets the worker run ahead
            got.append(item)
            if len(got) == 12:
                break
    for (k, b), (k_ref, b_ref) in zip(got, expected, strict=True):
        assert k == k_ref
        assert b.x0 is not None and b.x0.shape == b.x1.shape == (16, 2)
        assert torch.equal(b.x1, b_ref.x1) and torch.equal(b.labels, b_ref.labels)
        assert torch.equal(b.x0, b_ref.x0)  # bit-identical pairs


def test_resumed_stream_equals_uninterrupted():
    with PairingPrefetcher(batch_fn, make_pair_fn(), seed=SEED, start_step=0) as pf:
        full = [next(pf) for _ in range(6)]
    with PairingPrefetcher(batch_fn, make_pair_fn(), seed=SEED, start_step=3) as pf:
        resumed = [next(pf) for _ in range(3)]
    for (k, b), (k2, b2) in zip(full[3:], resumed, strict=True):
        assert k == k2 and torch.equal(b.x0, b2.x0)


def test_stays_at_most_depth_ahead():
    calls: list[int] = []

    def counting_batch_fn(step: int) -> Batch:
        calls.append(step)
        return batch_fn(step)

    with PairingPrefetcher(counting_batch_fn, make_pair_fn(), seed=0, start_step=0, depth=2) as pf:
        next(pf)
        time.sleep(0.2)  # plenty of time to run ahead, if it (wrongly) would
        # Consumed 1; the queue holds <= depth; the worker may hold one more finished batch.
        assert max(calls) <= 1 + 2
        assert calls == sorted(calls)  # one step at a time, in order


def test_worker_error_reraised_naming_the_step():
    calls = [0]

    def failing_pair_fn(batch: Batch, g: torch.Generator) -> torch.Tensor:
        if calls[0] == 3:  # the 4th step (13) fails
            raise ValueError("solver exploded")
        calls[0] += 1
        return torch.randn(batch.x1.shape, generator=g)

    pf = PairingPrefetcher(batch_fn, failing_pair_fn, seed=0, start_step=10)
    assert [next(pf)[0] for _ in range(3)] == [10, 11, 12]
    with pytest.raises(
        RuntimeError, match=r"pairing step 13 failed.*ValueError: solver exploded"
    ) as info:
        next(pf)
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(RuntimeError, match=r"PairingPrefetcher is closed"):
        next(pf)


def test_pair_fn_wrong_shape_is_reported():
    pf = PairingPrefetcher(batch_fn, lambda b, g: b.x1[:3], seed=0, start_step=0)
    with pytest.raises(
        RuntimeError, match=r"step 0 failed.*shaped like batch.x1 \(16, 2\), got \(3, 2\)"
    ):
        next(pf)


def test_close_is_idempotent_and_stops_thread():
    pf = PairingPrefetcher(batch_fn, make_pair_fn(), seed=0, start_step=0)
    next(pf)
    pf.close()
    pf.close()
    assert not pf._thread.is_alive()
    assert pf._thread.daemon
    with pytest.raises(RuntimeError, match=r"closed"):
        next(pf)


def test_garbage_collected_prefetcher_stops_worker():
    before = threading.active_count()
    pf = PairingPrefetcher(batch_fn, make_pair_fn(), seed=0, start_step=0)
    thread = pf._thread
    next(pf)
    del pf  # no reference cycle: the worker holds no reference to the prefetcher
    thread.join(5.0)  # a few poll intervals; 5 s is a loose bound on a loaded machine
    assert not thread.is_alive()
    assert threading.active_count() <= before


def test_no_hang_at_interpreter_exit_without_close():
    script = textwrap.dedent(
        """
        import time, torch
        from flowmatch.data.batch import Batch
        from flowmatch.train.prefetch import PairingPrefetcher
        def slow(b, g):
            time.sleep(0.5)
            return torch.randn(b.x1.shape, generator=g)
        pf = PairingPrefetcher(lambda k: Batch(x1=torch.zeros(4, 2)), slow, seed=0, start_step=0)
        next(pf)
        keep = pf  # still referenced at exit, never closed
        print("done")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"batch_fn": None}, TypeError, r"batch_fn must be callable, got NoneType"),
        ({"pair_fn": 3}, TypeError, r"pair_fn must be callable, got int"),
        ({"seed": 1.5}, TypeError, r"seed must be an int, got 1.5"),
        ({"start_step": -1}, ValueError, r"start_step must be >= 0, got -1"),
        ({"start_step": 2.0}, TypeError, r"start_step must be an int"),
        ({"depth": 0}, ValueError, r"depth must be >= 1, got 0"),
    ],
)
def test_argument_errors(kwargs, err, match):
    args = {"batch_fn": batch_fn, "pair_fn": make_pair_fn(), "seed": 0, "start_step": 0}
    args.update(kwargs)
    fns = (args.pop("batch_fn"), args.pop("pair_fn"))
    with pytest.raises(err, match=match):
        PairingPrefetcher(*fns, **args)
