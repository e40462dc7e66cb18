"""The Python API refuses what the CLI refuses, with errors naming the argument."""

import json
import math

import pytest
import torch

from flowmatch import api
from flowmatch.objectives import FlowMatchingObjective
from flowmatch.utils.options import OptionError

OVERRIDES = [
    "model.hidden=16", "model.depth=2", "data.n_train=256", "data.n_test=128",
    "train.batch_size=32", "train.log_every=5", "train.checkpoint_every=5",
    "sample.num_samples=20",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    cfg, train, test = api.resolve_config(overrides=OVERRIDES, steps=10)
    api.train_run(cfg, train, out_dir=out, test_ds=test)
    return out, cfg, train


def test_train_run_refuses_an_existing_run_and_contradictory_flags(trained):
    out, cfg, train = trained
    before = (out / "config.json").read_text()
    with pytest.raises(
        ValueError, match=r"already holds a run .* \(resume=True\), .*\(overwrite=True\)"
    ):
        api.train_run(cfg, train, out_dir=out)
    with pytest.raises(
        ValueError, match="resume=True continues the run .* overwrite=True replaces it"
    ):
        api.train_run(cfg, train, out_dir=out, resume=True, overwrite=True)
    assert (out / "config.json").read_text() == before
    info = json.loads(before)
    assert len(info["run_id"]) == 32 and info["data"]["fingerprint"]["dtype"] == "float32"


def test_resume_with_other_data_is_refused(trained):
    out, cfg, _ = trained
    _, other, _ = api.resolve_config(overrides=[*OVERRIDES, "data.n_train=200"], steps=10)
    with pytest.raises(ValueError, match=r"changed since it was trained \(shape, contents"):
        api.train_run(cfg, other, out_dir=out, resume=True)


def test_generate_and_load_run_check_their_arguments(trained):
    out, _, _ = trained
    run = api.load_run(out)
    with pytest.raises(OptionError, match=r"guidance must be a finite number, got nan"):
        api.generate(run, 4, guidance=math.nan)
    with pytest.raises(ValueError, match=r"seed must be >= 0, got -1"):
        api.generate(run, 4, seed=-1)
    with pytest.raises(ValueError, match=r"num_samples must be >= 1, got 0"):
        run.noise(0, seed=0)
    with pytest.raises(TypeError, match=r"use_ema must be True, False or None, got 'yes'"):
        api.load_run(out, use_ema="yes")
    with pytest.raises(ValueError, match=r"device 'gpu9' is not a valid torch device"):
        api.load_run(out, device="gpu9")


def test_objective_times_must_have_the_data_dtype():
    with pytest.raises(TypeError, match=r"t must have x1's dtype torch.float32, got torch.float64"):
        FlowMatchingObjective()(
            lambda x, t, cond=None: x, torch.zeros(4, 2), t=torch.rand(4, dtype=torch.float64)
        )
