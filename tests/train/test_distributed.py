"""DDP on 2 CPU ranks via torchrun: identical parameters, disjoint shards, rank-0-only files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flowmatch.train import DistributedContext, load_checkpoint, setup_distributed
from flowmatch.train.distributed import all_reduce_, barrier, cleanup, wrap_model

WORKER = Path(__file__).with_name("_ddp_worker.py")


def test_two_cpu_ranks_stay_identical_and_only_rank0_writes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    r0 = load_file(tmp_path / "harness_rank0.safetensors")
    r1 = load_file(tmp_path / "harness_rank1.safetensors")
    # Gradients are averaged by DDP, so both ranks apply identical updates (bit-identical).
    for key in r0:
        if key != "batch0":
            assert torch.equal(r0[key], r1[key]), key
    # ... while each rank trained on its own shard of the data.
    b0, b1 = r0["batch0"], r1["batch0"]
    assert b0.shape == b1.shape == (32, 2)
    assert not (b0[:, None, :] == b1[None, :, :]).all(-1).any()

    # Only rank 0 wrote: metrics and checkpoints in rank0/, nothing at all in rank1/.
    assert not (tmp_path / "rank1").exists()
    run = tmp_path / "rank0"
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [10, 20, 30]
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]  # starts near 10 (|mu|^2 + 1)
    ckpt = load_checkpoint(run)
    assert ckpt.step == 30 and ckpt.state["world_size"] == 2
    for key, value in ckpt.model.items():
        assert torch.equal(value, r0[f"model.{key}"])


def test_single_process_context_is_a_no_op(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx, device = setup_distributed("cpu")
    assert ctx == DistributedContext() and device == torch.device("cpu")
    assert ctx.is_main and not ctx.enabled
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, ctx, device) is model
    t = torch.ones(2)
    assert all_reduce_(t, ctx, "min") is t and torch.equal(t, torch.ones(2))
    barrier(ctx)
    cleanup(ctx)


def test_bad_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="environment variable WORLD_SIZE must be an integer"):
        setup_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(ValueError, match="WORLD_SIZE=2 is set but RANK/LOCAL_RANK are not"):
        setup_distributed("cpu")


def test_unknown_reduce_op():
    with pytest.raises(ValueError, match=r"unknown all-reduce op 'max'; choose one of"):
        all_reduce_(torch.ones(1), DistributedContext(), "max")
