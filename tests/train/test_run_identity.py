"""The trainer never mixes runs: a run id in every checkpoint, foreign checkpoints refused
naming both ids, a fresh trainer refuses another run's directory, and a refused resume
changes nothing on disk."""

import hashlib
import json
import shutil

import pytest
import torch

from flowmatch.data import ArrayDataset
from flowmatch.models import MLP
from flowmatch.objectives import FlowMatchingObjective
from flowmatch.train import CheckpointError, TrainConfig, Trainer, load_checkpoint
from flowmatch.train.records import MetricsError

CFG = TrainConfig(steps=8, batch_size=16, log_every=2, checkpoint_every=4, ema_decay=0.9)


def _data():
    return ArrayDataset(torch.randn(128, 2, generator=torch.Generator().manual_seed(0)))


def _model(hidden=16):
    torch.manual_seed(0)
    return MLP(2, hidden=hidden, depth=2, time_dim=8)


def _train(out, cfg=CFG, **kw):
    trainer = Trainer(_model(), FlowMatchingObjective(), _data(), cfg, out_dir=out, **kw)
    trainer.fit()
    return trainer


def _resume(out, **kw):
    return Trainer.resume(out, _model(), FlowMatchingObjective(), _data(), **kw)


def digest(folder):
    """sha256 over every file's relative path and content: 'unchanged' means unchanged."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def test_every_checkpoint_carries_the_run_id(tmp_path):
    trainer = _train(tmp_path / "a", run_id="run-a")
    assert trainer.run_id == "run-a"
    for step in (4, 8):
        assert load_checkpoint(tmp_path / f"a/checkpoints/step_{step:07d}").run_id == "run-a"
    assert len(_train(tmp_path / "b").run_id) == 32  # a fresh uuid4 by default
    resumed = _resume(tmp_path / "a", config=TrainConfig(**{**CFG.to_dict(), "steps": 12}))
    assert resumed.run_id == "run-a"
    with pytest.raises(TypeError, match="run_id must be a non-empty str or None, got 3"):
        Trainer(_model(), FlowMatchingObjective(), _data(), CFG, run_id=3)


def test_a_checkpoint_copied_from_another_run_is_refused_naming_both(tmp_path):
    _train(tmp_path / "a", run_id="run-a")
    _train(tmp_path / "b", run_id="run-b")
    a = tmp_path / "a/checkpoints"
    shutil.rmtree(a / "step_0000008")
    shutil.copytree(tmp_path / "b/checkpoints/step_0000008", a / "step_0000008")
    before = digest(tmp_path / "a")
    longer = TrainConfig(**{**CFG.to_dict(), "steps": 12})
    # Against the run's own id (what api.train_run passes from config.json) ...
    with pytest.raises(CheckpointError, match=r"belongs to run run-b, not to run run-a"):
        _resume(tmp_path / "a", config=longer, run_id="run-a")
    # ... and without one: the other checkpoints of the directory disagree with it.
    with pytest.raises(CheckpointError, match=r"belongs to run run-b but .*step_0000004 .*run-a"):
        _resume(tmp_path / "a", config=longer)
    assert digest(tmp_path / "a") == before


def test_restoring_another_runs_checkpoint_into_this_directory_is_refused(tmp_path):
    _train(tmp_path / "a", run_id="run-a")
    trainer = Trainer(_model(), FlowMatchingObjective(), _data(), CFG, out_dir=tmp_path / "b")
    with pytest.raises(CheckpointError, match=r"belongs to run run-a, but this trainer writes run"):
        trainer.load_checkpoint(tmp_path / "a")
    # Without an out_dir nothing can be mixed: the trainer continues run-a (in memory).
    free = Trainer(_model(), FlowMatchingObjective(), _data(), CFG)
    free.load_checkpoint(tmp_path / "a")
    assert free.run_id == "run-a" and free.step == 8


def test_a_fresh_trainer_refuses_a_directory_holding_a_run(tmp_path):
    _train(tmp_path / "a")
    before = digest(tmp_path / "a")
    with pytest.raises(ValueError, match=r"already holds a run \(checkpoints/, metrics.jsonl\)"):
        _train(tmp_path / "a")
    assert digest(tmp_path / "a") == before


def test_an_architecture_mismatch_is_one_line_naming_the_file(tmp_path):
    _train(tmp_path / "a")
    wrong = Trainer(_model(hidden=32), FlowMatchingObjective(), _data(), CFG)
    with pytest.raises(
        ValueError, match=r"step_0000008/model.safetensors does not fit the model"
    ) as e:
        wrong.load_checkpoint(tmp_path / "a")
    assert "\n" not in str(e.value) and "size mismatch for net.0.weight" in str(e.value)


def test_refused_resumes_change_nothing(tmp_path):
    out = tmp_path / "a"
    _train(out)
    before = digest(out)
    shorter = TrainConfig(**{**CFG.to_dict(), "steps": 4})
    with pytest.raises(ValueError, match=r"is at step 8, beyond config.steps = 4"):
        _resume(out, config=shorter)
    metrics = out / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "{broken", *lines[1:]]) + "\n")
    before = digest(out)
    longer = TrainConfig(**{**CFG.to_dict(), "steps": 12})
    with pytest.raises(MetricsError, match=r"metrics.jsonl line 2 is not a JSON record"):
        _resume(out, config=longer)
    assert digest(out) == before
    weights = out / "checkpoints/step_0000008/model.safetensors"
    metrics.write_text("\n".join(lines) + "\n")
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    before = digest(out)
    with pytest.raises(CheckpointError, match=r"model.safetensors is corrupt"):
        _resume(out, config=longer)
    assert digest(out) == before


def test_a_torn_metrics_line_does_not_block_resume(tmp_path):
    out = tmp_path / "a"
    trainer = Trainer(_model(), FlowMatchingObjective(), _data(), CFG, out_dir=out)
    trainer.fit(until_step=4)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "loss": 0.')  # a crash in the middle of an append
    resumed = _resume(out)
    resumed.fit()
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8]


def test_a_run_stopped_before_its_first_checkpoint_restarts_from_zero(tmp_path):
    out = tmp_path / "a"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 2, "loss": 1.0}\n{"step": 4, "lo')
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        _resume(out)
    trainer = _resume(out, config=CFG, run_id="run-a", restart_if_empty=True)
    assert trainer.step == 0 and trainer.run_id == "run-a"
    trainer.fit()
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8]
