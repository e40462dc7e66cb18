"""Tests for the reference MLP velocity field: shapes, conditioning, label errors, gradients."""

from __future__ import annotations

import pytest
import torch

from flowmatch.models.mlp import MLP


@pytest.mark.parametrize(("shape", "dim"), [((5, 2), 2), ((5, 1, 8, 8), 64)])
def test_output_shape(shape: tuple[int, ...], dim: int, gen: torch.Generator) -> None:
    torch.manual_seed(0)
    net = MLP(dim, hidden=16, depth=2)
    out = net(torch.randn(shape, generator=gen), torch.rand(shape[0], generator=gen))
    assert out.shape == shape


@pytest.mark.parametrize(("shape", "dim"), [((2, 2), 2), ((64, 1, 8, 8), 64)])
def test_batch_equal_to_features_is_per_sample(
    shape: tuple[int, ...], dim: int, gen: torch.Generator
) -> None:
    # B == prod(D): a transposed flatten would still produce the right shape. Each sample's
    # output must equal the output for that sample alone.
    torch.manual_seed(0)
    net = MLP(dim, hidden=16, depth=2, num_classes=3).double()
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    t = torch.rand(shape[0], generator=gen, dtype=torch.float64)
    y = torch.arange(shape[0]) % 4  # includes the null label 3
    out = net(x, t, y)
    assert out.shape == shape
    single = torch.cat([net(x[i : i + 1], t[i : i + 1], y[i : i + 1]) for i in range(shape[0])])
    # float64; batched vs. single matmuls may only reorder sums.
    torch.testing.assert_close(out, single, rtol=1e-12, atol=1e-12)


def test_conditional_vs_unconditional(gen: torch.Generator) -> None:
    torch.manual_seed(0)
    cond_net = MLP(2, hidden=16, depth=2, num_classes=3)
    assert cond_net.null_label == 3
    assert MLP(2, hidden=16, depth=2).null_label is None
    x = torch.randn(4, 2, generator=gen)
    t = torch.rand(4, generator=gen)
    a = cond_net(x, t, torch.tensor([0, 0, 0, 0]))
    b = cond_net(x, t, torch.tensor([1, 1, 1, 1]))
    null = cond_net(x, t, torch.full((4,), cond_net.null_label))
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, null)
    # Same labels as int32 give the same output.
    assert torch.equal(a, cond_net(x, t, torch.zeros(4, dtype=torch.int32)))


def test_time_changes_output(gen: torch.Generator) -> None:
    torch.manual_seed(0)
    net = MLP(2, hidden=16, depth=2)
    x = torch.randn(3, 2, generator=gen)
    assert not torch.allclose(net(x, torch.zeros(3)), net(x, torch.ones(3)))


def test_gradient_reaches_all_parameters(gen: torch.Generator) -> None:
    torch.manual_seed(0)
    net = MLP(4, hidden=16, depth=3, num_classes=2)
    x = torch.randn(6, 4, generator=gen)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    net(x, torch.rand(6, generator=gen), y).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_float64_and_repr(gen: torch.Generator) -> None:
    net = MLP(2, hidden=8, depth=1).double()
    x = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    out = net(x, torch.rand(3, generator=gen, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert "params=" in repr(net)


def test_label_errors() -> None:
    x, t = torch.zeros(3, 2), torch.zeros(3)
    with pytest.raises(ValueError, match=r"unconditional \(num_classes=None\) but cond was given"):
        MLP(2, hidden=8, depth=1)(x, t, torch.zeros(3, dtype=torch.long))
    net = MLP(2, hidden=8, depth=1, num_classes=3)
    with pytest.raises(ValueError, match=r"labels of shape \(B,\) = \(3,\), got \(2,\)"):
        net(x, t, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels of shape \(B,\) = \(3,\), got \(3, 1\)"):
        net(x, t, torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor, got dtype torch.float32"):
        net(x, t, torch.zeros(3))
    # Ids 0..3 are valid (3 = num_classes is the null label); the message gives the range seen.
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\] .* got values in \[-1, 2\]"):
        net(x, t, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match=r"got values in \[0, 4\]"):
        net(x, t, torch.tensor([4, 0, 3], dtype=torch.int32))


def test_feature_size_error() -> None:
    with pytest.raises(ValueError, match=r"x has 63 features per sample .* expects dim=64"):
        MLP(64, hidden=8, depth=1)(torch.zeros(2, 63), torch.zeros(2))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dim": 0}, ValueError, "dim must be >= 1"),
        ({"dim": 2.0}, TypeError, "dim must be an int"),
        ({"dim": 2, "hidden": 0}, ValueError, "hidden must be >= 1"),
        ({"dim": 2, "depth": 0}, ValueError, "depth must be >= 1"),
        ({"dim": 2, "time_dim": 5}, ValueError, "must be even, got 5"),
        ({"dim": 2, "num_classes": 0}, ValueError, "num_classes must be >= 1"),
    ],
)
def test_constructor_errors(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        MLP(**kwargs)


def test_out_of_range_label_is_a_value_error() -> None:
    net = MLP(2, hidden=8, depth=1, num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        net(torch.zeros(2, 2), torch.zeros(2), torch.tensor([0, 4]))


def test_time_shape_error() -> None:
    with pytest.raises(ValueError, match=r"t must have shape \(B,\)"):
        MLP(2, hidden=8, depth=1)(torch.zeros(3, 2), torch.zeros(3, 1))


def test_conditional_mlp_without_cond_uses_null_label() -> None:
    net = MLP(2, hidden=8, depth=1, num_classes=3)
    x, t = torch.randn(4, 2), torch.rand(4)
    torch.testing.assert_close(net(x, t), net(x, t, torch.full((4,), 3)), rtol=0, atol=0)


def test_odd_time_dim_names_the_argument() -> None:
    with pytest.raises(ValueError, match="time_dim must be even, got 5"):
        MLP(2, time_dim=5)
