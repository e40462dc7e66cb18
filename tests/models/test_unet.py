"""Tests for the reference UNet: shapes, conditioning, zero-init, gradient flow, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from flowmatch.models.unet import UNet

# Small nets keep the file fast; the architecture (levels, skips, attention) is the same.
SMALL: dict[str, Any] = {"base_channels": 8, "time_dim": 16}


def _randomise_output(net: UNet, gen: torch.Generator) -> UNet:
    """Give the zero-initialised output conv random weights so outputs depend on the input."""
    with torch.no_grad():
        for p in net.out_conv.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return net


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [8, 16, 32])
def test_output_shape(channels: int, size: int, gen: torch.Generator) -> None:
    torch.manual_seed(0)
    net = UNet(channels, image_size=size, **SMALL)
    x = torch.randn(2, channels, size, size, generator=gen)
    out = net(x, torch.rand(2, generator=gen))
    assert out.shape == (2, channels, size, size)


@pytest.mark.parametrize(
    "kwargs", [{}, {"attention": True, "num_res_blocks": 2}, {"channel_mults": (1,)}]
)
def test_batch_equal_to_channels_is_per_sample(kwargs: dict, gen: torch.Generator) -> None:
    # B == C == 3: a batch/channel mix-up would broadcast silently. Every sample must be
    # processed independently (GroupNorm normalises per sample), so the batched output equals
    # the outputs of the samples one at a time.
    torch.manual_seed(0)
    net = _randomise_output(UNet(3, image_size=8, **SMALL, **kwargs), gen).double()
    x = torch.randn(3, 3, 8, 8, generator=gen, dtype=torch.float64)
    t = torch.rand(3, generator=gen, dtype=torch.float64)
    out = net(x, t)
    assert out.shape == (3, 3, 8, 8)
    single = torch.cat([net(x[i : i + 1], t[i : i + 1]) for i in range(3)])
    # float64; only the summation order of batched vs. single kernels may differ.
    torch.testing.assert_close(out, single, rtol=1e-12, atol=1e-12)


def test_zero_init_output_is_exactly_zero(gen: torch.Generator) -> None:
    torch.manual_seed(0)
    net = UNet(1, image_size=8, num_classes=10, **SMALL)
    x = torch.randn(5, 1, 8, 8, generator=gen)
    out = net(x, torch.rand(5, generator=gen), torch.tensor([0, 1, 2, 9, 10]))
    assert torch.equal(out, torch.zeros_like(out))


def test_default_configuration_runs_on_digits_shape(gen: torch.Generator) -> None:
    torch.manual_seed(0)
    net = UNet(1, image_size=8)
    out = net(torch.randn(4, 1, 8, 8, generator=gen), torch.rand(4, generator=gen))
    assert out.shape == (4, 1, 8, 8)
    assert "params=" in repr(net)


def test_conditioning_and_null_label(gen: torch.Generator) -> None:
    torch.manual_seed(0)
    net = _randomise_output(UNet(1, image_size=8, num_classes=4, **SMALL), gen)
    assert net.null_label == 4
    assert UNet(1, image_size=8, **SMALL).null_label is None
    x = torch.randn(4, 1, 8, 8, generator=gen)
    t = torch.rand(4, generator=gen)
    null = torch.full((4,), net.null_label)
    # cond=None on a conditional net is the null label (the unconditional branch of CFG).
    assert torch.equal(net(x, t, None), net(x, t, null))
    # Labels change the output; int32 labels are accepted like int64.
    labelled = net(x, t, torch.tensor([0, 1, 2, 3]))
    assert not torch.allclose(labelled, net(x, t, null))
    assert torch.equal(labelled, net(x, t, torch.tensor([0, 1, 2, 3], dtype=torch.int32)))


def test_time_changes_output(gen: torch.Generator) -> None:
    torch.manual_seed(0)
    net = _randomise_output(UNet(1, image_size=8, **SMALL), gen)
    x = torch.randn(2, 1, 8, 8, generator=gen)
    assert not torch.allclose(net(x, torch.zeros(2)), net(x, torch.ones(2)))


def test_gradient_reaches_every_parameter_after_one_step(gen: torch.Generator) -> None:
    torch.manual_seed(0)
    net = UNet(
        2,
        image_size=8,
        num_classes=3,
        attention=True,
        num_res_blocks=2,
        channel_mults=(1, 2),
        **SMALL,
    )
    x = torch.randn(6, 2, 8, 8, generator=gen)
    t = torch.rand(6, generator=gen)
    y = torch.tensor([0, 1, 2, 3, 0, 3])
    target = torch.randn(6, 2, 8, 8, generator=gen)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def step() -> None:
        opt.zero_grad()
        (net(x, t, y) - target).square().mean().backward()

    # At init only the (zero) output conv receives a gradient: everything upstream is
    # multiplied by its zero weights.
    step()
    out_params = {id(p) for p in net.out_conv.parameters()}
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert (p.grad.abs().sum() > 0) == (id(p) in out_params), name
    opt.step()  # the output conv is now nonzero
    step()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dropout_only_in_training_mode(gen: torch.Generator) -> None:
    torch.manual_seed(0)
    net = _randomise_output(UNet(1, image_size=8, dropout=0.5, **SMALL), gen)
    x = torch.randn(2, 1, 8, 8, generator=gen)
    t = torch.rand(2, generator=gen)
    net.eval()
    assert torch.equal(net(x, t), net(x, t))
    net.train()
    assert not torch.equal(net(x, t), net(x, t))


def test_group_counts_divide_odd_channel_numbers(gen: torch.Generator) -> None:
    # 5 and 15 channels: GroupNorm needs divisors of the channel count (5 groups each).
    net = UNet(1, image_size=8, base_channels=5, channel_mults=(1, 3), time_dim=16)
    out = net(torch.randn(2, 1, 8, 8, generator=gen), torch.rand(2, generator=gen))
    assert out.shape == (2, 1, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"image_size": 10},
            ValueError,
            r"image_size=10 must be divisible by 2\*\*\(len\(channel_mults\)-1\) = 4",
        ),
        ({"image_size": 8, "channel_mults": (1, 2, 2, 2, 2)}, ValueError, r"= 16"),
        ({"image_size": 0}, ValueError, "image_size must be >= 1"),
        ({"image_size": 8.0}, TypeError, "image_size must be an int"),
        ({"image_size": 8, "base_channels": 0}, ValueError, "base_channels must be >= 1"),
        ({"image_size": 8, "num_res_blocks": 0}, ValueError, "num_res_blocks must be >= 1"),
        ({"image_size": 8, "channel_mults": ()}, ValueError, "at least one level"),
        ({"image_size": 8, "channel_mults": (1, 0)}, ValueError, "channel_mults entries"),
        ({"image_size": 8, "channel_mults": (1, 2.0)}, TypeError, "channel_mults entries"),
        ({"image_size": 8, "channel_mults": "12"}, TypeError, "channel_mults must be a tuple"),
        ({"image_size": 8, "channel_mults": 2}, TypeError, "channel_mults must be a tuple"),
        ({"image_size": 8, "time_dim": 15}, ValueError, "time_dim must be even"),
        ({"image_size": 8, "time_dim": 0}, ValueError, "time_dim must be >= 2"),
        ({"image_size": 8, "num_classes": 0}, ValueError, "num_classes must be >= 1"),
        ({"image_size": 8, "dropout": 1.0}, ValueError, r"dropout must be in \[0, 1\)"),
        ({"image_size": 8, "attention": 1}, TypeError, "attention must be a bool"),
    ],
)
def test_constructor_errors(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        UNet(1, **kwargs)


def test_in_channels_error() -> None:
    with pytest.raises(ValueError, match="in_channels must be >= 1"):
        UNet(0, image_size=8)


@pytest.mark.parametrize("shape", [(3, 3, 8, 8), (3, 1, 16, 16), (3, 1, 8), (1, 8, 8)])
def test_input_shape_error_names_expected_shape(shape: tuple[int, ...]) -> None:
    net = UNet(1, image_size=8, **SMALL)
    with pytest.raises(ValueError, match=r"\(C, H, W\) = \(1, 8, 8\), got"):
        net(torch.zeros(shape), torch.zeros(shape[0]))


@pytest.mark.parametrize("t", [torch.zeros(3, 1), torch.zeros(()), torch.zeros(2)])
def test_time_shape_error(t: torch.Tensor) -> None:
    net = UNet(1, image_size=8, **SMALL)
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(3,\)"):
        net(torch.zeros(3, 1, 8, 8), t)


def test_label_errors() -> None:
    x, t = torch.zeros(3, 1, 8, 8), torch.zeros(3)
    with pytest.raises(ValueError, match="unconditional"):
        UNet(1, image_size=8, **SMALL)(x, t, torch.zeros(3, dtype=torch.long))
    net = UNet(1, image_size=8, num_classes=2, **SMALL)
    with pytest.raises(ValueError, match=r"labels of shape \(B,\) = \(3,\), got \(3, 1\)"):
        net(x, t, torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        net(x, t, torch.zeros(3))
