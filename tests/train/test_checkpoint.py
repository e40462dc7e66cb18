"""Checkpoints: layout, exact round-trip, atomicity under failure, pruning, corruption errors."""

import json
import os

import pytest
import torch
from torch import nn

import flowmatch.train.checkpoint as ckpt_mod
from flowmatch.train import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95), weight_decay=0.1)
    for _ in range(3):  # populate Adam's moments and step counters
        model(torch.randn(4, 4)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _save(run, step, model, opt, **kw):
    return save_checkpoint(
        run,
        step,
        model=model.state_dict(),
        optimizer=opt.state_dict(),
        extra={"note": "x"},
        **kw,
    )


def test_layout_and_exact_round_trip(tmp_path):
    model, opt = _setup()
    ema = {k: v + 1 for k, v in model.state_dict().items()}
    path = _save(tmp_path, 7, model, opt, ema=ema)
    assert path == tmp_path / "checkpoints" / "step_0000007"
    assert sorted(os.listdir(path)) == [
        "ema.safetensors",
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
    ]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_0000007"
    state = json.loads((path / "state.json").read_text())
    assert state["step"] == 7 and state["note"] == "x" and state["has_ema"] is True

    ck = load_checkpoint(path)
    assert ck.step == 7 and ck.path == path and ck.state["note"] == "x"
    for k, v in model.state_dict().items():
        assert torch.equal(ck.model[k], v) and torch.equal(ck.ema[k], ema[k])
    # Optimiser tensors come back in torch's nested layout, bit-exactly.
    assert set(ck.optimizer["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    ref = opt.state_dict()
    assert ck.optimizer["param_groups"][0]["lr"] == ref["param_groups"][0]["lr"]
    assert ck.optimizer["param_groups"][0]["params"] == ref["param_groups"][0]["params"]
    for i, per_param in ref["state"].items():
        for name, value in per_param.items():
            assert torch.equal(ck.optimizer["state"][i][name], value), (i, name)
    # The restored state loads into a fresh optimiser and continues identically.
    model2, opt2 = _setup(seed=1)
    model2.load_state_dict(ck.model)
    opt2.load_state_dict(ck.optimizer)
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(5))
    for m, o in ((model, opt), (model2, opt2)):
        m(x).pow(2).mean().backward()
        o.step()
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_optimizer_keys_are_flat(tmp_path):
    from safetensors.torch import load_file

    model, opt = _setup()
    path = _save(tmp_path, 1, model, opt)
    keys = set(load_file(path / "optimizer.safetensors"))
    assert {"state.0.exp_avg", "state.0.exp_avg_sq", "state.0.step", "state.3.exp_avg"} <= keys


def test_tied_weights_are_saved(tmp_path):
    lin = nn.Linear(3, 3)
    state = {"a.weight": lin.weight, "b.weight": lin.weight}  # shared storage
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    path = save_checkpoint(tmp_path, 0, model=state, optimizer=opt.state_dict())
    ck = load_checkpoint(path)
    assert torch.equal(ck.model["a.weight"], ck.model["b.weight"])
    assert ck.ema is None


def test_failed_save_leaves_previous_state(tmp_path, monkeypatch):
    model, opt = _setup()
    first = _save(tmp_path, 10, model, opt)
    calls = {"n": 0}
    real = ckpt_mod.write_bytes_durable

    def failing(path, data, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # die after the first file of the new checkpoint is written
            raise OSError("disk full")
        real(path, data, **kwargs)

    monkeypatch.setattr(ckpt_mod, "write_bytes_durable", failing)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 20, model, opt)
    root = tmp_path / "checkpoints"
    assert sorted(os.listdir(root)) == ["latest", "step_0000010"]  # temporary removed
    assert latest_checkpoint(tmp_path) == first
    assert load_checkpoint(tmp_path).step == 10


def test_interrupted_save_is_never_picked_up(tmp_path):
    # A crash (no cleanup at all) leaves a hidden temporary directory: ignored by readers and
    # removed by the next save.
    model, opt = _setup()
    _save(tmp_path, 5, model, opt)
    stale = tmp_path / "checkpoints" / ".tmp-step_0000009-dead"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000005"]
    assert latest_checkpoint(tmp_path).name == "step_0000005"
    _save(tmp_path, 6, model, opt)
    assert not stale.exists()


def test_latest_missing_falls_back_to_newest_complete_directory(tmp_path):
    model, opt = _setup()
    _save(tmp_path, 3, model, opt)
    _save(tmp_path, 12, model, opt)
    (tmp_path / "checkpoints" / "latest").unlink()
    assert latest_checkpoint(tmp_path).name == "step_0000012"
    assert latest_checkpoint(tmp_path / "elsewhere") is None


def test_latest_pointing_nowhere_is_an_error(tmp_path):
    model, opt = _setup()
    _save(tmp_path, 3, model, opt)
    (tmp_path / "checkpoints" / "latest").write_text("step_0000099\n")
    with pytest.raises(CheckpointError, match="names checkpoint 'step_0000099', which does not"):
        latest_checkpoint(tmp_path)


def test_keep_prunes_oldest_and_resave_replaces(tmp_path):
    model, opt = _setup()
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, model, opt, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000003", "step_0000004"]
    _save(tmp_path, 4, model, opt, keep=2)  # same step again: replaced, not duplicated
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000003", "step_0000004"]


def test_run_dir_resolves_to_latest(tmp_path):
    model, opt = _setup()
    _save(tmp_path, 1, model, opt)
    _save(tmp_path, 2, model, opt)
    assert load_checkpoint(tmp_path).step == 2


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "state.json"])
def test_missing_file_is_named(tmp_path, name):
    model, opt = _setup()
    path = _save(tmp_path, 1, model, opt)
    (path / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"checkpoint file .*{name} is missing"):
        load_checkpoint(path)


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint path .*nope does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty_run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has no checkpoint under checkpoints/"):
        load_checkpoint(tmp_path / "empty_run")


