"""Every reference model with every conditioning kind: forward, null conditions, refusals."""

from __future__ import annotations

import math

import pytest
import torch

from flowmatch.interfaces import Condition, CondSpec
from flowmatch.models import MLP, MODELS, UNet
from flowmatch.models.base import check_cond_kinds
from flowmatch.utils.options import OptionError

B = 4  # equal to the MLP's feature size and to the UNet's C * ... below: mix-ups broadcast
KINDS = ["labels", "values", "context", "all"]


def _randomise(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere (the UNet's output conv and null vectors start at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


def _mlp(kind: str) -> MLP:
    kw = {
        "labels": {"num_classes": 3},
        "values": {"values_dim": 2},
        "context": {"context_shape": (3, 2)},
        "all": {"num_classes": 3, "values_dim": 2, "context_shape": (3, 2)},
    }[kind]
    return _randomise(MLP(4, hidden=16, depth=2, time_dim=8, **kw)).double()


def _unet(kind: str) -> UNet:
    kw = {
        "labels": {"num_classes": 3},
        "values": {"values_dim": 2},
        "context": {"context_channels": 2},
        "all": {"num_classes": 3, "values_dim": 2, "context_channels": 2},
    }[kind]
    net = UNet(1, image_size=4, base_channels=4, channel_mults=(1, 2), time_dim=8, **kw)
    return _randomise(net).double()


def _cond(kind: str, ctx_shape: tuple[int, ...], seed: int = 1, drop=None) -> Condition:
    g = torch.Generator().manual_seed(seed)
    parts = {
        "labels": torch.randint(0, 3, (B,), generator=g),
        "values": torch.randn(B, 2, generator=g, dtype=torch.float64),
        "context": torch.randn(B, *ctx_shape, generator=g, dtype=torch.float64),
    }
    keep = list(parts) if kind == "all" else [kind]
    return Condition(**{k: v for k, v in parts.items() if k in keep}, drop=drop)


CASES = [("mlp", k) for k in KINDS] + [("unet", k) for k in KINDS]


def _setup(model: str, kind: str):
    if model == "mlp":
        net, ctx, x = _mlp(kind), (3, 2), torch.randn(B, 4, dtype=torch.float64)
    else:
        net, ctx, x = _unet(kind), (2, 4, 4), torch.randn(B, 1, 4, 4, dtype=torch.float64)
    t = torch.linspace(0.1, 0.9, B, dtype=torch.float64)
    return net, ctx, x, t


@pytest.mark.parametrize(("model", "kind"), CASES)
def test_forward_uses_the_condition_per_sample(model, kind):
    net, ctx, x, t = _setup(model, kind)
    c = _cond(kind, ctx)
    out = net(x, t, c)
    assert out.shape == x.shape
    assert not torch.equal(out, net(x, t, _cond(kind, ctx, seed=2)))  # the condition matters
    # Each sample is processed on its own: the batch equals the samples one at a time.
    one = torch.cat(
        [net(x[i : i + 1], t[i : i + 1], c.map(lambda v, i=i: v[i : i + 1])) for i in range(B)]
    )
    torch.testing.assert_close(out, one, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("model", "kind"), [c for c in CASES if c[1] != "labels"])
def test_dropped_rows_are_the_null_condition(model, kind):
    net, ctx, x, t = _setup(model, kind)
    drop = torch.tensor([False, True, False, True])
    c = _cond(kind, ctx, drop=drop)
    out = net(x, t, c)
    # Dropped rows do not depend on what values/context hold (NaN included) ...
    poisoned = Condition(
        labels=c.labels,
        values=None if c.values is None else c.values.masked_fill(drop[:, None], math.nan),
        context=None
        if c.context is None
        else torch.where(drop.view(-1, *[1] * len(ctx)), math.nan, c.context),
        drop=drop,
    )
    out2 = net(x, t, poisoned)
    assert torch.isfinite(out2).all()
    assert torch.equal(out2, out)
    # ... and equal leaving those kinds out (the null condition of that kind), bit for bit;
    # kept rows equal the condition without any drop mask.
    absent = Condition(labels=c.labels) if c.labels is not None else None
    assert torch.equal(out[drop], net(x, t, absent)[drop])
    kept = net(x, t, Condition(labels=c.labels, values=c.values, context=c.context))
    assert torch.equal(out[~drop], kept[~drop])
    assert not torch.equal(out[drop], kept[drop])


@pytest.mark.parametrize("model", ["mlp", "unet"])
def test_null_vectors_and_embeddings_get_gradients(model):
    net, ctx, x, t = _setup(model, "all")
    drop = torch.tensor([False, True, False, True])
    net(x, t, _cond("all", ctx, drop=drop)).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert net.values_embed.null.grad.abs().sum() > 0  # used by the dropped rows
    assert net.values_embed.proj.weight.grad.abs().sum() > 0  # used by the kept rows


@pytest.mark.parametrize("model", ["mlp", "unet"])
def test_label_condition_equals_bare_labels(model):
    net, ctx, x, t = _setup(model, "labels")
    y = torch.tensor([0, 2, 1, 3])  # 3 is the null label
    assert torch.equal(net(x, t, Condition(labels=y)), net(x, t, y))


@pytest.mark.parametrize(
    ("model", "kw"), [("mlp", {"num_classes": 3}), ("unet", {"num_classes": 3})]
)
def test_label_only_nets_have_no_new_parameters(model, kw):
    # A label-only net keeps its parameter names and init stream: old checkpoints load and
    # the weights drawn from a seed are those of before values/context existed.
    torch.manual_seed(0)
    net = MLP(4, **kw) if model == "mlp" else UNet(1, image_size=8, **kw)
    names = [n for n, _ in net.named_parameters()]
    assert not any("values_embed" in n or "context_embed" in n for n in names)
    torch.manual_seed(0)
    with_values = (
        MLP(4, values_dim=1, **kw) if model == "mlp" else UNet(1, image_size=8, values_dim=1, **kw)
    )
    shared = dict(with_values.named_parameters())
    for n, p in net.named_parameters():
        assert torch.equal(p, shared[n]), n  # extra embeddings are drawn after all others


def test_unet_context_mask_tells_dropped_from_zero_context():
    net, ctx, x, t = _setup("unet", "context")
    zeros = torch.zeros(B, *ctx, dtype=torch.float64)
    kept_zero = net(x, t, Condition(context=zeros))
    dropped = net(x, t, Condition(context=zeros, drop=torch.ones(B, dtype=torch.bool)))
    assert torch.equal(dropped, net(x, t))  # cond=None: the null context for every sample
    assert not torch.equal(kept_zero, dropped)  # the mask channel differs


@pytest.mark.parametrize("model", ["mlp", "unet"])
def test_kind_not_built_for_is_refused(model):
    net, ctx, x, t = _setup(model, "labels")
    with pytest.raises(
        ValueError, match=r"this model takes no values conditions \(built without values\)"
    ):
        net(x, t, Condition(values=torch.zeros(B, 2, dtype=torch.float64)))
    with pytest.raises(ValueError, match="this model takes no context conditions"):
        net(x, t, Condition(context=torch.zeros(B, *ctx, dtype=torch.float64)))
    net, ctx, x, t = _setup(model, "values")
    with pytest.raises(
        ValueError, match=r"label-unconditional \(num_classes=None\) but cond was given"
    ):
        net(x, t, torch.zeros(B, dtype=torch.long))
    with pytest.raises(
        ValueError,
        match=r"cond.values must have shape \(B, \*values_shape\) = \(4, 2\), got \(4, 3\)",
    ):
        net(x, t, Condition(values=torch.zeros(B, 3, dtype=torch.float64)))
    with pytest.raises(
        TypeError, match="cond must be a label tensor, a Condition or None, got list"
    ):
        net(x, t, [0, 1, 2, 3])


def test_builders_pass_every_kind_and_refuse_in_one_line():
    spec = CondSpec(num_classes=2, values_dim=3, context_shape=(5,))
    mlp = MODELS.build(MODELS.config("mlp", hidden=8, depth=1), sample_shape=(2,), cond=spec)
    assert (mlp.num_classes, mlp.values_dim, mlp.context_shape) == (2, 3, (5,))
    img = CondSpec(values_dim=1, context_shape=(2, 8, 8))
    unet = MODELS.build(MODELS.config("unet", base_channels=4), sample_shape=(1, 8, 8), cond=img)
    assert (unet.values_dim, unet.context_channels) == (1, 2)
    assert unet.in_conv.in_channels == 1 + 2 + 1  # image, context, keep mask
    with pytest.raises(
        OptionError,
        match=r"takes context images \(C, H, W\) of the samples' H x W = 8 x 8, got context of shape \(5,\)",
    ) as err:
        MODELS.build(MODELS.config("unet"), sample_shape=(1, 8, 8), cond=spec)
    assert "\n" not in str(err.value)
    with pytest.raises(OptionError, match=r"got context of shape \(2, 4, 4\)"):
        MODELS.build(
            MODELS.config("unet"), sample_shape=(1, 8, 8), cond=CondSpec(context_shape=(2, 4, 4))
        )


def test_check_cond_kinds_refuses_in_one_line():
    check_cond_kinds("toy", frozenset({"labels"}), CondSpec(num_classes=3))
    with pytest.raises(
        OptionError,
        match=r"model 'toy' does not accept values, context conditions \(it accepts \['labels'\]\)",
    ) as err:
        check_cond_kinds("toy", frozenset({"labels"}), CondSpec(values_dim=1, context_shape=(2,)))
    assert "\n" not in str(err.value)
    with pytest.raises(OptionError, match="it accepts none"):
        check_cond_kinds("plain", frozenset(), CondSpec(values_dim=1))
