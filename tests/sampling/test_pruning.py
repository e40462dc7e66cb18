"""Source pruning: fitted axes, analytic acceptance rate, reproducible noise, CLI."""

import math

import numpy as np
import pytest
import torch

from flowmatch import api
from flowmatch.cli.main import main
from flowmatch.sampling.pruning import PrunedGaussian, fit_sparse_axes


def test_axes_of_a_flat_coordinate_are_data_sparse(gen):
    data = torch.randn(500, 3, generator=gen, dtype=torch.float64)
    data[:, 2] = 0.0  # no point has a component along +-e3
    axes = fit_sparse_axes(data, threshold=1e-9)
    assert len(axes) == 2
    torch.testing.assert_close(
        axes.abs(), torch.tensor([[0, 0, 1.0], [0, 0, 1.0]], dtype=torch.float64)
    )


@pytest.mark.parametrize("tau", [0.3, 0.5, 0.9])
def test_acceptance_rate_is_the_angular_measure(tau, gen):
    # axes +-a in 2-D: a uniform angle is rejected when |cos| > tau, probability 2 acos(tau) / pi
    axes = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    src = PrunedGaussian(axes, tau)
    cand = torch.randn(200_000, 2, generator=gen, dtype=torch.float64)
    rate = src.accepts(cand).double().mean().item()
    p = 1 - 2 * math.acos(tau) / math.pi
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / len(cand))
    x = src.sample((1000, 2), gen, dtype=torch.float64)
    assert x.shape == (1000, 2) and bool(src.accepts(x).all())
    # rejection depends on the direction only: the radius keeps its chi distribution
    assert abs(x.square().sum(1).mean().item() - 2.0) < 0.15


def test_errors():
    with pytest.raises(ValueError, match="tau must be in"):
        PrunedGaussian(torch.zeros(1, 2), 1.5)
    with pytest.raises(RuntimeError, match="raise tau"):
        PrunedGaussian(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), -0.99, max_rounds=2).sample((10, 2))


def test_fit_and_sample_a_run(tiny_digits, tmp_path):
    info = api.fit_pruning(tiny_digits, threshold=0.05)
    assert info["tau"] == pytest.approx(2.5 / 8) and len(info["axes"]) > 0
    pruned = api.pruned_run(tiny_digits)
    a = pruned.noise(40, seed=1)
    assert bool(pruned.source.accepts(a).all())
    b = pruned.noise(20, seed=1)
    torch.testing.assert_close(a[:20], b)  # per-chunk streams: independent of the count
    out = tmp_path / "p.npz"
    assert main(["prune", str(tiny_digits.directory), "--threshold", "0.05"]) == 0
    assert (
        main(
            [
                "sample",
                str(tiny_digits.directory),
                "--prune",
                "--nfe",
                "4",
                "--num-samples",
                "10",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert np.load(out)["samples"].shape == (10, 1, 8, 8)
