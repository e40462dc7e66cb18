"""End-to-end few-step CLI on tiny runs: train a two-time objective, distil a teacher, sample, eval."""

import hashlib
import json

import numpy as np
import pytest
import torch

from flowmatch.cli.main import main

TINY = [
    "--set", "model.hidden=32",
    "--set", "model.depth=2",
    "--set", "data.n_train=2048",
    "--set", "data.n_test=512",
    "--set", "train.batch_size=64",
    "--set", "train.log_every=10",
    "--set", "train.checkpoint_every=10",
    "--set", "sample.num_samples=100",
]  # fmt: skip


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "fm"
    assert main(["train", "--steps", "20", "--out", str(out), "--quiet", *TINY]) == 0
    return out


@pytest.mark.parametrize("kind", ["meanflow", "splitmeanflow", "flowmap_lsd"])
def test_train_two_time_objective_then_sample_and_eval(tmp_path, kind, capsys):
    out = tmp_path / kind
    args = ["train", "--steps", "10", "--out", str(out), "--quiet", *TINY]
    assert main([*args, "--set", f"objective.kind={kind}"]) == 0
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["model"]["time_inputs"] == 2 and cfg["sample"]["solver"]["kind"] == "flow_map"
    assert (
        main(
            [
                "sample",
                str(out),
                "--nfe",
                "2",
                "--num-samples",
                "50",
                "--out",
                str(tmp_path / "s.npz"),
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "s.npz")["samples"].shape == (50, 2)
    capsys.readouterr()
    assert main(["eval", str(out), "--nfe", "1,2,4", "--num-samples", "100"]) == 0
    printed = capsys.readouterr().out
    assert "note: no dopri5 reference row" in printed and "NLL and straightness skipped" in printed
    rows = json.loads((out / "eval.json").read_text())["rows"]
    assert [(r["solver"], r["nfe"]) for r in rows] == [
        ("flow_map", 1),
        ("flow_map", 2),
        ("flow_map", 4),
    ]


def _sha(run, weights):
    from flowmatch.train.checkpoint import module_file

    ckpt = sorted((run / "checkpoints").glob("step_*"))[-1]
    name = module_file("model", ema=weights == "ema")
    return hashlib.sha256((ckpt / name).read_bytes()).hexdigest()


SETS = {
    "reflow": [
        "objective.num_pairs=300",
        "objective.chunk=128",
        "objective.pair_solver=midpoint",
        "objective.pair_nfe=8",
    ],
    "flowmap": [],
    "freeflow": [],
    "scm": ["objective.warmup=5"],
    "boss": [
        "objective.num_trajectories=200",
        "objective.chunk=64",
        "objective.num_steps=2",
        "objective.grid_samples=64",
        "objective.fine_steps=20",
    ],
}


@pytest.mark.parametrize("method", sorted(SETS))
def test_distill_records_the_teacher_and_the_student_samples(teacher, tmp_path, method, capsys):
    out = tmp_path / method
    sets = [a for s in SETS[method] for a in ("--set", s)]
    assert (
        main(
            [
                "distill",
                str(teacher),
                "--method",
                method,
                "--out",
                str(out),
                "--steps",
                "10",
                "--quiet",
                *sets,
            ]
        )
        == 0
    )
    info = json.loads((out / "config.json").read_text())
    rec = info["teacher"]
    assert rec["sha256"] == _sha(teacher, rec["weights"]) and rec["step"] == 20
    ckpt = sorted((out / "checkpoints").glob("step_*"))[-1]
    frozen = json.loads((ckpt / "state.json").read_text()).get("frozen", {})
    # methods that distil velocities train against the frozen teacher
    assert ("teacher" in frozen) == (method in ("flowmap", "freeflow", "scm"))
    capsys.readouterr()
    nfe = "2" if method == "boss" else "1,2"
    assert main(["eval", str(out), "--nfe", nfe, "--num-samples", "100", "--no-reference"]) == 0
    rows = json.loads((out / "eval.json").read_text())["rows"]
    assert rows and all(np.isfinite(r["w2"]) for r in rows)
    npz = tmp_path / "s.npz"
    assert main(["sample", str(out), "--num-samples", "20", "--out", str(npz)]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert f"sha256 {rec['sha256'][:16]}" in capsys.readouterr().out
    if method == "boss":
        # The student samples on the teacher's BOSS grid (a values grid in its config) and
        # the sampling suite computes the student's own BOSS grid from it on request.
        grid = info["config"]["sample"]["grid"]
        assert grid["kind"] == "values" and len(grid["values"]) == 3
        g = ["grid", str(out), "--nfe", "2", "--fine-steps", "20", "--num-samples", "32"]
        assert main(g) == 0
        stored = json.loads((out / "grids.json").read_text())["boss"]["euler/2"]["grid"]
        assert stored[0] == 0 and stored[-1] == 1 and len(stored) == 3
        assert main(["sample", str(out), "--grid", "boss", "--nfe", "2", "--out", str(npz)]) == 0


def test_distill_resumes_and_reuses_its_pairs(teacher, tmp_path, capsys):
    out = tmp_path / "rf"
    sets = [a for s in SETS["reflow"] for a in ("--set", s)]
    base = ["distill", str(teacher), "--method", "reflow", "--out", str(out), "--quiet"]
    assert main([*base, "--steps", "10", *sets]) == 0
    assert "making 300 teacher pairs" in capsys.readouterr().out
    run_id = json.loads((out / "config.json").read_text())["run_id"]
    assert main([*base, "--steps", "10", *sets]) == 2  # refuses to overwrite
    assert "already holds a run" in capsys.readouterr().err
    assert main([*base, "--steps", "20", "--resume"]) == 0
    assert "making" not in capsys.readouterr().out  # pairs reused
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 20
    assert json.loads((out / "config.json").read_text())["run_id"] == run_id
    assert main([*base, "--steps", "20", "--resume"]) == 0  # nothing left to do
    assert "nothing to do" in capsys.readouterr().out
    assert main([*base, "--steps", "10", "--overwrite", *sets]) == 0
    printed = capsys.readouterr().out
    assert "making" not in printed  # the same pairs, kept by --overwrite
    assert json.loads((out / "config.json").read_text())["run_id"] != run_id
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 10
    # k-rectified flow: a reflow student is a velocity run, so it teaches the next reflow.
    third = tmp_path / "rf3"
    argv = ["distill", str(out), "--method", "reflow", "--out", str(third), "--quiet"]
    assert main([*argv, "--steps", "5", *sets]) == 0
    rec = json.loads((third / "config.json").read_text())["teacher"]
    assert rec["run"] == str(out.resolve()) and rec["objective"] == "reflow"


def test_scm_with_the_adversarial_term_trains_a_discriminator_and_resumes_exactly(
    teacher, tmp_path, capsys
):
    sets = ["--set", "objective.warmup=5", "--set", "objective.adversarial=0.5"]
    sets += ["--set", "objective.adv_hidden=16", "--set", "train.checkpoint_every=5"]

    def run(out, *extra):
        argv = ["distill", str(teacher), "--method", "scm", "--out", str(out), "--quiet"]
        assert main([*argv, *extra]) == 0

    run(tmp_path / "one", "--steps", "10", *sets)
    run(tmp_path / "two", "--steps", "5", *sets)
    run(tmp_path / "two", "--steps", "10", "--resume")
    last = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert {"adv_d_loss", "adv_g_loss", "scm_loss"} <= set(last[-1])
    for name in ("model", "discriminator"):
        a, b = (
            (tmp_path / d / "checkpoints" / "step_0000010" / f"{name}.safetensors").read_bytes()
            for d in ("one", "two")
        )
        assert a == b  # the discriminator's weights and optimiser state were resumed
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "one"), "--nfe", "1", "--num-samples", "100"]) == 0


