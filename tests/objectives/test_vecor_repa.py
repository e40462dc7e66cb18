"""Contrastive velocity regulariser and representation alignment: defining properties."""

from __future__ import annotations

import json
import math

import pytest
import torch

from flowmatch import api
from flowmatch.models import MLP
from flowmatch.objectives import FlowMatchingObjective
from flowmatch.objectives.repa import alignment_loss, capture, tokens
from flowmatch.objectives.vecor import ContrastiveFMObjective, negative_partners
from flowmatch.utils.options import OptionError

F64 = torch.float64


def _setup(n=32):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    return MLP(2, hidden=16, depth=1).double(), torch.randn(n, 2, generator=g, dtype=F64)


def test_contrastive_reduces_to_fm_and_bounds_the_repulsion():
    model, x1 = _setup()
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    plain = FlowMatchingObjective()(model, x1, generator=g())
    zero = ContrastiveFMObjective(weight=0.0, negatives="shuffle")(model, x1, generator=g())
    # Same x0 and t draws (the partners are drawn after them): weight 0 is flow matching.
    torch.testing.assert_close(zero.loss, plain.loss)
    capped = ContrastiveFMObjective(weight=1.0, margin=0.5, negatives="shuffle")(
        model, x1, generator=g()
    )
    assert (capped.loss >= plain.loss - 0.5 - 1e-12).all()  # the repulsion is at most lambda*m
    assert capped.logs["repel"].item() <= 0.5


def test_negative_partners_are_other_samples_of_other_classes():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2])
    p = negative_partners(8, labels=labels, generator=torch.Generator().manual_seed(0))
    assert (p != torch.arange(8)).all() and (labels[p] != labels).all()
    one = negative_partners(4, labels=torch.zeros(4, dtype=torch.long), generator=torch.Generator())
    assert (one != torch.arange(4)).all()  # a single class falls back to any other sample
    with pytest.raises(ValueError, match="weight must be"):
        ContrastiveFMObjective(weight=-1.0)
    with pytest.raises(ValueError, match="negatives"):
        ContrastiveFMObjective(negatives="random")


def test_cka_is_invariant_to_rotation_and_scale_and_cosine_to_scale():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 10, 5, generator=g, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=F64))
    same = alignment_loss(f, f, "cka")
    torch.testing.assert_close(same, torch.zeros(6, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(alignment_loss(3.0 * f @ q, f, "cka"), same, atol=1e-12, rtol=0)
    other = torch.randn(6, 10, 5, generator=g, dtype=F64)
    assert (alignment_loss(other, f, "cka") > 0.1).all()
    torch.testing.assert_close(
        alignment_loss(2.0 * f, f, "cosine"), torch.full((6,), -1.0, dtype=F64)
    )
    # One token per sample: CKA over the batch, the same value for every sample.
    v = alignment_loss(other[:, :1], f[:, :1], "cka")
    assert v.shape == (6,) and torch.all(v == v[0])
    with pytest.raises(ValueError, match="one size"):
        alignment_loss(f, f[..., :3], "cosine")
    assert tokens(torch.zeros(2, 3, 4, 4)).shape == (2, 16, 3)


def test_capture_hooks_are_removed():
    model, x1 = _setup(4)
    with capture(model, "net.1") as cap:
        model(x1, torch.rand(4, dtype=F64))
    assert cap.value.shape == (4, 16)
    assert not model.net[1]._forward_hooks
    with pytest.raises(OptionError, match="not a submodule"):
        capture(model, "net.9")


TINY = ["model.hidden=16", "model.depth=2", "data.n_train=256", "data.n_test=64"]
TINY += ["train.log_every=5", "train.checkpoint_every=0", "sample.num_samples=16"]
TINY += ["train.batch_size=64"]


@pytest.mark.parametrize("measure", ["cosine", "cka"])
def test_repa_run_trains_model_and_projector_against_a_frozen_teacher(tmp_path, measure):
    overrides = [
        *TINY,
        "objective.kind=repa",
        "objective.layer=net.1",
        f"objective.measure={measure}",
    ]
    cfg, train, test = api.resolve_config(data="moons", steps=5, overrides=overrides)
    api.train_run(cfg, train, out_dir=tmp_path)
    run = api.load_run(tmp_path)
    assert set(run.modules) == {"model", "projector"}
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert "align" in lines[-1] and "fm" in lines[-1]
    res = api.generate(run, 8, solver="euler", nfe=2)
    assert res.samples.shape == (8, 2)
    with pytest.raises(OptionError, match="names no teacher"):
        from flowmatch.api.teachers import frozen_modules

        bad, _, _ = api.resolve_config(
            data="moons", overrides=[*TINY, "objective.kind=repa", "objective.teacher=dino"]
        )
        frozen_modules(bad, (2,))
    assert math.isfinite(json.loads(lines[-1])["align"])
