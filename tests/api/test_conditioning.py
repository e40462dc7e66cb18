"""Runs conditioned on values and context: config, stored spec, generate(cond=...), evaluate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from flowmatch import api
from flowmatch.api.run import run_cond, run_values_standardizer
from flowmatch.config import to_dict
from flowmatch.config.build import build_modules, cond_spec
from flowmatch.interfaces import Condition, CondSpec
from flowmatch.utils.options import OptionError

TINY = ["model.hidden=16", "model.depth=1", "data.n_train=256", "data.n_test=64"]


def _run(overrides=(), data="8gaussians_angle"):
    cfg, train, test = api.resolve_config(data=data, overrides=[*TINY, *overrides])
    train = api.prepare_dataset(cfg, train)
    spec = cond_spec(cfg.model, train)
    modules = build_modules(cfg, train.sample_shape, spec)
    info = {"config": to_dict(cfg), "data": api.data_info(train)}
    return api.assemble_run(cfg, info, modules, step=0), train, test


@pytest.fixture(scope="module")
def angle_run():
    return _run()


def test_config_and_stored_spec(angle_run):
    run, train, _ = angle_run
    # The 2-D preset's conditional = "no" is about toy labels: a value data set keeps "auto".
    assert run.config.model.conditional == "auto"
    assert run.cond == CondSpec(values_dim=1) and run.model.values_dim == 1
    info = api.data_info(train)
    assert run_cond({"data": info}) == run.cond
    std = run_values_standardizer({"data": info})
    assert torch.equal(std.mean, train.values_standardizer.mean)
    assert info["cond_names"] == ["angle"]
    # model.conditional = "no" drops every kind, also from the stored description.
    plain, plain_train, _ = _run(["model.conditional=no"])
    assert plain.cond == CondSpec() and plain_train.values is None
    assert "values_dim" not in api.data_info(plain_train)
    # Plain toys keep their preset (unconditional on component labels).
    cfg, _, _ = api.resolve_config(data="moons", overrides=TINY)
    assert cfg.model.conditional == "no"


def test_generate_with_values_in_data_space(angle_run):
    run, _, _ = angle_run
    seen = []

    def field(x, t, cond=None):
        seen.append(cond)
        return run.field(x, t, cond)

    spy = dataclasses.replace(run, field=field)
    angles = torch.tensor([[0.5], [-2.0], [3.0]])
    res = api.generate(spy, 6, cond=Condition(values=angles), solver="euler", nfe=2)
    assert res.samples.shape == (6, 2) and res.labels is None
    # M = 3 rows for 6 samples: sample i takes row i % 3; they come back with the samples.
    assert torch.equal(res.cond.values, angles[[0, 1, 2, 0, 1, 2]])
    # The model sees the values standardised as in training.
    z = run.values_standardizer.transform(angles[[0, 1, 2, 0, 1, 2]])
    assert torch.equal(seen[0].values, z)
    # One row for all samples equals that row repeated, sample for sample.
    one = api.generate(run, 4, cond=Condition(values=angles[:1]), solver="euler", nfe=2)
    rep = api.generate(
        run, 4, cond=Condition(values=angles[:1].repeat(4, 1)), solver="euler", nfe=2
    )
    assert torch.equal(one.samples, rep.samples)


def test_generate_with_guidance_on_values(angle_run):
    run, _, _ = angle_run
    c = Condition(values=torch.tensor([[0.5], [1.5]]))
    guided = api.generate(run, 2, cond=c, guidance=0.0, solver="euler", nfe=2)
    null = Condition(values=c.values, drop=torch.ones(2, dtype=torch.bool))
    plain = api.generate(run, 2, cond=null, solver="euler", nfe=2)
    assert torch.equal(guided.samples, plain.samples)  # s = 0: the null condition
    assert api.generate(run, 2, cond=c, guidance=2.0, solver="euler", nfe=2).guidance == 2.0


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({}, OptionError, r"cond is required: the run is conditioned on \['values'\]"),
        (
            {"cond": Condition(values=torch.zeros(4, 1))},
            OptionError,
            "cond has 4 rows; give num_samples = 6 rows",
        ),
        (
            {"cond": Condition(values=torch.zeros(6, 2))},
            OptionError,
            r"values must have shape \(M, C\) = \(M, 1\), got \(6, 2\)",
        ),
        (
            {"cond": torch.zeros(6, dtype=torch.long)},
            OptionError,
            r"must carry the kinds the run was trained on \['values'\], got \['labels'\]",
        ),
        (
            {"cond": Condition(values=torch.zeros(1, 1)), "label": 2},
            OptionError,
            "label= 2 given together with cond",
        ),
        (
            {"cond": [[0.0]]},
            TypeError,
            "cond must be a label tensor, a Condition or None, got list",
        ),
    ],
)
def test_generate_cond_errors(angle_run, kwargs, exc, match):
    run, _, _ = angle_run
    with pytest.raises(exc, match=match):
        api.generate(run, 6, solver="euler", nfe=2, **kwargs)


def test_generate_cond_on_label_and_unconditional_runs():
    plain, _, _ = _run(["model.conditional=no"])
    with pytest.raises(OptionError, match="cond was given but the model is unconditional"):
        api.generate(plain, 2, cond=Condition(values=torch.zeros(2, 1)))
    labelled, _, _ = _run(["model.conditional=yes"], data="8gaussians")
    res = api.generate(labelled, 4, cond=torch.tensor([1, 7]), solver="euler", nfe=2)
    assert res.labels.tolist() == [1, 7, 1, 7]
    # Labels given as a tensor or through label= give the same samples.
    same = api.generate(labelled, 4, label=1, solver="euler", nfe=2)
    by_cond = api.generate(labelled, 4, cond=torch.tensor([1]), solver="euler", nfe=2)
    assert torch.equal(same.samples, by_cond.samples)
    with pytest.raises(
        OptionError,
        match=r"labels must lie in \[0, 8\) \(the trained classes\), got values in \[0, 8\]",
    ):
        api.generate(labelled, 2, cond=torch.tensor([0, 8]))


def test_context_run(tmp_path):
    n = 80
    g = np.random.default_rng(0)
    ctx = g.normal(size=(n, 3, 2))
    x = ctx.sum(axis=1) + 0.1 * g.normal(size=(n, 2))  # the context decides where x lies
    np.savez(tmp_path / "d.npz", x=x, context=ctx)
    run, train, _ = _run(["data.n_train=none", "data.n_test=none"], data=str(tmp_path / "d.npz"))
    assert run.cond == CondSpec(context_shape=(3, 2)) and run.model.context_shape == (3, 2)
    c = Condition(context=torch.from_numpy(ctx[:2]).float())
    res = api.generate(run, 2, cond=c, solver="euler", nfe=2)
    assert res.samples.shape == (2, 2) and torch.equal(res.cond.context, c.context)
    with pytest.raises(OptionError, match=r"context must have shape \(M, \*S\) with S = \(3, 2\)"):
        api.generate(run, 2, cond=Condition(context=torch.zeros(2, 2, 3)))
    guided = api.generate(run, 2, cond=c, guidance=3.0, solver="euler", nfe=2)
    assert torch.isfinite(guided.samples).all()


def test_evaluate_reports_conditional_w2_per_bin(angle_run):
    run, train, test = angle_run
    report = api.evaluate(
        run, test, nfe=[2], solvers=["euler"], num_samples=64, reference=None, train_ds=train
    )
    (row,) = report["rows"]
    section = report["conditional"]
    assert section["condition"] == "angle" and section["bins"] == run.config.eval.cond_bins == 8
    assert sum(section["counts"]) == 64 and len(section["edges"]) == 9
    assert section["edges"][0] is None and section["edges"][-1] is None  # -inf, inf
    (per_row,) = section["rows"]
    assert (per_row["solver"], per_row["nfe"]) == ("euler", 2) and len(per_row["per_bin"]) == 8
    scored = [v for v in per_row["per_bin"] if v is not None]
    assert row["cond_w2"] == pytest.approx(sum(scored) / len(scored))
    assert "cond_w2_bins" not in row and len(section["floor"]) == 8
    assert "cond_w2" in report["floor"] and "w2" in row  # next to the marginal metrics


def test_evaluate_generates_with_the_reference_conditions(angle_run):
    run, _, test = angle_run
    scorer = api.Scorer(run, test, 32)
    # The reference conditions, in data space: the held-out angles of the reference points.
    angle = torch.atan2(scorer.reference[:, 1], scorer.reference[:, 0])[:, None]
    torch.testing.assert_close(scorer.cond.values, angle, rtol=0, atol=1e-5)
    res = api.generate(run, 32, cond=scorer.cond, solver="euler", nfe=2)
    scores = scorer(res.samples, labels=None, cond=res.cond)
    assert len(scores["cond_w2_bins"]) == 8
    # Scored against itself with its own conditions, every bin is 0.
    self_scores = scorer(scorer.reference, labels=None, cond=scorer.cond)
    assert self_scores["cond_w2"] == 0.0
