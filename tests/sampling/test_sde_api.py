"""SDE sampling of trained runs through the API and the CLI."""

import numpy as np
import pytest
import torch

from flowmatch import api
from flowmatch.cli.main import main
from flowmatch.solvers import EulerMaruyama, MixedSampler


def test_generate_binds_the_run_path_and_is_reproducible(tiny_run):
    sampler, grid, _ = api.sampling_plan(tiny_run, "euler_maruyama", nfe=10)
    assert isinstance(sampler, EulerMaruyama) and sampler.path is tiny_run.path
    a = api.generate(tiny_run, 50, solver="euler_maruyama", nfe=10, seed=3, batch_size=7).samples
    b = api.generate(tiny_run, 50, solver="euler_maruyama", nfe=10, seed=3, batch_size=50).samples
    c = api.generate(tiny_run, 50, solver="euler_maruyama", nfe=10, seed=4).samples
    # the noise of sample i depends only on (seed, i); the network's float32 matmuls may
    # round differently at another batch size, hence the tolerance
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a, c) and torch.isfinite(a).all()
    d = api.generate(tiny_run, 20, solver="euler_maruyama", nfe=10, seed=3).samples
    torch.testing.assert_close(a[:20], d, atol=1e-5, rtol=1e-5)


def test_mixed_through_the_api(tiny_run):
    sampler, grid, cfg = api.sampling_plan(
        tiny_run, "mixed", solver_options={"steps": 8, "ode": "heun", "window_hi": 0.25}
    )
    assert isinstance(sampler, MixedSampler) and len(grid) == 9 and cfg.num_steps() == 8
    res = api.generate(tiny_run, 16, solver="mixed", solver_options={"steps": 8, "ode": "heun"})
    assert res.nfe == 4 * 1 + 4 * 2  # window [0, 0.5): 4 SDE steps, then 4 Heun steps


def test_cli_samples_with_an_sde(tiny_run, tmp_path):
    out = tmp_path / "sde.npz"
    run_dir = str(tiny_run.checkpoint.parent.parent)
    args = ["sample", run_dir, "--solver", "euler_maruyama", "--nfe", "12", "--num-samples", "30"]
    assert main([*args, "--opt", "solver.diffusion=memoryless", "--out", str(out)]) == 0
    assert np.load(out)["samples"].shape == (30, 2)


def test_non_gaussian_source_is_refused(tiny_run):
    from dataclasses import replace

    class Uniform:
        pass

    run = replace(tiny_run, source=Uniform())
    with pytest.raises(ValueError, match="standard normal source"):
        api.sampling_plan(run, "euler_maruyama", nfe=4)
