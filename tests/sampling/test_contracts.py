"""The sampling suite keeps main's contracts: seeds >= 0, outputs never onto run files, one line."""

import numpy as np
import pytest
import torch

from flowmatch import api
from flowmatch.cli.main import main
from flowmatch.interfaces import Condition
from flowmatch.utils.options import OptionError


def test_api_entry_points_refuse_negative_seeds(tiny_run):
    with pytest.raises(ValueError, match=r"seed must be >= 0, got -1"):
        api.search(tiny_run, 2, budget=8, seed=-1)
    with pytest.raises(ValueError, match=r"seed must be >= 0, got -2"):
        api.observe(tiny_run, np.zeros((2, 2), np.float32), mask=np.ones(2, bool), seed=-2)
    with pytest.raises(ValueError, match=r"seed must be >= 0, got -3"):
        api.compute_grids(tiny_run, nfe=[2], seed=-3)


def test_cli_refusals_are_one_line(tiny_run, tmp_path, capsys):
    run_dir = str(tiny_run.directory)
    before = sorted(p.name for p in tiny_run.directory.iterdir())
    np.savez(tmp_path / "c.npz", labels=np.zeros(2, np.int64))
    np.savez(tmp_path / "t.npz", samples=np.zeros((2, 2), np.float32))
    cases = [
        (
            [
                "sample",
                run_dir,
                "--search",
                "best_of_n",
                "--budget",
                "8",
                "--cond",
                str(tmp_path / "c.npz"),
                "--out",
                str(tmp_path / "s.npz"),
            ],
            "--cond does not apply with --search",
        ),
        (
            [
                "reconstruct",
                run_dir,
                "--target",
                str(tmp_path / "t.npz"),
                "--out",
                str(tiny_run.directory / "config.json"),
            ],
            "--out must end in .npz",
        ),
        (
            [
                "reconstruct",
                run_dir,
                "--target",
                str(tmp_path / "t.npz"),
                "--out",
                str(tiny_run.directory / "checkpoints" / "x.npz"),
            ],
            "would overwrite a file of run",
        ),
        (
            [
                "sample",
                run_dir,
                "--search",
                "smc",
                "--budget",
                "8",
                "--seed",
                "-1",
                "--out",
                str(tmp_path / "s.npz"),
            ],
            "--seed",
        ),
    ]
    cases.append(
        (
            [
                "sample",
                run_dir,
                "--search",
                "smc",
                "--budget",
                "8",
                "--control",
                "distance",
                "--out",
                str(tmp_path / "s.npz"),
            ],
            "--control does not apply with --search",
        )
    )
    cases.append(
        (
            ["sample", run_dir, "--control-scale", "2", "--out", str(tmp_path / "s.npz")],
            "--control-scale needs --control",
        )
    )
    for args, message in cases:
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    assert sorted(p.name for p in tiny_run.directory.iterdir()) == before


def test_label_only_paths_refuse_runs_conditioned_on_values(tmp_path):
    from tiny_runs import train_tiny

    run = train_tiny(tmp_path / "angle", "8gaussians_angle", steps=20)
    assert run.cond.kinds == ("values",)
    x = torch.zeros(2, 2)
    calls = [
        lambda: api.search(run, 2, budget=10, search_options={"steps": 5}),
        lambda: api.observe(run, x, mask=torch.tensor([True, False])),
        lambda: api.compute_grids(run, nfe=[2], fine_steps=4, num_samples=4),
        lambda: api.reconstruct(run, x, nfe=2, iterations=1),
    ]
    for call in calls:
        with pytest.raises(OptionError, match=r"conditioned on \['values'\], which this sampling"):
            call()
    assert api.generate(run, 3, cond=Condition(values=torch.zeros(1, 1)), nfe=2).nfe == 2
