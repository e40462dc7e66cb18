"""Tests for the 2-D toy distributions: shapes, determinism and the geometry of each support."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from flowmatch.data.toy import TOY_DATASETS, TOY_NUM_CLASSES, sample_toy

F64 = torch.float64


def _draw(name: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return sample_toy(name, n, generator=g, return_labels=True, dtype=F64)


@pytest.mark.parametrize("name", TOY_DATASETS)
@pytest.mark.parametrize("n", [1, 2, 1000])  # n = 2 equals the feature size D = 2
def test_shapes_and_dtypes(name, n):
    g = torch.Generator().manual_seed(1)
    x = sample_toy(name, n, generator=g)
    assert x.shape == (n, 2)
    assert x.dtype == torch.float32
    x64, labels = sample_toy(name, n, generator=g, return_labels=True, dtype=F64)
    assert x64.shape == (n, 2) and x64.dtype == F64
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert 0 <= int(labels.min()) and int(labels.max()) < TOY_NUM_CLASSES[name]
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_determinism(name):
    a, la = _draw(name, 500, seed=3)
    b, lb = _draw(name, 500, seed=3)
    c, _ = _draw(name, 500, seed=4)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.allclose(a, c)
    # return_labels does not change the points drawn from the same stream
    g = torch.Generator().manual_seed(3)
    assert torch.equal(sample_toy(name, 500, generator=g, dtype=F64), a)


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_components_equally_likely(name):
    n = 40_000
    _, labels = _draw(name, n)
    k = TOY_NUM_CLASSES[name]
    freq = torch.bincount(labels, minlength=k).to(F64) / n
    se = math.sqrt((1 / k) * (1 - 1 / k) / n)  # binomial standard error of each frequency
    assert (freq - 1 / k).abs().max() < 5 * se, freq.tolist()


def test_checkerboard_support_and_uniformity():
    n = 80_000
    x, labels = _draw("checkerboard", n)
    cell = torch.floor((x + 4) / 2).long()  # (i, j) index of the 2 x 2 cell of each point
    i, j = cell[:, 0], cell[:, 1]
    assert ((cell >= 0) & (cell <= 3)).all(), "points outside [-4, 4]^2"
    assert ((i + j) % 2 == 0).all(), "points in an empty cell"
    # the documented labelling: filled cells (0,0),(0,2),(1,1),(1,3),(2,0),(2,2),(3,1),(3,3)
    filled = [(0, 0), (0, 2), (1, 1), (1, 3), (2, 0), (2, 2), (3, 1), (3, 3)]
    expected_label = torch.tensor([filled.index((a, b)) for a, b in cell.tolist()])
    assert torch.equal(labels, expected_label)
    # uniform inside each cell: the offset within the cell is U[0, 1)^2 (KS test, fixed seed)
    offset = (x + 4) / 2 - cell
    for d in range(2):
        assert stats.kstest(offset[:, d].numpy(), "uniform").pvalue > 1e-3


def test_eight_gaussians_modes():
    n = 80_000
    x, labels = _draw("8gaussians", n)
    for k in range(8):
        pts = x[labels == k]
        m = len(pts)
        # mode k sits at angle k * 45 degrees on the circle of radius 4
        center = torch.tensor(
            [4 * math.cos(k * math.pi / 4), 4 * math.sin(k * math.pi / 4)], dtype=F64
        )
        se_mean = 0.5 / math.sqrt(m)
        assert (pts.mean(0) - center).abs().max() < 5 * se_mean
        var = pts.var(0)
        se_var = 0.25 * math.sqrt(2 / (m - 1))  # SE of a Gaussian sample variance
        assert (var - 0.25).abs().max() < 5 * se_var


def _rice_ks(dist: torch.Tensor, radius: float, sigma: float) -> float:
    # |c + r u + sigma eps - c| for a unit vector u is Rice(r, sigma): an exact oracle for the
    # distance of a noisy circle point to the circle's centre, whatever the angle.
    return stats.kstest(dist.numpy(), stats.rice(radius / sigma, scale=sigma).cdf).pvalue


def test_moons_geometry():
    n = 40_000
    x, labels = _draw("moons", n)
    unit = x * 3 / 8 + torch.tensor([0.5, 0.25], dtype=F64)  # back to the unit-moon frame
    centers = torch.tensor([[0.0, 0.0], [1.0, 0.5]], dtype=F64)
    rel = unit - centers[labels]
    for k in range(2):
        assert _rice_ks(rel[labels == k].norm(dim=1), 1.0, 0.05) > 1e-3
    # moon 0 is the upper half circle, moon 1 the lower one: beyond 5 sigma = 0.25 never
    assert (rel[labels == 0, 1] > -0.25).all() and (rel[labels == 1, 1] < 0.25).all()
    # noise-free moons span x in [-4, 4], y in [-2, 2]; the 0.05 * 8/3 noise adds < 1
    assert x[:, 0].min() < -3.5 and x[:, 0].max() > 3.5
    assert x.abs().max() < 5 and x[:, 1].abs().max() < 3


def test_circles_geometry():
    n = 40_000
    x, labels = _draw("circles", n)
    for k, radius in enumerate([4.0, 2.0]):
        assert _rice_ks(x[labels == k].norm(dim=1), radius, 0.2) > 1e-3
    # rotation invariance: the polar angle is exactly uniform
    angle = torch.atan2(x[:, 1], x[:, 0])
    assert stats.kstest(angle.numpy(), stats.uniform(-math.pi, 2 * math.pi).cdf).pvalue > 1e-3


def test_spirals_geometry():
    n = 2000
    x, labels = _draw("spirals", n)
    phi = torch.linspace(0, 3 * math.pi, 5000, dtype=F64)  # spacing 4e-3 along the arm << 0.1
    arms = [
        (4 * phi / (3 * math.pi))[:, None]
        * torch.stack([(phi + math.pi * k).cos(), (phi + math.pi * k).sin()], 1)
        for k in range(2)
    ]
    dist = torch.stack([torch.cdist(x, arm).min(dim=1).values for arm in arms], 1)  # (n, 2)
    own = dist.gather(1, labels[:, None]).squeeze(1)
    other = dist.gather(1, 1 - labels[:, None]).squeeze(1)
    # Away from the centre the arms are 4/3 apart: every point is nearer its own arm
    # except possibly the few within the innermost winding.
    assert (own < other).to(F64).mean() > 0.99
    # Isotropic N(0, 0.1^2) noise around a smooth curve: the distance to the curve is
    # |N(0, 0.1^2)| to first order, mean 0.1 sqrt(2/pi); its SE is 0.1 sqrt(1 - 2/pi)/sqrt(n),
    # 1.7 % of the mean. Curvature near the centre and the arm ends bias it by < 1 % (measured:
    # ratios 0.994-1.003 over 5 seeds of n = 20 000): allow 6 % (~3.5 SE).
    assert own.mean().item() == pytest.approx(0.1 * math.sqrt(2 / math.pi), rel=0.06)
    assert x.norm(dim=1).max() < 4 + 5 * 0.1


def test_generator_device_and_dtype_follow_arguments():
    g = torch.Generator().manual_seed(0)
    x = sample_toy("circles", 3, generator=g, dtype=torch.float16)
    assert x.dtype == torch.float16 and x.device == torch.device("cpu")


def test_unknown_name_lists_choices():
    g = torch.Generator()
    with pytest.raises(
        ValueError, match=r"unknown toy dataset 'swissroll'; choose one of .*8gaussians"
    ):
        sample_toy("swissroll", 10, generator=g)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": 0}, ValueError, "n must be >= 1, got 0"),
        ({"n": 2.5}, TypeError, "n must be an int"),
        ({"generator": None}, TypeError, "generator must be a torch.Generator, got NoneType"),
        ({"generator": 0}, TypeError, "generator must be a torch.Generator, got int"),
        ({"dtype": torch.int64}, TypeError, "dtype must be a floating torch.dtype"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = {"n": 4, "generator": torch.Generator()} | kwargs
    n = args.pop("n")
    with pytest.raises(error, match=match):
        sample_toy("moons", n, **args)