def test_truncated_or_flipped_tensor_file_is_named(tmp_path):
    model, opt = _setup()
    path = _save(tmp_path, 1, model, opt)
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the payload: only the recorded sha256 catches it
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors is corrupt: .* sha256 differ"):
        load_checkpoint(path)
    f.write_bytes(bytes(data[:20]))
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt"):
        load_checkpoint(path)


def test_unreadable_safetensors_is_named(tmp_path):
    model, opt = _setup()
    path = _save(tmp_path, 1, model, opt)
    state = json.loads((path / "state.json").read_text())
    garbage = b"\x00" * 16
    (path / "optimizer.safetensors").write_bytes(garbage)
    import hashlib

    state["files"]["optimizer.safetensors"] = {
        "bytes": len(garbage),
        "sha256": hashlib.sha256(garbage).hexdigest(),
    }
    del state["checksum"]  # a hand-made state.json (older checkpoints have no checksum)
    (path / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="optimizer.safetensors is not a valid safetensors"):
        load_checkpoint(path)


def test_corrupt_or_foreign_state_json(tmp_path):
    model, opt = _setup()
    path = _save(tmp_path, 1, model, opt)
    (path / "state.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="state.json is corrupt"):
        load_checkpoint(path)
    (path / "state.json").write_text(json.dumps({"format_version": 99, "step": 1, "files": {}}))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(path)


def test_state_json_without_a_file_record_or_field_is_corrupt(tmp_path):
    # A file without a recorded size/sha256 must not be loaded unverified.
    model, opt = _setup()
    path = _save(tmp_path, 1, model, opt)
    state = json.loads((path / "state.json").read_text())
    del state["files"]["model.safetensors"]
    del state["checksum"]  # a hand-made state.json (older checkpoints have no checksum)
    (path / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="records no size/sha256 for model.safetensors"):
        load_checkpoint(path)
    del state["optimizer"]
    (path / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=r"state.json is corrupt: KeyError\('optimizer'"):
        load_checkpoint(path)


def test_bad_arguments(tmp_path):
    model, opt = _setup()
    with pytest.raises(ValueError, match="step must be >= 0, got -1"):
        _save(tmp_path, -1, model, opt)
    with pytest.raises(ValueError, match="keep must be >= 1"):
        _save(tmp_path, 1, model, opt, keep=0)
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        save_checkpoint(
            tmp_path, 1, model=model.state_dict(), optimizer=opt.state_dict(), extra={"f": object()}
        )
    assert list_checkpoints(tmp_path) == []  # nothing half-written


def test_atomic_write_text_replaces(tmp_path):
    target = tmp_path / "f.txt"
    ckpt_mod.atomic_write_text(target, "one")
    ckpt_mod.atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_rng_state_round_trip():
    state = ckpt_mod.rng_state()
    a = torch.rand(5)
    ckpt_mod.set_rng_state(json.loads(json.dumps(state)))  # survives JSON
    assert torch.equal(torch.rand(5), a)


# ---------------------------------------------------------------- identity and integrity


def test_run_id_is_recorded_and_a_foreign_checkpoint_is_refused_naming_both(tmp_path):
    model, opt = _setup()
    path = _save(tmp_path, 3, model, opt, run_id="aaaa")
    ck = load_checkpoint(path, run_id="aaaa")
    assert ck.run_id == "aaaa" and ck.state["run_id"] == "aaaa"
    with pytest.raises(CheckpointError, match=r"belongs to run aaaa, not to run bbbb .*copied"):
        load_checkpoint(path, run_id="bbbb")
    old = _save(tmp_path / "old", 3, model, opt)  # no run id: an older flowmatch
    assert load_checkpoint(old).run_id is None
    with pytest.raises(CheckpointError, match=r"belongs to no run id .* not to run bbbb"):
        load_checkpoint(old, run_id="bbbb")


def test_an_edited_state_json_is_refused(tmp_path):
    model, opt = _setup()
    path = _save(tmp_path, 3, model, opt, run_id="aaaa")
    state_file = path / "state.json"
    state_file.write_text(state_file.read_text().replace('"step": 3,', '"step": 30,'))
    with pytest.raises(CheckpointError, match=r"state.json was modified after it was written"):
        load_checkpoint(path)
    # Without the checksum (older checkpoints), the directory name still pins the step.
    state = json.loads(state_file.read_text())
    del state["checksum"]
    state_file.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=r"says step 30 but its directory is step_0000003"):
        load_checkpoint(path)


