"""More sources: norm-aligned Gaussian, a toy data set as the source, learned Gaussian sources.

The defining property of a source: its log-density and its sampling agree. Checked without
training by Stein's identity, which holds for any smooth density vanishing at infinity:
``E_{x ~ p}[grad log p(x)] = 0`` and ``E_{x ~ p}[x . grad log p(x)] = -D`` (integrate
``div(p f)`` by parts with ``f = e_k`` and ``f = x``), plus moments and normalisation.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from flowmatch import api
from flowmatch.api.run import _NOISE_STREAM, NOISE_CHUNK
from flowmatch.interfaces import Condition, CondSpec
from flowmatch.sources import SOURCES, GaussianSource
from flowmatch.sources_extra import DatasetSource, NormAlignedGaussian, expected_gaussian_norm
from flowmatch.sources_learned import ConditionalGaussianSource
from flowmatch.utils.options import OptionError
from flowmatch.utils.tensor import step_generator

F64 = torch.float64


def _stein(log_prob, x: torch.Tensor, dim: int) -> None:
    """Assert both Stein identities within 5 standard errors of the Monte Carlo means."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_prob(x).sum(), x)
    n = len(x)
    grad_se = grad.std(0) / math.sqrt(n)
    assert (grad.mean(0).abs() < 5 * grad_se).all(), (grad.mean(0), grad_se)
    dot = (x * grad).reshape(n, -1).sum(1)
    assert abs(dot.mean() + dim) < 5 * dot.std() / math.sqrt(n), dot.mean()


def test_expected_gaussian_norm_matches_monte_carlo():
    for d in (1, 2, 64):
        x = torch.randn(200_000, d, generator=torch.Generator().manual_seed(d), dtype=F64)
        norms = x.norm(dim=1)
        se = norms.std() / math.sqrt(len(x))
        assert abs(norms.mean() - expected_gaussian_norm(d)) < 5 * se
    assert expected_gaussian_norm(1) == pytest.approx(math.sqrt(2 / math.pi), rel=1e-12)


def test_norm_aligned_fit_matches_data_norms():
    g = torch.Generator().manual_seed(0)
    x1 = 3.0 * torch.randn(5000, 8, generator=g, dtype=F64) + 1.0
    src = NormAlignedGaussian()
    src.fit(x1)
    # Sources drawn from the fitted scale have the data's mean norm (within 5 SE).
    x0 = src.sample((50_000, 8), torch.Generator().manual_seed(1), dtype=F64)
    se = x0.norm(dim=1).std() / math.sqrt(len(x0))
    assert abs(x0.norm(dim=1).mean() - x1.norm(dim=1).mean()) < 5 * se + 1e-3
    assert src.fitted_state() == {"scale": src.scale}
    other = NormAlignedGaussian()
    other.load_fitted_state(src.fitted_state())
    assert other.scale == src.scale


@pytest.mark.parametrize(
    "source",
    [NormAlignedGaussian(2.5), DatasetSource("8gaussians"), DatasetSource("8gaussians", scale=0.5)],
    ids=["norm_aligned", "8gaussians", "8gaussians_scaled"],
)
def test_log_prob_and_sampling_agree_by_stein(source):
    n = 40_000
    x = source.sample((n, 2), torch.Generator().manual_seed(3), dtype=F64)
    _stein(source.log_prob, x, 2)


