"""What the CLI refuses: exit code 2, exactly one stderr line, no traceback, and the run
directory unchanged (by hash). One test per class of hostile input of issue 10."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from flowmatch.cli.main import main

TINY = [
    "--set", "model.hidden=16", "--set", "model.depth=2", "--set", "data.n_train=256",
    "--set", "data.n_test=128", "--set", "train.batch_size=32", "--set", "train.log_every=5",
    "--set", "train.checkpoint_every=10", "--set", "sample.num_samples=50",
]  # fmt: skip


def digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def refused(argv, match, capsys, unchanged=None):
    """``main(argv)`` exits 2 with one stderr line containing ``match``; ``unchanged`` too."""
    before = digest(unchanged) if unchanged is not None else None
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and match in lines[0], lines[0]
    if unchanged is not None:
        assert digest(unchanged) == before, f"{unchanged} changed"
    return lines[0]


def _train(out, *extra, steps=20):
    assert main(["train", "--steps", str(steps), "--out", str(out), "--quiet", *TINY, *extra]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    _train(root / "a")
    _train(root / "b")
    _train(root / "wide", "--set", "model.hidden=32")
    return root


@pytest.fixture
def run(runs, tmp_path):
    """A private copy of run a."""
    out = tmp_path / "a"
    shutil.copytree(runs / "a", out)
    return out


def _replace_checkpoint(run, source):
    shutil.rmtree(run / "checkpoints" / source.name)
    shutil.copytree(source, run / "checkpoints" / source.name)


# ------------------------------------------------------- 1. checkpoint identity and integrity


@pytest.mark.parametrize("command", ["info", "sample", "eval", "resume"])
def test_a_checkpoint_copied_from_another_run(run, runs, capsys, tmp_path, command):
    _replace_checkpoint(run, runs / "b" / "checkpoints" / "step_0000020")
    ours = json.loads((run / "config.json").read_text())["run_id"]
    theirs = json.loads((runs / "b" / "config.json").read_text())["run_id"]
    argv = {
        "info": ["info", str(run)],
        "sample": ["sample", str(run), "--out", str(tmp_path / "s.npz")],
        "eval": ["eval", str(run), "--nfe", "2", "--no-reference"],
        "resume": ["train", "--resume", str(run), "--steps", "30", "--quiet"],
    }[command]
    line = refused(argv, f"belongs to run {theirs}, not to run {ours}", capsys, unchanged=run)
    assert "copied from another run" in line


def test_an_edited_step(run, capsys, tmp_path):
    state = run / "checkpoints" / "step_0000020" / "state.json"
    state.write_text(state.read_text().replace('"step": 20,', '"step": 40,'))
    refused(["sample", str(run), "--out", str(tmp_path / "s.npz")], "was modified", capsys)
    refused(["train", "--resume", str(run), "--steps", "50"], "was modified", capsys, run)


def test_another_architecture_is_one_line_naming_the_run(run, runs, capsys, tmp_path):
    # Forged to pass the identity checks (run id, step, no checksum): only the shapes differ.
    _replace_checkpoint(run, runs / "wide" / "checkpoints" / "step_0000020")
    state_file = run / "checkpoints" / "step_0000020" / "state.json"
    state = json.loads(state_file.read_text())
    state["run_id"] = json.loads((run / "config.json").read_text())["run_id"]
    del state["checksum"]
    state_file.write_text(json.dumps(state))
    line = refused(
        ["sample", str(run), "--out", str(tmp_path / "s.npz")], "does not fit run", capsys
    )
    assert "another architecture?" in line and "size mismatch for net.0.weight" in line
    refused(["train", "--resume", str(run), "--steps", "30"], "does not fit the model", capsys, run)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{}", "is not a flowmatch run description (needs 'config' and 'data', got [])"),
        ('{"config": {}, "data": {}}', "data lacks ['labelled', 'name', 'num_classes'"),
        ("[1, 2]", "is not a flowmatch run description"),
        ("{not json", "is corrupt (not JSON)"),
        ('{"config": {"train": {"lr": -1}}, "data": {}}', "data lacks"),
    ],
)
@pytest.mark.parametrize("command", ["info", "sample", "eval", "resume"])
def test_a_broken_config_json(run, capsys, tmp_path, content, match, command):
    (run / "config.json").write_text(content)
    argv = {
        "info": ["info", str(run)],
        "sample": ["sample", str(run), "--out", str(tmp_path / "s.npz")],
        "eval": ["eval", str(run)],
        "resume": ["train", "--resume", str(run), "--steps", "30"],
    }[command]
    refused(argv, match, capsys, unchanged=run)


def test_a_bad_stored_config_value_names_the_file_and_key(run, capsys):
    info = json.loads((run / "config.json").read_text())
    info["config"]["train"]["lr"] = -1
    (run / "config.json").write_text(json.dumps(info))
    refused(["info", str(run)], "config.json: train.lr must be > 0, got -1", capsys, run)


@pytest.mark.parametrize("step", ["step_0000010", "step_0000020"])
def test_info_on_a_checkpoint_without_state_json(run, capsys, step):
    (run / "checkpoints" / step / "state.json").unlink()
    refused(["info", str(run)], f"{step}/state.json is missing", capsys, unchanged=run)


@pytest.mark.parametrize("name", ["model.safetensors", "ema.safetensors", "optimizer.safetensors"])
def test_info_on_a_directory_where_a_weights_file_should_be(run, capsys, name):
    path = run / "checkpoints" / "step_0000010" / name
    path.unlink()
    path.mkdir()
    refused(["info", str(run)], f"{name} is a directory, not a file", capsys, unchanged=run)


# ---------------------------------------------------------------------- 2. crash artifacts


def test_a_torn_final_metrics_line_blocks_neither_info_nor_resume(run, capsys, caplog):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 25, "loss": 6.1, "lr"')  # what a kill during an append leaves
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    assert "incomplete (an interrupted run); --resume drops it" in capsys.readouterr().out
    assert main(["train", "--resume", str(run), "--steps", "30", "--quiet"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert "dropping an incomplete last line" in caplog.text  # the note (stderr outside pytest)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"step": 10, "loss": 1,,}', "metrics.jsonl line 2 is not a JSON record"),
        ('{"loss": 1.0}', "metrics.jsonl line 2 has no integer 'step' (got None)"),
    ],
)
@pytest.mark.parametrize("command", ["info", "resume"])
def test_malformed_metrics_records(run, capsys, line, match, command):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = line
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    argv = (
        ["info", str(run)]
        if command == "info"
        else ["train", "--resume", str(run), "--steps", "30"]
    )
    refused(argv, match, capsys, unchanged=run)


@pytest.fixture
def file_run(tmp_path, monkeypatch):
    """A run trained on data/points.npy, given as a path relative to tmp_path."""
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "points.npy", np.random.default_rng(0).normal(size=(300, 3)).astype("f4"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "f"
    data_args = ["--set", "data.n_train=200", "--set", "data.n_test=50"]
    _train(out, "--data", os.path.join("data", "points.npy"), *data_args, steps=10)
    return out


def test_changed_data_is_refused_on_resume_and_eval(file_run, tmp_path, capsys):
    np.save(
        tmp_path / "data" / "points.npy",
        np.random.default_rng(1).normal(size=(300, 3)).astype("f4"),
    )
    match = "changed since it was trained (contents, standardiser differ)"
    refused(["train", "--resume", str(file_run), "--steps", "20"], match, capsys, file_run)
    refused(["eval", str(file_run)], match, capsys, file_run)
    (tmp_path / "data" / "points.npy").unlink()
    refused(
        ["eval", str(file_run)], "points.npy (given as 'data/points.npy'), no longer exists", capsys
    )


def test_a_relative_data_path_works_from_another_directory(file_run, tmp_path, monkeypatch, capsys):
    info = json.loads((file_run / "config.json").read_text())
    assert info["config"]["data"]["name"] == str(tmp_path / "data" / "points.npy")
    assert info["data"]["given"] == os.path.join("data", "points.npy")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["eval", str(file_run), "--nfe", "2", "--solver", "euler", "--no-reference"]) == 0
    assert main(["train", "--resume", str(file_run), "--steps", "20", "--quiet"]) == 0
    assert json.loads((file_run / "config.json").read_text())["data"]["given"] == "data/points.npy"


# -------------------------------------------------------------- 3. refused operations change nothing


def test_resume_with_fewer_steps(run, capsys):
    refused(
        ["train", "--resume", str(run), "--steps", "10"], "beyond config.steps = 10", capsys, run
    )
    # ... and the stored config is untouched: a plain resume finds nothing to do.
    before = digest(run)
    assert main(["train", "--resume", str(run)]) == 0
    assert "already at step 20 = train.steps: nothing to do" in capsys.readouterr().out
    assert digest(run) == before


def test_resume_with_a_corrupt_checkpoint(run, capsys):
    weights = run / "checkpoints" / "step_0000020" / "model.safetensors"
    weights.write_bytes(b"garbage")
    refused(
        ["train", "--resume", str(run), "--steps", "30"],
        "model.safetensors is corrupt",
        capsys,
        run,
    )


def test_training_into_an_existing_run_needs_overwrite(run, capsys):
    argv = ["train", "--out", str(run), "--quiet", *TINY]
    match = f"'{run}' already holds a run (config.json, metrics.jsonl, checkpoints)"
    refused([*argv, "--steps", "20"], match, capsys, run)
    old_id = json.loads((run / "config.json").read_text())["run_id"]
    (run / "notes.txt").write_text("mine")
    assert main([*argv, "--steps", "10", "--overwrite"]) == 0
    info = json.loads((run / "config.json").read_text())
    assert info["run_id"] != old_id and info["config"]["train"]["steps"] == 10
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == [
        "latest",
        "step_0000010",
    ]
    assert (run / "notes.txt").read_text() == "mine"  # not a run file: left alone
    refused(["train", "--resume", str(run), "--overwrite"], "drop --overwrite", capsys, run)


def test_a_file_as_the_run_directory(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    argv = ["train", "--steps", "5", "--out", str(tmp_path / "f"), "--quiet", *TINY]
    refused(argv, "exists and is not a directory", capsys, tmp_path)


HOLDER = textwrap.dedent(
    """
    import fcntl, json, os, socket, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_a_second_writer_gets_one_line_naming_the_holder(run, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run / ".lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        match = f"run directory {run} is being written by pid {holder.pid}"
        refused(["train", "--resume", str(run), "--steps", "30"], match, capsys, run)
        argv = ["train", "--steps", "20", "--out", str(run), "--overwrite", "--quiet", *TINY]
        refused(argv, match, capsys, run)
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------- 6. conflicting or ignored inputs


def test_conflicting_sample_and_eval_arguments(runs, capsys, tmp_path):
    a, out = str(runs / "a"), str(tmp_path / "s.npz")
    refused(["sample", a, "--solver", "dopri5", "--nfe", "8", "--out", out],
            "--nfe 8 does not apply to dopri5, which is adaptive", capsys)  # fmt: skip
    refused(["sample", a, "--opt", "grid.shift=2", "--out", out],
            "--opt grid.shift 2 only applies to the 'shifted' grid, not 'uniform'", capsys)  # fmt: skip
    refused(["sample", a, "--opt", "solver.atol=1e-3", "--out", out],
            "--opt solver.atol 0.001 only applies to the 'dopri5' sampler", capsys)  # fmt: skip
    refused(["sample", a, "--grid", "shifted", "--grid-values", "0,0.5,1", "--out", out],
            "--grid-values replaces --grid; give one of them", capsys)  # fmt: skip
    refused(["sample", a, "--grid-values", "0,0.5,1", "--opt", "grid.shift=2", "--out", out],
            "explicit grid values take no grid options", capsys)  # fmt: skip
    refused(["sample", a, "--guidance", "2", "--out", out],
            "--guidance 2.0 needs a conditional model", capsys)  # fmt: skip
    refused(["sample", a, "--label", "1", "--out", out],
            "--label 1 given but the model is unconditional", capsys)  # fmt: skip
    refused(["eval", a, "--solver", "midpoint", "--nfe", "3", "--no-reference"],
            "--nfe [3] fits none of the solvers ['midpoint']", capsys)  # fmt: skip
    refused(["eval", a, "--solver", "dopri5"],
            "--solver has 'dopri5', which is not a fixed-step ODE sampler", capsys)  # fmt: skip


def test_a_partly_usable_eval_request_says_what_it_skips(runs, capsys, tmp_path):
    argv = ["eval", str(runs / "a"), "--solver", "midpoint", "--nfe", "1,2", "--no-reference",
            "--num-samples", "100000", "--out", str(tmp_path / "e.json")]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "note: midpoint skips --nfe 1 (not a multiple of its 2 evaluations per step)" in err
    assert "note: --num-samples 100000 is more than the 128 held-out samples; using 128" in err


def test_conflicting_train_arguments(run, capsys):
    refused(["train", "--resume", str(run), "--out", str(run)], "drop --out", capsys, run)
    refused(["train", "--steps", "50", "--set", "train.steps=100", "--dry-run"],
            "--steps 50 conflicts with --set train.steps=100; give one", capsys)  # fmt: skip
    refused(["train", "--data", "moons", "--set", "data.name=circles", "--dry-run"],
            "--data moons conflicts with --set data.name=circles", capsys)  # fmt: skip


@pytest.mark.parametrize("key", ["train.grad_clip", "train.ema_decay"])
def test_none_unsets_optional_keys_from_the_cli_and_toml(key, tmp_path, capsys):
    assert main(["train", "--dry-run", "--set", f"{key}=none"]) == 0
    section, name = key.split(".")
    assert json.loads(capsys.readouterr().out)[section][name] is None
    toml = tmp_path / "c.toml"
    toml.write_text(f'[{section}]\n{name} = "none"\n')
    assert main(["train", "--dry-run", "--config", str(toml)]) == 0
    assert json.loads(capsys.readouterr().out)[section][name] is None
    # A run trained that way: no clipping / no EMA, and it resumes.
    out = tmp_path / "r"
    _train(out, "--set", f"{key}=none", steps=10)
    assert json.loads((out / "config.json").read_text())["config"][section][name] is None
    assert main(["train", "--resume", str(out), "--steps", "15", "--quiet"]) == 0


# ------------------------------------------------------------------ 8. messages name the argument


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["train", "--dry-run", "--set", "train.lr=1e39"], "train.lr must be a float32-representable"),
        (["train", "--dry-run", "--set", "train.lr=nan"], "train.lr must be finite, got nan"),
        (["train", "--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
        (["train", "--dry-run", "--set", "train.steps=none"], "train.steps must be an int, got 'none' (str)"),
        (["train", "--set", "train.dist_timeout=0", "--dry-run"], "train.dist_timeout must be > 0"),
        (["sample", "RUN", "--guidance", "nan", "--out", "OUT"],
         "argument --guidance: expected a finite number, got 'nan'"),
        (["sample", "RUN", "--grid-values", "", "--out", "OUT"],
         "argument --grid-values: a grid needs at least two times"),
        (["sample", "RUN", "--grid-values", "0,nan,1", "--out", "OUT"],
         "argument --grid-values: the times must hold finite floats"),
        (["sample", "RUN", "--grid-values", "0,0.5", "--out", "OUT"],
         "argument --grid-values: the times must include both endpoints 0 and 1"),
        (["sample", "RUN", "--seed", "-1", "--out", "OUT"], "argument --seed: expected an integer >= 0, got -1"),
        (["eval", "RUN", "--num-samples", "1"],
         "argument --num-samples: expected an integer >= 2 (a distance between sample sets"),
        (["eval", "RUN", "--nfe", ""], "argument --nfe: NFE values must be integers >= 1"),
        (["bogus"], "argument command: invalid choice: 'bogus'"),
    ],
)  # fmt: skip
def test_messages_name_the_argument(argv, match, runs, capsys, tmp_path):
    where = {"RUN": str(runs / "a"), "OUT": str(tmp_path / "x.npz")}
    refused([where.get(a, a) for a in argv], match, capsys)
    assert not (tmp_path / "x.npz").exists()