def test_a_renamed_checkpoint_directory_is_refused(tmp_path):
    model, opt = _setup()
    path = _save(tmp_path, 3, model, opt)
    path.rename(path.with_name("step_0000009"))
    (tmp_path / "checkpoints" / "latest").write_text("step_0000009\n")
    with pytest.raises(CheckpointError, match=r"says step 3 but its directory is step_0000009"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("name", ["model.safetensors", "state.json"])
def test_a_directory_where_a_file_should_be_is_named(tmp_path, name):
    model, opt = _setup()
    path = _save(tmp_path, 1, model, opt)
    (path / name).unlink()
    (path / name).mkdir()
    with pytest.raises(CheckpointError, match=rf"{name} is a directory, not a file"):
        load_checkpoint(path)


def test_rotation_renames_before_deleting(tmp_path, monkeypatch):
    # A kill during the deletion of an old checkpoint must not leave a half-deleted step_*.
    model, opt = _setup()
    for step in (1, 2):
        _save(tmp_path, step, model, opt, keep=2)
    real = ckpt_mod.shutil.rmtree

    def killed(path, *args, **kwargs):
        if path.name.startswith(".tmp-old-"):
            next(iter(path.iterdir())).unlink()  # one file gone, then the "kill"
            raise KeyboardInterrupt
        real(path, *args, **kwargs)

    monkeypatch.setattr(ckpt_mod.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 3, model, opt, keep=2)
    monkeypatch.setattr(ckpt_mod.shutil, "rmtree", real)
    root = tmp_path / "checkpoints"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000002", "step_0000003"]
    assert any(p.name.startswith(".tmp-old-step_0000001") for p in root.iterdir())
    for path in list_checkpoints(tmp_path):
        load_checkpoint(path)  # both complete
    _save(tmp_path, 4, model, opt, keep=2)  # the next save removes the leftover
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_0000003", "step_0000004"]


def test_disk_full_names_the_file_it_could_not_write(tmp_path, monkeypatch):
    from flowmatch.utils import io

    def full(fd):
        raise OSError(28, "No space left on device")

    model, opt = _setup()
    monkeypatch.setattr(io.os, "fsync", full)
    with pytest.raises(OSError, match=r"could not write .*step_0000001/optimizer.safetensors: No "):
        _save(tmp_path, 1, model, opt)
    with pytest.raises(OSError, match=r"\[Errno 28\] could not write .*config.json: No space left"):
        io.atomic_write_text(tmp_path / "config.json", "{}")
    assert not (tmp_path / "config.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoints"]  # no temporaries left


def test_a_file_where_a_directory_should_be_and_the_reverse(tmp_path):
    (tmp_path / "checkpoints").write_text("x")
    with pytest.raises(CheckpointError, match=r"checkpoints is not a directory"):
        list_checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match=r"checkpoints is not a directory"):
        latest_checkpoint(tmp_path)
    model, opt = _setup()
    run = tmp_path / "run"
    _save(run, 1, model, opt)
    (run / "checkpoints" / "latest").unlink()
    (run / "checkpoints" / "latest").mkdir()
    with pytest.raises(CheckpointError, match=r"latest is not a file"):
        latest_checkpoint(run)