def test_distill_refuses_bad_methods_and_objectives(teacher, tmp_path, capsys):
    args = ["distill", str(teacher), "--out", str(tmp_path / "x"), "--quiet"]
    assert main([*args, "--method", "flowmap", "--set", "objective.kind=reflow"]) == 2
    assert "not a flowmap objective" in capsys.readouterr().err
    assert main([*args, "--method", "nope"]) == 2
    assert "argument --method: invalid choice: 'nope'" in capsys.readouterr().err
    assert main([*args, "--method", "reflow", "--resume", "--set", "train.lr=1e-3"]) == 2
    assert "--resume continues a distillation" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_distill_refuses_methods_that_would_drop_value_conditions(tmp_path, capsys):
    teacher = tmp_path / "angle"
    args = ["train", "--data", "8gaussians_angle", "--steps", "2", "--out", str(teacher)]
    assert main([*args, "--quiet", *TINY]) == 0
    for method in ("reflow", "boss", "freeflow"):
        out = tmp_path / method
        argv = ["distill", str(teacher), "--method", method, "--out", str(out), "--quiet"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"--method {method} draws the teacher's conditions itself, labels only" in err
        assert "conditioned on ['values']" in err and not out.exists()


@pytest.mark.parametrize("kind", ["meanflow", "splitmeanflow"])
def test_distill_a_teacher_with_other_two_time_objectives(teacher, tmp_path, kind):
    out = tmp_path / kind
    args = ["distill", str(teacher), "--method", "flowmap", "--out", str(out), "--steps", "5"]
    assert main([*args, "--quiet", "--set", f"objective.kind={kind}"]) == 0
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["objective"]["kind"] == kind and cfg["model"]["time_inputs"] == 2


def test_a_flow_map_run_samples_with_the_flow_map_sampler_whatever_its_default(tmp_path, capsys):
    out = tmp_path / "mf"
    sets = ["--set", "objective.kind=meanflow", "--set", "sample.solver=midpoint"]
    assert main(["train", "--steps", "5", "--out", str(out), "--quiet", *TINY, *sets]) == 0
    npz = tmp_path / "s.npz"
    assert main(["sample", str(out), "--num-samples", "10", "--out", str(npz)]) == 0
    assert "NFE 1" in capsys.readouterr().out  # flow_map with its default budget
    assert main(["sample", str(out), "--solver", "midpoint", "--out", str(npz)]) == 2
    assert "use a sampler for flow_map fields" in capsys.readouterr().err


def test_stochastic_flow_map_sampling_is_seeded_per_sample(tmp_path):
    from flowmatch import api

    out = tmp_path / "mf"
    assert (
        main(
            [
                "train",
                "--steps",
                "5",
                "--out",
                str(out),
                "--quiet",
                *TINY,
                "--set",
                "objective.kind=meanflow",
            ]
        )
        == 0
    )
    run = api.load_run(out)
    a = api.generate(run, 30, solver="flow_map_renoise", nfe=2, seed=3, batch_size=7).samples
    b = api.generate(run, 30, solver="flow_map_renoise", nfe=2, seed=3, batch_size=30).samples
    c = api.generate(run, 30, solver="flow_map_renoise", nfe=2, seed=4).samples
    torch.testing.assert_close(a, b)  # the noise of sample i does not depend on the batching
    assert not torch.allclose(a, c)
    report = api.evaluate(
        run,
        api.load_data(run.config.data)[1],
        nfe=[2],
        solvers=["flow_map_renoise"],
        num_samples=50,
    )
    assert [r["solver"] for r in report["rows"]] == ["flow_map_renoise"]


def test_an_scm_run_with_another_source_is_evaluated_without_the_renoising_sampler(
    tmp_path, capsys
):
    teacher = tmp_path / "t"
    sets = [*TINY, "--set", "data.name=moons", "--set", "source.kind=eight_gaussians"]
    assert main(["train", "--steps", "10", "--out", str(teacher), "--quiet", *sets]) == 0
    out = tmp_path / "scm"
    argv = ["distill", str(teacher), "--method", "scm", "--out", str(out), "--quiet"]
    assert main([*argv, "--steps", "5", "--set", "objective.warmup=2"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--nfe", "1,2", "--num-samples", "100"]) == 0
    printed = capsys.readouterr().out
    assert "no flow_map_renoise rows: flow_map_renoise re-noises with N(0, I)" in printed
    rows = json.loads((out / "eval.json").read_text())["rows"]
    assert {r["solver"] for r in rows} == {"flow_map"}
    npz = tmp_path / "s.npz"
    argv = ["sample", str(out), "--solver", "flow_map_renoise", "--nfe", "2", "--out", str(npz)]
    assert main(argv) == 2
    assert "has another source" in capsys.readouterr().err
