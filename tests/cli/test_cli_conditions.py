"""CLI end to end with a continuous condition: train 8gaussians_angle, sample --cond, eval."""

import json

import numpy as np
import pytest

from flowmatch.cli.main import main

TINY = [
    "--set",
    "model.hidden=32",
    "--set",
    "model.depth=2",
    "--set",
    "data.n_train=2048",
    "--set",
    "data.n_test=512",
    "--set",
    "train.batch_size=64",
    "--set",
    "train.checkpoint_every=20",
    "--set",
    "sample.num_samples=200",
    "--set",
    "train.eval_every=20",
]


@pytest.fixture(scope="module")
def angle_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "ga"
    argv = ["train", "--data", "8gaussians_angle", "--steps", "40", "--out", str(out), "--quiet"]
    assert main([*argv, *TINY]) == 0
    return out


def test_train_stores_the_condition(angle_run):
    info = json.loads((angle_run / "config.json").read_text())
    assert info["config"]["model"]["conditional"] == "auto"
    assert info["data"]["values_dim"] == 1 and info["data"]["cond_names"] == ["angle"]
    assert set(info["data"]["values_standardizer"]) == {"shape", "mean", "std"}
    lines = [json.loads(x) for x in (angle_run / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval/cond_w2" in x]  # periodic eval scores conditionally
    assert [x["step"] for x in evals] == [20, 40] and all(x["eval/cond_w2"] > 0 for x in evals)
    assert (angle_run / "samples.png").stat().st_size > 0


def test_sample_with_cond_file(angle_run, tmp_path, capsys):
    angles = np.array([[-2.0], [0.0], [1.0], [2.5]])
    np.savez(tmp_path / "c.npz", cond=angles)
    out = tmp_path / "s.npz"
    argv = ["sample", str(angle_run), "--cond", str(tmp_path / "c.npz"), "--nfe", "4"]
    assert main([*argv, "--out", str(out)]) == 0
    s = np.load(out)
    # One sample per row of the file by default, saved with its condition (file units).
    assert s["samples"].shape == (4, 2) and np.array_equal(s["cond"], angles.astype(np.float32))
    assert main([*argv, "--num-samples", "8", "--out", str(out)]) == 0
    assert np.array_equal(np.load(out)["cond"][:, 0], np.tile(angles[:, 0], 2).astype(np.float32))
    # One row: broadcast to every sample (1000 by default, or --num-samples).
    np.savez(tmp_path / "one.npz", cond=np.array([[0.5]]))
    one = ["sample", str(angle_run), "--cond", str(tmp_path / "one.npz"), "--nfe", "4"]
    assert main([*one, "--num-samples", "5", "--out", str(tmp_path / "o.png")]) == 0
    assert np.load(tmp_path / "o.npz")["cond"].tolist() == [[0.5]] * 5
    assert (tmp_path / "o.png").stat().st_size > 0
    capsys.readouterr()


def test_sample_cond_errors(angle_run, tmp_path, capsys):
    out = str(tmp_path / "x.npz")
    assert main(["sample", str(angle_run), "--out", out]) == 2
    assert "cond is required: the run is conditioned on ['values']" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", cond=np.zeros((3, 1)))
    argv = ["sample", str(angle_run), "--cond", str(tmp_path / "bad.npz"), "--num-samples", "4"]
    assert main([*argv, "--out", out]) == 2
    assert "cond has 3 rows" in capsys.readouterr().err
    np.savez(tmp_path / "keys.npz", angle=np.zeros((3, 1)))
    assert main(["sample", str(angle_run), "--cond", str(tmp_path / "keys.npz"), "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "must hold arrays named ['labels', 'cond', 'context']" in err and "\n" not in err


def test_eval_reports_conditional_w2_per_bin(angle_run, capsys):
    argv = ["eval", str(angle_run), "--nfe", "2,4", "--solver", "euler", "--num-samples", "160"]
    assert main([*argv, "--no-reference"]) == 0
    out = capsys.readouterr().out
    assert "cond_w2" in out and "conditional W2 per bin of angle" in out
    report = json.loads((angle_run / "eval.json").read_text())
    section = report["conditional"]
    assert section["bins"] == 8 and [len(r["per_bin"]) for r in section["rows"]] == [8, 8]
    assert all(r["cond_w2"] > 0 for r in report["rows"])
    assert "nll" not in report  # conditional runs have no unconditional NLL


def test_info_and_dry_run(angle_run, capsys):
    assert main(["info", str(angle_run)]) == 0
    assert "condition values: 1 (angle)" in capsys.readouterr().out
    assert main(["train", "--data", "8gaussians_angle", "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["model"]["conditional"] == "auto"  # the 2-D preset's "no" is for toy labels