@pytest.mark.parametrize("name", ["8gaussians", "checkerboard"])
def test_toy_source_density_integrates_to_one(name):
    # Trapezoid on [-8, 8]^2 with 801^2 points: tails of 8gaussians < 1e-20; the checkerboard's
    # cell edges fall on grid lines (spacing 0.02 divides 2), error O(h) on the edges.
    h = torch.linspace(-8, 8, 801, dtype=F64)
    xx, yy = torch.meshgrid(h, h, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    p = DatasetSource(name).log_prob(pts).exp().reshape(801, 801)
    total = torch.trapezoid(torch.trapezoid(p, h, dim=1), h).item()
    assert total == pytest.approx(1.0, abs=0.02 if name == "checkerboard" else 1e-6)
    x = DatasetSource(name).sample((2000, 2), torch.Generator().manual_seed(0), dtype=F64)
    assert torch.isfinite(DatasetSource(name).log_prob(x)).all()


def test_dataset_source_errors():
    with pytest.raises(ValueError, match="no closed-form density"):
        DatasetSource("moons").log_prob(torch.zeros(3, 2))
    assert not DatasetSource("moons").has_log_prob and DatasetSource("8gaussians").has_log_prob
    with pytest.raises(ValueError, match="shape must be"):
        DatasetSource().sample((3, 4), torch.Generator())
    with pytest.raises(ValueError, match="explicit torch.Generator"):
        DatasetSource().sample((3, 2))
    with pytest.raises(OptionError, match="toy must be one of"):
        SOURCES.config("dataset", toy="mnist")
    with pytest.raises(OptionError, match="draws 2-D toy points"):
        SOURCES.build(SOURCES.config("dataset"), sample_shape=(64,), cond=CondSpec())


def test_norm_aligned_errors():
    with pytest.raises(ValueError, match="no scale yet"):
        NormAlignedGaussian().sample((2, 2))
    with pytest.raises(ValueError, match="scale must be"):
        NormAlignedGaussian(-1.0)
    with pytest.raises(ValueError, match="state is"):
        NormAlignedGaussian().load_fitted_state({"s": 1.0})
    with pytest.raises(ValueError, match="norms are all 0"):
        NormAlignedGaussian().fit(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="fits no state"):
        GaussianSource().load_fitted_state({"scale": 1.0})
    with pytest.raises(OptionError, match="scale must be > 0"):
        SOURCES.config("norm_aligned", scale=0.0)


def test_learned_source_log_prob_and_sampling_agree():
    torch.manual_seed(0)
    src = ConditionalGaussianSource((3,), CondSpec(num_classes=4), hidden=16).double()
    with torch.no_grad():  # a non-trivial source: random last layer
        src.net[-1].weight.normal_(0, 0.5)
        src.net[-1].bias.normal_(0, 0.5)
    labels = torch.full((40_000,), 2)
    x = src.sample((40_000, 3), torch.Generator().manual_seed(1), dtype=F64, cond=labels)
    with torch.no_grad():
        mu, logvar = src.params(labels[:1], 1)
    assert (x.mean(0) - mu[0]).abs().max() < 5 * logvar.exp().sqrt().max() / 200
    _stein(lambda z: src.log_prob(z, labels[: len(z)]), x, 3)
    # E[log q] = -entropy of the diagonal Gaussian.
    entropy = 0.5 * (logvar + math.log(2 * math.pi * math.e)).sum()
    lp = src.log_prob(x, labels).detach()
    assert abs(lp.mean() + entropy) < 5 * lp.std() / math.sqrt(len(lp))
    # The source starts as N(0, exp(init_logvar) I) for every condition.
    fresh = ConditionalGaussianSource((2,), CondSpec(values_dim=1), init_logvar=math.log(4.0))
    mu0, lv0 = fresh.params(Condition(values=torch.randn(5, 1)), 5)
    assert torch.equal(mu0, torch.zeros(5, 2))
    torch.testing.assert_close(lv0, torch.full((5, 2), math.log(4.0)))


TINY = ["model.hidden=16", "model.depth=1", "data.n_train=256", "data.n_test=64"]
TINY += ["train.log_every=5", "train.checkpoint_every=0", "sample.num_samples=16"]
TINY += ["train.batch_size=64"]


def test_norm_aligned_run_stores_and_restores_its_scale(tmp_path):
    cfg, train, test = api.resolve_config(
        data="checkerboard", steps=5, overrides=[*TINY, "source.kind=norm_aligned"]
    )
    api.train_run(cfg, train, out_dir=tmp_path)
    info = json.loads((tmp_path / "config.json").read_text())
    want = train.x.double().norm(dim=1).mean().item() / expected_gaussian_norm(2)
    assert info["source_state"]["scale"] == pytest.approx(want, rel=1e-9)
    run = api.load_run(tmp_path)
    assert isinstance(run.source, NormAlignedGaussian) and run.source.scale == pytest.approx(want)
    z = run.noise(4000, seed=0)
    assert z.std().item() == pytest.approx(want, rel=0.05)


def test_learned_source_run_samples_with_the_trained_source(tmp_path):
    overrides = [*TINY, "source.kind=learned_gaussian", "objective.kind=csfm"]
    cfg, train, test = api.resolve_config(data="8gaussians_angle", steps=5, overrides=overrides)
    api.train_run(cfg, train, out_dir=tmp_path, test_ds=test)
    run = api.load_run(tmp_path)
    assert run.source is run.modules["source"]
    assert isinstance(run.source, ConditionalGaussianSource)
    cond = Condition(values=torch.tensor([[0.0], [2.0]]))
    a = api.generate(run, 4, cond=cond, solver="euler", nfe=2, seed=1)
    b = api.generate(run, 4, cond=cond, solver="euler", nfe=2, seed=1)
    assert torch.equal(a.samples, b.samples)
    # The noise is the source's transform of the run's standard-normal noise.
    g = step_generator(0, _NOISE_STREAM, 0)
    eps = torch.randn((NOISE_CHUNK, 2), generator=g)[:4]
    vals = run.values_standardizer.transform(torch.tensor([[0.0], [2.0], [0.0], [2.0]]))
    with torch.no_grad():
        want = run.source.transform(eps, Condition(values=vals))
    got = run.noise(4, seed=0, cond=Condition(values=vals))
    assert torch.equal(got, want)


def test_learned_source_needs_its_objective():
    with pytest.raises(OptionError, match="is a learned source"):
        cfg, train, _ = api.resolve_config(
            data="8gaussians_angle", overrides=[*TINY, "source.kind=learned_gaussian"]
        )
        api.train_run(cfg, train, out_dir="/nonexistent/never")
    with pytest.raises(OptionError, match="set source.kind = 'learned_gaussian'"):
        cfg, train, _ = api.resolve_config(
            data="8gaussians_angle", overrides=[*TINY, "objective.kind=csfm"]
        )
        api.train_run(cfg, train, out_dir="/nonexistent/never")
