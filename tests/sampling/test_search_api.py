"""Search on trained runs through the API and the CLI."""

import numpy as np
import pytest
import torch

from flowmatch import api
from flowmatch.cli.main import main
from flowmatch.utils.options import OptionError


def test_api_search_on_2d_and_digits(tiny_run, tiny_digits):
    out = api.search(
        tiny_run,
        20,
        search="smc",
        reward="distance",
        budget=30,
        search_options={"steps": 5},
        reward_options={"point": [1.0, 1.0]},
    )
    assert out.samples.shape == (20, 2) and out.nfe <= 30
    ref = -(out.samples - torch.tensor([1.0, 1.0])).square().sum(1)
    torch.testing.assert_close(out.rewards, ref, atol=1e-5, rtol=1e-5)
    dig = api.search(
        tiny_digits,
        4,
        search="rbf",
        reward="digit",
        budget=20,
        search_options={"steps": 4, "init": 2},
        reward_options={"target": 7},
    )
    assert dig.samples.shape == (4, 1, 8, 8) and dig.labels is not None


def test_cli_search(tiny_run, tmp_path):
    out = tmp_path / "s.npz"
    args = [
        "sample",
        str(tiny_run.directory),
        "--search",
        "best_of_n",
        "--reward",
        "region",
        "--budget",
        "40",
        "--num-samples",
        "8",
        "--opt",
        "search.steps=4",
        "--opt",
        "reward.radius=2.0",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    data = np.load(out)
    assert data["samples"].shape == (8, 2) and data["rewards"].shape == (8,)
    assert main(["sample", str(tiny_run.directory), "--budget", "4", "--out", str(out)]) == 2
    assert main(["sample", str(tiny_run.directory), "--search", "rbf", "--out", str(out)]) == 2


def test_search_errors(tiny_run):
    with pytest.raises(OptionError, match="unknown reward"):
        api.search(tiny_run, 2, reward="nope")
    with pytest.raises(OptionError, match="unknown search"):
        api.search(tiny_run, 2, search="beam")


def test_cli_composite_fields(tiny_run, tmp_path):
    run_dir = str(tiny_run.directory)
    out = tmp_path / "c.npz"
    base = ["sample", run_dir, "--solver", "euler", "--nfe", "4", "--num-samples", "6", "--out"]
    assert main([*base, str(out), "--reference", run_dir, "--weight", "1.5"]) == 0
    ref = np.load(out)["samples"]
    assert main([*base, str(tmp_path / "p.npz")]) == 0
    np.testing.assert_allclose(ref, np.load(tmp_path / "p.npz")["samples"], atol=1e-5)  # same run
    assert main([*base, str(out), "--early", run_dir, "--switch", "0.5"]) == 0
    assert main([*base, str(out), "--control", "distance", "--opt", "reward.point=[3.0,3.0]"]) == 0
    assert main([*base, str(out), "--weight", "2"]) == 2
