"""CLI paths of the sampling suite not covered next to their components: --along, mixed, reflective."""

import numpy as np
import pytest

from flowmatch import api
from flowmatch.cli.main import main
from flowmatch.utils.options import OptionError


def test_cli_along_equals_the_api(tiny_run, tmp_path):
    out = tmp_path / "vp.npz"
    args = ["sample", str(tiny_run.directory), "--solver", "midpoint", "--nfe", "8"]
    assert main([*args, "--num-samples", "12", "--along", "vp", "--out", str(out)]) == 0
    ref = api.generate(api.run_along(tiny_run, "vp"), 12, solver="midpoint", nfe=8).samples
    np.testing.assert_allclose(np.load(out)["samples"], ref.numpy(), rtol=1e-6, atol=1e-6)
    assert main([*args, "--along", "nope", "--out", str(out)]) == 2


def test_cli_mixed_is_reproducible_and_windowed(tiny_run, tmp_path):
    base = ["sample", str(tiny_run.directory), "--solver", "mixed", "--num-samples", "10"]
    opts = ["--opt", "solver.steps=6", "--opt", "solver.window_hi=0.5", "--opt", "solver.ode=heun"]
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert main([*base, *opts, "--seed", "3", "--out", str(a)]) == 0
    assert main([*base, *opts, "--seed", "3", "--out", str(b)]) == 0
    np.testing.assert_array_equal(np.load(a)["samples"], np.load(b)["samples"])
    # 3 SDE steps (1 NFE each) in [0, 0.5), 3 Heun steps (2 each) after
    res = api.generate(
        tiny_run, 4, solver="mixed", solver_options={"steps": 6, "window_hi": 0.5, "ode": "heun"}
    )
    assert res.nfe == 3 + 3 * 2
    bad = [*base, "--opt", "solver.ode=dopri5", "--out", str(a)]
    assert main(bad) == 2


def test_cli_reflective_on_a_conditional_run(tiny_digits, tiny_run, tmp_path, capsys):
    out = tmp_path / "r.npz"
    args = ["sample", str(tiny_digits.directory), "--solver", "reflective", "--label", "3"]
    opts = ["--opt", "solver.steps=4", "--opt", "solver.until=0.5", "--num-samples", "5"]
    assert main([*args, *opts, "--out", str(out)]) == 0
    data = np.load(out)
    assert data["samples"].shape == (5, 1, 8, 8) and (data["labels"] == 3).all()
    capsys.readouterr()
    assert (
        main(["sample", str(tiny_run.directory), "--solver", "reflective", "--out", str(out)]) == 2
    )
    assert "label-conditional" in capsys.readouterr().err


def test_cli_flowopt_steering_raises_the_reward(tiny_run, tmp_path, capsys):
    out = tmp_path / "f.npz"
    base = ["sample", str(tiny_run.directory), "--search", "flowopt", "--reward", "distance"]
    opts = ["--opt", "search.steps=4", "--opt", "reward.point=[1.5,1.5]", "--num-samples", "16"]
    assert main([*base, *opts, "--budget", "40", "--out", str(out)]) == 0
    steered = np.load(out)["rewards"]
    plain = api.search(
        tiny_run,
        16,
        search="flowopt",
        reward="distance",
        budget=4,
        search_options={"steps": 4},
        reward_options={"point": [1.5, 1.5]},
    )  # one pass: no ascent step, the plain ODE sample of the same noise
    assert steered.mean() > float(plain.rewards.mean()) + 0.5
    capsys.readouterr()
    assert main([*base[:4], "--reward", "region", "--budget", "20", "--out", str(out)]) == 2
    assert "has no gradient" in capsys.readouterr().err


def test_switch_auto_takes_the_latest_time_when_both_models_agree(tiny_run, tiny_digits, tmp_path):
    # the same run early and late: every switch gives the same samples and the same score, so
    # the sweep returns the last interior time of the grid (Euler 5 steps: 0.8)
    choice = api.choose_switch_time(tiny_run, tiny_run, solver="euler", nfe=5, num_samples=64)
    assert choice.switch == pytest.approx(0.8) and choice.early_steps == 4
    assert set(choice.scores.values()) == {choice.reference}
    with pytest.raises(OptionError, match="early must sample what the run samples"):
        api.choose_switch_time(tiny_run, tiny_digits, nfe=4)
    with pytest.raises(OptionError, match="deterministic fixed-step solver"):
        api.choose_switch_time(tiny_run, tiny_run, solver="euler_maruyama", nfe=4)
    out = tmp_path / "s.npz"
    run_dir = str(tiny_run.directory)
    args = ["sample", run_dir, "--solver", "euler", "--nfe", "5", "--num-samples", "8"]
    assert main([*args, "--early", run_dir, "--switch", "auto", "--out", str(out)]) == 0
    assert main([*args, "--early", run_dir, "--switch", "soon", "--out", str(out)]) == 2