def test_a_non_utf8_toml_config(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_bytes(b"[train]\nsteps = 3 # caf\xe9\n")
    refused(["train", "--config", str(toml), "--dry-run"], "is not UTF-8 text", capsys)


def test_a_full_disk_names_the_file(tmp_path, capsys, monkeypatch):
    from flowmatch.utils import io

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full)
    out = tmp_path / "r"
    argv = ["train", "--steps", "5", "--out", str(out), "--quiet", *TINY]
    refused(argv, f"[Errno 28] could not write {out}/config.json: No space left on device", capsys)
    assert [p.name for p in out.iterdir()] == []  # nothing half-written, no lock left


@pytest.mark.parametrize("command", ["sample", "resume"])
def test_a_config_json_without_run_id_in_front_of_newer_checkpoints(run, capsys, tmp_path, command):
    info = json.loads((run / "config.json").read_text())
    del info["run_id"]
    (run / "config.json").write_text(json.dumps(info))
    argv = (
        ["sample", str(run), "--out", str(tmp_path / "s.npz")]
        if command == "sample"
        else ["train", "--resume", str(run), "--steps", "30"]
    )
    refused(argv, "has no run id but checkpoint", capsys, unchanged=run)


def test_outputs_never_replace_run_files(run, capsys, tmp_path):
    refused(
        ["eval", str(run), "--out", str(run / "metrics.jsonl")], "must end in .json", capsys, run
    )
    refused(
        ["eval", str(run), "--out", str(run / "config.json")],
        "would overwrite a file of run",
        capsys,
        run,
    )
    refused(["eval", str(run), "--out", str(tmp_path / "e.png")], "must end in .json", capsys)
    inside = str(run / "checkpoints" / "step_0000020" / "model.npz")
    refused(["sample", str(run), "--out", inside], "would overwrite a file of run", capsys, run)


