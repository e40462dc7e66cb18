"""Observation-conditioned sampling of trained runs (API and CLI): observed part kept."""

import numpy as np
import pytest
import torch

from flowmatch import api
from flowmatch.cli.main import main
from flowmatch.data import load_digits
from flowmatch.utils.options import OptionError
from tiny_runs import train_tiny


def test_mask_with_nan_missing_values_on_digits(tiny_digits):
    x, _ = load_digits("test")
    x = x[:6]
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    values = torch.where(mask, x, torch.full_like(x, float("nan")))
    res = api.observe(tiny_digits, values, mask=mask, nfe=8, samples_per_observation=2)
    assert res.samples.shape == (12, 1, 8, 8) and torch.isfinite(res.samples).all()
    m = mask.repeat_interleave(2, 0)
    err = (res.samples - x.repeat_interleave(2, 0))[m].abs().max()
    assert err < 1e-5 and res.labels.tolist() == [10] * 12  # the null label


def test_pooling_on_images_keeps_block_means(tiny_digits):
    x, _ = load_digits("test")
    from flowmatch.sampling.observe import AvgPool

    y = AvgPool(2, dims=2).forward(x[:4])
    # the 40-step model's Jacobian is large: a weak DPS weight keeps its samples O(1)
    res = api.observe(tiny_digits, y, factor=2, solver="heun", nfe=8, method="dps", noise_std=1.0)
    torch.testing.assert_close(AvgPool(2, dims=2).forward(res.samples), y, atol=1e-5, rtol=0)


def test_standardised_run_pooling(tmp_path):
    # per-feature standardisation: pooling becomes weighted pooling in model space
    g = torch.Generator().manual_seed(0)
    data = torch.randn(600, 8, generator=g) * torch.linspace(0.5, 3, 8) + 2
    np.save(tmp_path / "series.npy", data.numpy())
    run = train_tiny(
        tmp_path / "run",
        str(tmp_path / "series.npy"),
        extra=["data.standardize=per_feature", "data.n_train=500", "data.n_test=100"],
    )
    assert not bool((run.standardizer.std == 1).all())
    y = data[:5].reshape(5, 4, 2).mean(-1)
    res = api.observe(run, y, factor=2, nfe=6)
    torch.testing.assert_close(res.samples.reshape(5, 4, 2).mean(-1), y, atol=1e-4, rtol=1e-5)


def test_cli_observe(tiny_run, tmp_path):
    obs = tmp_path / "obs.npz"
    np.savez(obs, mask=np.array([True, False]), values=np.array([[0.5, 0.0], [-1.0, 0.0]]))
    out = tmp_path / "imputed.npz"
    assert (
        main(
            [
                "sample",
                str(tiny_run.directory),
                "--observe",
                str(obs),
                "--num-samples",
                "4",
                "--solver",
                "euler_maruyama",
                "--nfe",
                "10",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    s = np.load(out)["samples"]
    assert s.shape == (4, 2) and np.allclose(s[:, 0], [0.5, 0.5, -1.0, -1.0], atol=1e-6)
    bad = tmp_path / "bad.npz"
    np.savez(bad, values=np.zeros((2, 2)))
    assert main(["sample", str(tiny_run.directory), "--observe", str(bad), "--out", str(out)]) == 2
    assert (
        main(
            [
                "sample",
                str(tiny_run.directory),
                "--observe",
                str(obs),
                "--num-samples",
                "3",
                "--out",
                str(out),
            ]
        )
        == 2
    )


def test_observe_errors(tiny_run):
    with pytest.raises(OptionError, match="exactly one of mask"):
        api.observe(tiny_run, torch.zeros(2, 2))
    with pytest.raises(OptionError, match="mask must have the sample shape"):
        api.observe(tiny_run, torch.zeros(2, 2), mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(OptionError, match="label=1 given but the model is unconditional"):
        api.observe(tiny_run, torch.zeros(2, 2), mask=torch.ones(2, dtype=torch.bool), label=1)
