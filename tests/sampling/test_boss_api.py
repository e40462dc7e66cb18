"""BOSS grids of a trained run: never worse than uniform in their own cost, stored and reused."""

import json

import pytest
import torch

from flowmatch import api
from flowmatch.cli.main import main
from flowmatch.sampling.boss import boss_grids, step_costs
from flowmatch.solvers import Euler, Midpoint
from flowmatch.utils.options import OptionError


def _path_cost(cost, fine, grid):
    idx = [int(round(v * (len(fine) - 1))) for v in grid.tolist()]
    return sum(float(cost[a, b]) for a, b in zip(idx[:-1], idx[1:], strict=True))


@pytest.mark.parametrize("sampler", [Euler(), Midpoint()], ids=["euler", "midpoint"])
def test_boss_beats_uniform_in_its_objective(tiny_run, sampler):
    x0 = tiny_run.noise(64, seed=0)
    cost, fine = step_costs(tiny_run.field, x0, sampler, fine_steps=20)
    grids = boss_grids(tiny_run.field, x0, sampler, [2, 4], fine_steps=20)
    for k, (grid, total) in grids.items():
        assert grid[0] == 0 and grid[-1] == 1 and (grid.diff() > 0).all() and len(grid) == k + 1
        uniform = torch.linspace(0, 1, k + 1, dtype=torch.float64)
        assert total == pytest.approx(_path_cost(cost, fine, grid))
        assert total <= _path_cost(cost, fine, uniform) + 1e-12


def test_grids_are_stored_and_used_by_name(tiny_run, tmp_path):
    run_dir = tiny_run.directory
    assert (
        main(["grid", str(run_dir), "--nfe", "2,4", "--fine-steps", "20", "--num-samples", "32"])
        == 0
    )
    stored = json.loads((run_dir / "grids.json").read_text())["boss"]
    assert set(stored) == {"euler/2", "euler/4"} and stored["euler/4"]["step"] == tiny_run.step
    sampler, grid, _ = api.sampling_plan(tiny_run, "euler", nfe=4, grid="boss")
    assert grid.tolist() == pytest.approx(stored["euler/4"]["grid"])
    res = api.generate(tiny_run, 10, solver="euler", nfe=4, grid="boss")
    assert res.nfe == 4
    out = tmp_path / "s.npz"
    assert (
        main(
            [
                "sample",
                str(run_dir),
                "--solver",
                "euler",
                "--nfe",
                "2",
                "--grid",
                "boss",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with pytest.raises(OptionError, match="no 'boss' grid for 8 euler steps"):
        api.sampling_plan(tiny_run, "euler", nfe=8, grid="boss")
    with pytest.raises(OptionError, match="computed at step"):
        from dataclasses import replace

        api.sampling_plan(replace(tiny_run, step=tiny_run.step + 1), "euler", nfe=4, grid="boss")
    with pytest.raises(OptionError, match="must be a fixed-step ODE sampler"):
        api.compute_grids(tiny_run, nfe=[4], solver="dopri5")