def test_sample_outputs_are_written_atomically(runs, tmp_path, monkeypatch, capsys):
    from flowmatch import viz

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    out = tmp_path / "s.png"
    out.write_bytes(b"old picture")
    monkeypatch.setattr(viz, "save_samples_png", crash)
    refused(
        ["sample", str(runs / "a"), "--out", str(out)], f"could not write {out}: No space", capsys
    )
    assert out.read_bytes() == b"old picture"  # the previous file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz", "s.png"]  # no temporaries


def test_an_overwrite_killed_half_way_is_cleaned_up_by_the_next_one(run, capsys):
    # What a kill inside --overwrite leaves: the old checkpoints renamed away, not yet deleted.
    (run / "checkpoints").rename(run / ".tmp-old-checkpoints-dead")
    (run / ".tmp-config.json-dead").write_text("{")
    argv = ["train", "--out", str(run), "--quiet", "--steps", "10", "--overwrite", *TINY]
    assert main(argv) == 0
    assert not [p.name for p in run.iterdir() if p.name.startswith(".tmp-")]


def test_a_half_deleted_older_checkpoint_is_named_with_its_likely_cause(run, capsys):
    (run / "checkpoints" / "step_0000010" / "model.safetensors").unlink()
    line = refused(["info", str(run)], "step_0000010/model.safetensors is missing", capsys, run)
    assert "older than the latest checkpoint step_0000020" in line
    # Sampling and resuming use the latest checkpoint, which is complete.
    assert main(["train", "--resume", str(run), "--steps", "30", "--quiet"]) == 0
    assert not (run / "checkpoints" / "step_0000010").exists()  # rotated out as usual
