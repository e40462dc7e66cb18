"""End-to-end CLI tests on tiny runs (train -> info -> sample -> eval -> resume)."""

import json

import numpy as np
import pytest
import torch

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
    "train.log_every=10",
    "--set",
    "train.checkpoint_every=20",
    "--set",
    "sample.num_samples=200",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "cb"
    assert main(["train", "--steps", "40", "--out", str(out), "--quiet", *TINY]) == 0
    return out


def test_train_writes_outputs(run_dir):
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["config"]["train"]["steps"] == 40 and cfg["data"]["name"].startswith("checkerboard")
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x][-1] == 40
    assert (run_dir / "samples.png").stat().st_size > 0
    assert any((run_dir / "checkpoints").glob("step_*"))


def test_dry_run_prints_resolved_config(capsys):
    assert main(["train", "--dry-run", "--set", "train.lr=0.002", "--data", "moons"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["train"]["lr"] == 0.002 and cfg["data"]["name"] == "moons"


def test_info(run_dir, capsys):
    assert main(["info", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "step 40/40" in out and "parameters:" in out


def test_sample_npz_shape_and_reproducible(run_dir, tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert (
        main(
            [
                "sample",
                str(run_dir),
                "--num-samples",
                "50",
                "--solver",
                "euler",
                "--nfe",
                "4",
                "--out",
                str(a),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "sample",
                str(run_dir),
                "--num-samples",
                "30",
                "--solver",
                "euler",
                "--nfe",
                "4",
                "--out",
                str(b),
            ]
        )
        == 0
    )
    xa, xb = np.load(a)["samples"], np.load(b)["samples"]
    assert xa.shape == (50, 2)
    np.testing.assert_array_equal(xa[:30], xb)  # sample i depends only on (seed, i)


def test_sample_png(run_dir, tmp_path):
    out = tmp_path / "s.png"
    assert (
        main(
            [
                "sample",
                str(run_dir),
                "--num-samples",
                "20",
                "--solver",
                "rk4",
                "--nfe",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.stat().st_size > 0 and out.with_suffix(".npz").exists()


def test_eval_table_json_plot(run_dir, capsys):
    assert (
        main(
            [
                "eval",
                str(run_dir),
                "--nfe",
                "1,2",
                "--solver",
                "euler,midpoint",
                "--num-samples",
                "100",
                "--no-reference",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "w2" in out and "train/test" in out
    report = json.loads((run_dir / "eval.json").read_text())
    # midpoint cannot spend 1 NFE: only euler@1, euler@2, midpoint@2
    assert sorted((r["solver"], r["nfe"]) for r in report["rows"]) == [
        ("euler", 1),
        ("euler", 2),
        ("midpoint", 2),
    ]
    assert all(r["w2"] > 0 for r in report["rows"])
    assert (run_dir / "eval.png").exists()
    # A 2-D run also reports held-out NLL (finite) and the straightness of the flow (>= 0).
    assert np.isfinite(report["nll"]) and report["straightness"] >= 0
    assert "held-out NLL" in out


def test_resume_continues(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert main(["train", "--resume", str(copy), "--steps", "60", "--quiet"]) == 0
    lines = [json.loads(x) for x in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x][-1] == 60


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--set", "train.lrr=1", "--dry-run"], "unknown config key"),
        (
            ["train", "--set", "sample.solver=rk45", "--dry-run"],
            "sample.solver.kind: unknown sampler 'rk45'",
        ),
        (["train", "--data", "no_such_data", "--dry-run"], "no_such_data"),
        (["info", "/nonexistent/run"], "config.json"),
    ],
)
def test_errors_exit_nonzero_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_sample_errors(run_dir, tmp_path, capsys):
    out = str(tmp_path / "x.npz")
    assert main(["sample", str(run_dir), "--solver", "midpoint", "--nfe", "3", "--out", out]) == 2
    assert "must be a multiple" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "--label", "3", "--out", out]) == 2
    assert "unconditional" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "--out", str(tmp_path / "x.txt")]) == 2
    assert ".npz or .png" in capsys.readouterr().err


def test_corrupt_checkpoint_is_reported(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "bad"
    shutil.copytree(run_dir, copy)
    for f in copy.glob("checkpoints/step_*/*.safetensors"):
        f.write_bytes(b"garbage")
    assert main(["sample", str(copy), "--out", str(tmp_path / "y.npz")]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_label_outside_trained_classes(tmp_path, capsys):
    out = tmp_path / "cond"
    argv = [
        "train",
        "--data",
        "8gaussians",
        "--steps",
        "10",
        "--out",
        str(out),
        "--quiet",
        "--set",
        "model.conditional=yes",
        *TINY,
    ]
    assert main(argv) == 0
    assert main(["sample", str(out), "--label", "8", "--out", str(tmp_path / "z.npz")]) == 2
    assert "[0, 8)" in capsys.readouterr().err
    assert (
        main(
            [
                "sample",
                str(out),
                "--label",
                "7",
                "--guidance",
                "2",
                "--num-samples",
                "16",
                "--nfe",
                "4",
                "--out",
                str(tmp_path / "z.npz"),
            ]
        )
        == 0
    )
    z = np.load(tmp_path / "z.npz")
    assert z["samples"].shape == (16, 2) and (z["labels"] == 7).all()


def test_periodic_eval_and_snapshots(tmp_path):
    out = tmp_path / "ev"
    argv = [
        "train",
        "--steps",
        "20",
        "--out",
        str(out),
        "--quiet",
        *TINY,
        "--set",
        "train.eval_every=10",
        "--set",
        "sample.solver.nfe=2",
    ]
    assert main(argv) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if any(k.startswith("eval/") for k in x)]
    assert [x["step"] for x in evals] == [10, 20]
    assert all(x["eval/w2"] > 0 for x in evals)
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == [
        "step_0000010.png",
        "step_0000020.png",
    ]


def test_sample_custom_grid(run_dir, tmp_path, capsys):
    out = tmp_path / "g.npz"
    argv = [
        "sample",
        str(run_dir),
        "--num-samples",
        "10",
        "--solver",
        "heun",
        "--grid-values",
        "0,0.5,0.8,1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert "NFE 6" in capsys.readouterr().out  # 3 Heun steps
    assert main([*argv[:-2], "--nfe", "4", "--out", str(out)]) == 2
    assert "--grid-values have 3 steps but --nfe 4 means 2 heun steps; pass --nfe 6" in (
        capsys.readouterr().err
    )
    bad = ["sample", str(run_dir), "--grid-values", "0,0.7,0.5,1", "--out", str(out)]
    assert main(bad) == 2
    assert "strictly monotone" in capsys.readouterr().err


def _weights(run):
    from flowmatch.train import load_checkpoint

    ckpt = load_checkpoint(run)
    return ckpt.step, {**ckpt.model, **{f"ema.{k}": v for k, v in (ckpt.ema or {}).items()}}


def test_same_command_same_bits_and_resume_equals_one_run(tmp_path):
    # Two identical commands give bit-identical checkpoints (model init included, seeded from
    # train.seed), and --steps 30 then --resume --steps 60 gives exactly the weights of
    # --steps 60 (the default learning rate is constant, so the run length does not change
    # step k's learning rate).
    args = ["--quiet", *TINY, "--set", "train.checkpoint_every=30"]
    for name in ("a", "b"):
        assert main(["train", "--steps", "60", "--out", str(tmp_path / name), *args]) == 0
    assert main(["train", "--steps", "30", "--out", str(tmp_path / "c"), *args]) == 0
    assert main(["train", "--resume", str(tmp_path / "c"), "--steps", "60", "--quiet"]) == 0
    step_a, a = _weights(tmp_path / "a")
    for other in ("b", "c"):
        step, w = _weights(tmp_path / other)
        assert step == step_a == 60 and w.keys() == a.keys()
        assert all(torch.equal(a[k], w[k]) for k in a), other
    # A different seed changes the initialisation (so the equality above is not vacuous).
    assert main(["train", "--steps", "60", "--out", str(tmp_path / "d"), *args,
                 "--set", "train.seed=1"]) == 0  # fmt: skip
    _, d = _weights(tmp_path / "d")
    assert not all(torch.equal(a[k], d[k]) for k in a)
