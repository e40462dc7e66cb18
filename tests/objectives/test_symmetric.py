"""Symmetrical flow matching: opposite time directions of the two blocks, generate and classify."""

from __future__ import annotations

import json

import pytest
import torch

from flowmatch import api
from flowmatch.api.symmetric import classify
from flowmatch.couplings.base import IndependentCoupling
from flowmatch.data.batch import Batch
from flowmatch.interfaces import CondSpec
from flowmatch.latent import JointLabelSpace
from flowmatch.objectives import OBJECTIVES, TrainingParts
from flowmatch.objectives.symmetric import SymmetricLabelSource, label_code
from flowmatch.paths import AffinePath
from flowmatch.sources import GaussianSource
from flowmatch.times.samplers import TimeSampler
from flowmatch.utils.options import OptionError

F64 = torch.float64


class _Const(TimeSampler):
    def __init__(self, t: float) -> None:
        self.t = t

    def sample_t(self, batch_size, generator=None, *, device=None, dtype=torch.float32):
        return torch.full((batch_size,), self.t, dtype=dtype, device=device)

    def pdf(self, t):  # pragma: no cover - not used
        return t

    def cdf(self, t):  # pragma: no cover - not used
        return t


def _step(t: float, source=None):
    parts = TrainingParts(
        AffinePath(),
        IndependentCoupling(),
        _Const(t),
        source or SymmetricLabelSource(5, 3),
        "velocity",
        CondSpec(num_classes=3),
    )
    return OBJECTIVES.build(OBJECTIVES.config("symmetric"), parts=parts)


def test_blocks_move_in_opposite_time_directions():
    space = JointLabelSpace((2,), 3)
    x = torch.randn(6, 2, dtype=F64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    z = space.encode(x)
    assert z.shape == (6, 5) and torch.equal(space.decode(z), x)
    seen = {}

    def model(xt, t, cond):
        assert cond is None  # the label is state, never a conditioning input
        seen["xt"] = xt
        return torch.zeros_like(xt)

    code = label_code(labels, 3, 1.0, F64)
    _step(0.0)({"model": model}, Batch(x1=z, labels=labels), torch.Generator().manual_seed(0))
    torch.testing.assert_close(seen["xt"][:, 2:], code)  # t = 0: the label block is data
    _step(1.0)({"model": model}, Batch(x1=z, labels=labels), torch.Generator().manual_seed(0))
    torch.testing.assert_close(seen["xt"][:, :2], x)  # t = 1: the image block is data
    # Same noise at both ends (same generator): at t = 0 the image block is that noise and at
    # t = 1 the label block is: the two blocks swap roles.
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(z.shape, generator=g, dtype=F64)
    torch.testing.assert_close(seen["xt"][:, 2:], eps[:, 2:])


def test_symmetric_configuration_errors():
    with pytest.raises(OptionError, match="symmetric_labels"):
        _step(0.5, source=GaussianSource())
    with pytest.raises(OptionError, match="must be 0"):
        OBJECTIVES.config("symmetric", cond_dropout=0.1)
    with pytest.raises(OptionError, match="labelled data"):
        OBJECTIVES.config("symmetric").state_space((2,), CondSpec())
    with pytest.raises(ValueError, match="given class labels"):
        SymmetricLabelSource(5, 3).transform(torch.zeros(2, 5), None)


def test_symmetric_run_generates_and_classifies(tmp_path):
    overrides = ["objective.kind=symmetric", "source.kind=symmetric_labels", "model.kind=mlp"]
    overrides += ["model.hidden=16", "model.depth=1", "train.log_every=5"]
    overrides += ["train.checkpoint_every=0", "sample.num_samples=10", "train.batch_size=64"]
    cfg, train, test = api.resolve_config(data="digits", steps=5, overrides=overrides)
    api.train_run(cfg, train, out_dir=tmp_path)
    run = api.load_run(tmp_path)
    assert isinstance(run.latent, JointLabelSpace) and run.model_shape == (74,)
    res = api.generate(run, 10, solver="euler", nfe=4, label=3)
    assert res.samples.shape == (10, 1, 8, 8) and (res.labels == 3).all()
    x = run.to_data_space(test.x[:20])
    pred, block = classify(run, x, nfe=4)
    assert pred.shape == (20,) and block.shape == (20, 10) and pred.dtype == torch.int64
    with pytest.raises(OptionError, match="symmetric"):
        plain = tmp_path / "plain"
        cfg2, tr2, _ = api.resolve_config(
            data="moons",
            steps=2,
            overrides=["model.hidden=8", "model.depth=1", "train.log_every=1"],
        )
        api.train_run(cfg2, tr2, out_dir=plain)
        classify(api.load_run(plain), torch.zeros(2, 2))


def test_classify_checks_its_arguments_and_the_cli_reports_accuracy(tmp_path, capsys):
    from flowmatch.api.symmetric import classify_dataset
    from flowmatch.cli.main import main

    overrides = ["objective.kind=symmetric", "source.kind=symmetric_labels", "model.kind=mlp"]
    overrides += ["model.hidden=16", "model.depth=1", "train.log_every=5"]
    overrides += ["train.checkpoint_every=0", "sample.num_samples=4", "train.batch_size=64"]
    cfg, train, test = api.resolve_config(data="digits", steps=3, overrides=overrides)
    api.train_run(cfg, train, out_dir=tmp_path / "run")
    run = api.load_run(tmp_path / "run")
    x = run.to_data_space(test.x[:4])
    with pytest.raises(ValueError, match="multiple of midpoint's 2 stages"):
        classify(run, x, solver="midpoint", nfe=3)
    with pytest.raises(ValueError, match="not"):
        classify(run, x, solver="dopri5", nfe=4)
    with pytest.raises(ValueError, match="unknown solver"):
        classify(run, x, solver="nope")
    with pytest.raises(ValueError, match=r"x must be \(N, \*\(1, 8, 8\)\)"):
        classify(run, x.reshape(4, -1))
    res = classify_dataset(run, test, nfe=2)
    assert res["num_samples"] == len(test) and 0 <= res["accuracy"] <= 1
    assert len(res["per_class"]) == 10
    # Same seed, same predictions (the label block's noise is seeded).
    torch.testing.assert_close(classify(run, x, nfe=2)[1], classify(run, x, nfe=2)[1])
    out = tmp_path / "acc.json"
    assert main(["classify", str(tmp_path / "run"), "--nfe", "2", "--out", str(out)]) == 0
    assert f"{res['accuracy']:.4f}" in capsys.readouterr().out
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(res["accuracy"])
    assert (
        main(["classify", str(tmp_path / "run"), "--out", str(tmp_path / "run/config.json")]) == 2
    )
    assert "would overwrite" in capsys.readouterr().err
