"""A plugin module (tests/fm_example_plugin.py) trains, samples, evaluates and resumes from the CLI.

Its components are named in the run config only; ``plugins = ["fm_example_plugin"]`` is
recorded in config.json, so ``sample``, ``eval`` and ``--resume`` import it again.
"""

import json

import numpy as np
import pytest
import torch

from flowmatch import api
from flowmatch.cli.main import main

PLUGIN = [
    "--set", 'plugins=["fm_example_plugin"]',
    "--set", "coupling.kind=reverse_blocks",
    "--set", "coupling.every=4",
    "--set", "source.kind=laplace",
    "--set", "model.hidden=32",
    "--set", "model.depth=2",
    "--set", "data.n_train=1024",
    "--set", "data.n_test=256",
    "--set", "train.batch_size=64",
    "--set", "train.log_every=10",
    "--set", "train.checkpoint_every=20",
    "--set", "sample.num_samples=100",
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _forget_the_plugin_afterwards():
    # Registries are process-wide: remove what the plugin registered so later tests see only
    # flowmatch's own components (as a fresh process would).
    yield
    import sys

    from flowmatch.couplings import COUPLINGS
    from flowmatch.solvers import SAMPLERS
    from flowmatch.sources import SOURCES

    COUPLINGS.unregister("reverse_blocks")
    SOURCES.unregister("laplace")
    SAMPLERS.unregister("ralston")
    sys.modules.pop("fm_example_plugin", None)


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("plugin") / "run"
    assert main(["train", "--steps", "40", "--out", str(out), "--quiet", *PLUGIN]) == 0
    return out


def test_plugin_components_are_used_and_recorded(plugin_run):
    cfg = json.loads((plugin_run / "config.json").read_text())["config"]
    assert cfg["plugins"] == ["fm_example_plugin"]
    assert cfg["coupling"] == {"kind": "reverse_blocks", "every": 4}
    assert cfg["source"] == {"kind": "laplace"}
    run = api.load_run(plugin_run)
    assert type(run.source).__name__ == "LaplaceSource"
    # The run samples from its own (Laplace) source: E|x| = 1, not sqrt(2/pi) = 0.80.
    noise = run.noise(20_000, seed=0)
    assert abs(noise.abs().mean().item() - 1.0) < 0.03


def test_plugin_sampler_from_the_cli(plugin_run, tmp_path):
    out = tmp_path / "s.npz"
    argv = ["sample", str(plugin_run), "--solver", "ralston", "--nfe", "4", "--num-samples", "50"]
    assert main([*argv, "--out", str(out)]) == 0
    assert np.load(out)["samples"].shape == (50, 2)


def test_plugin_run_evaluates_with_its_source(plugin_run, capsys):
    argv = ["eval", str(plugin_run), "--nfe", "2", "--solver", "ralston", "--num-samples", "100"]
    assert main([*argv, "--no-reference"]) == 0
    report = json.loads((plugin_run / "eval.json").read_text())
    assert report["rows"][0]["solver"] == "ralston" and np.isfinite(report["nll"])
    # The held-out NLL uses the run's source: recomputing with a Gaussian source differs.
    from flowmatch.solvers import log_likelihood
    from flowmatch.sources import GaussianSource

    run = api.load_run(plugin_run)
    x = torch.randn(8, 2)
    own = log_likelihood(run.field, x, source=run.source).log_prob
    gauss = log_likelihood(run.field, x, source=GaussianSource()).log_prob
    assert not torch.allclose(own, gauss)


def test_plugin_run_resumes_from_the_cli(plugin_run):
    assert main(["train", "--resume", str(plugin_run), "--steps", "60", "--quiet"]) == 0
    assert api.load_run(plugin_run).step == 60


def test_unknown_plugin_is_one_line(capsys, tmp_path):
    argv = ["train", "--set", 'plugins=["no_such_plugin_mod"]', "--dry-run"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "plugin 'no_such_plugin_mod' could not be imported" in err[0]
