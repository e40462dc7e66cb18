"""Classifier-free guidance: exact endpoints, affinity in the scale, intervals, one call."""

from __future__ import annotations

import pytest
import torch

from flowmatch.guidance import ClassifierFreeGuidance
from flowmatch.interfaces import Condition
from flowmatch.models import MLP
from flowmatch.paths import AffinePath, CosineSchedule
from flowmatch.solvers import Euler, solve
from flowmatch.times import make_grid

F64 = torch.float64
NUM_CLASSES, NULL, D = 3, 3, 4


class ToyConditionalField:
    """v(x, t, c) = w[c] * x * (1 + t) + b[c] (label NULL = 3 is the unconditional row).

    Counts calls and records the batch size of each call.
    """

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(NUM_CLASSES + 1, D, generator=g, dtype=F64)
        self.b = torch.randn(NUM_CLASSES + 1, D, generator=g, dtype=F64)
        self.batch_sizes: list[int] = []

    def __call__(self, x, t, cond=None):
        self.batch_sizes.append(x.shape[0])
        return self.w[cond] * x * (1 + t[:, None]) + self.b[cond]


def inputs(batch: int = D, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, D, generator=g, dtype=F64)
    t = torch.rand(batch, generator=g, dtype=F64)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    return x, t, labels


def test_scale_one_is_the_conditional_field_with_one_unbatched_call():
    field = ToyConditionalField()
    x, t, labels = inputs()  # B == D
    out = ClassifierFreeGuidance(field, 1.0, NULL)(x, t, labels)
    assert out.shape == (D, D)
    assert field.batch_sizes == [D]  # the null branch is skipped
    assert torch.equal(out, field(x, t, labels))


def test_scale_zero_is_the_unconditional_field_with_one_unbatched_call():
    field = ToyConditionalField()
    x, t, labels = inputs()
    out = ClassifierFreeGuidance(field, 0.0, NULL)(x, t, labels)
    assert field.batch_sizes == [D]  # the conditional branch is skipped
    assert torch.equal(out, field(x, t, torch.full_like(labels, NULL)))


@pytest.mark.parametrize("interval", [None, (0.0, 1.0)])
def test_guided_field_is_affine_in_the_scale(interval):
    field = ToyConditionalField()
    x, t, labels = inputs(batch=7)
    v_uncond = field(x, t, torch.full_like(labels, NULL))
    v_cond = field(x, t, labels)
    for s in (-0.5, 0.3, 1.7, 4.0):
        field.batch_sizes.clear()
        out = ClassifierFreeGuidance(field, s, NULL, interval=interval)(x, t, labels)
        assert out.shape == (7, D)
        assert field.batch_sizes == [14]  # both branches in ONE batched call
        # lerp vs the affine form differ only by float64 round-off of a few flops on O(1-10)
        # values: 1e-12 absolute.
        torch.testing.assert_close(out, v_uncond + s * (v_cond - v_uncond), rtol=0, atol=1e-12)
    # The interval covering [0, 1] changes nothing, including the exact endpoints.
    guided = ClassifierFreeGuidance(field, 0.0, NULL, interval=interval)(x, t, labels)
    assert torch.equal(guided, v_uncond)


def test_interval_guides_only_inside_closed_interval():
    field = ToyConditionalField()
    x, _, labels = inputs(batch=6)
    t = torch.tensor([0.0, 0.2, 0.3, 0.5, 0.7, 0.9], dtype=F64)
    s, lo, hi = 2.5, 0.2, 0.7
    out = ClassifierFreeGuidance(field, s, NULL, interval=(lo, hi))(x, t, labels)
    v_cond = field(x, t, labels)
    guided = ClassifierFreeGuidance(field, s, NULL)(x, t, labels)
    inside = torch.tensor([False, True, True, True, True, False])
    assert torch.equal(out[~inside], v_cond[~inside])  # s = 1 outside, bit-exact
    assert torch.equal(out[inside], guided[inside])  # endpoints 0.2 and 0.7 are included
    assert not torch.equal(out[inside], v_cond[inside])


def test_guidance_is_the_same_for_every_prediction_type():
    # Conversions of an affine path are affine in the prediction at fixed (x_t, t)
    # (AffinePath.convert), so guiding velocities equals guiding scores/x1/x0 predictions.
    path = AffinePath(CosineSchedule())
    field = ToyConditionalField()
    x, _, labels = inputs(batch=5)
    t = torch.linspace(0.1, 0.9, 5, dtype=F64)  # away from the clamped endpoints
    s = 3.0
    guided_v = ClassifierFreeGuidance(field, s, NULL)(x, t, labels)
    for dst in ("score", "x1", "x0"):

        def converted(xx, tt, cond, dst=dst):
            return path.convert(field(xx, tt, cond), src="velocity", dst=dst, xt=xx, t=tt)

        guided_dst = ClassifierFreeGuidance(converted, s, NULL)(x, t, labels)
        expected = path.convert(guided_v, src="velocity", dst=dst, xt=x, t=t)
        # Round-off of the conversion's divisions (values O(10)): 1e-10.
        torch.testing.assert_close(guided_dst, expected, rtol=0, atol=1e-10)


def test_rows_do_not_mix():
    # Permuting the batch permutes the output: the [cond; null] concatenation keeps rows aligned.
    field = ToyConditionalField()
    x, t, labels = inputs(batch=6)
    cfg = ClassifierFreeGuidance(field, 2.0, NULL, interval=(0.2, 0.8))
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    assert torch.equal(cfg(x[perm], t[perm], labels[perm]), cfg(x, t, labels)[perm])


def test_with_solver_and_mlp():
    net = MLP(dim=D, hidden=16, depth=2, num_classes=NUM_CLASSES).double()
    cfg = ClassifierFreeGuidance(net, 1.5, net.null_label, interval=(0.1, 0.9))
    x0, _, labels = inputs()
    sol = solve(cfg, x0, make_grid("uniform", 4, dtype=F64), Euler(), cond=labels)
    assert sol.x.shape == (D, D) and sol.nfe == 4


def test_int32_labels_and_repr():
    field = ToyConditionalField()
    x, t, labels = inputs()
    cfg = ClassifierFreeGuidance(field, 2.0, NULL)
    torch.testing.assert_close(cfg(x, t, labels.int()), cfg(x, t, labels), rtol=0, atol=0)
    assert "scale=2.0" in repr(cfg) and "null_label=3" in repr(cfg)


def test_constructor_errors():
    f = ToyConditionalField()
    with pytest.raises(TypeError, match="field must be callable, got int"):
        ClassifierFreeGuidance(3, 1.0, NULL)
    with pytest.raises(TypeError, match="scale must be a number, got '2'"):
        ClassifierFreeGuidance(f, "2", NULL)
    with pytest.raises(TypeError, match="scale must be a number, got True"):
        ClassifierFreeGuidance(f, True, NULL)
    with pytest.raises(ValueError, match="scale must be finite, got nan"):
        ClassifierFreeGuidance(f, float("nan"), NULL)
    with pytest.raises(TypeError, match="null_label must be an int, got 3.0"):
        ClassifierFreeGuidance(f, 2.0, 3.0)
    with pytest.raises(ValueError, match="null_label must be >= 0, got -1"):
        ClassifierFreeGuidance(f, 2.0, -1)
    with pytest.raises(ValueError, match=r"0 <= t_lo < t_hi <= 1, got \(0.5, 0.5\)"):
        ClassifierFreeGuidance(f, 2.0, NULL, interval=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"0 <= t_lo < t_hi <= 1, got \(-0.1, 0.5\)"):
        ClassifierFreeGuidance(f, 2.0, NULL, interval=(-0.1, 0.5))
    with pytest.raises(TypeError, match=r"interval must be a pair \(t_lo, t_hi\), got 0.5"):
        ClassifierFreeGuidance(f, 2.0, NULL, interval=0.5)
    with pytest.raises(TypeError, match="interval must hold two numbers"):
        ClassifierFreeGuidance(f, 2.0, NULL, interval=("a", 1.0))


def test_call_errors():
    cfg = ClassifierFreeGuidance(ToyConditionalField(), 2.0, NULL)
    x, t, labels = inputs()
    with pytest.raises(ValueError, match="needs class labels: pass cond of shape"):
        cfg(x, t)
    with pytest.raises(TypeError, match="cond must be a label tensor of shape"):
        cfg(x, t, [0, 1, 2, 0])
    with pytest.raises(
        ValueError, match=r"cond must be labels of shape \(B,\) = \(4,\), got \(4, 1\)"
    ):
        cfg(x, t, labels[:, None])
    with pytest.raises(TypeError, match="cond labels must be an integer tensor, got dtype"):
        cfg(x, t, labels.double())
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(4,\), got \(1,\)"):
        cfg(x, t[:1], labels)

    def bad(x, t, cond=None):
        return x[: x.shape[0] // 2]

    with pytest.raises(ValueError, match=r"field returned shape \(4, 4\) for a batch of shape"):
        ClassifierFreeGuidance(bad, 2.0, NULL)(x, t, labels)


# ------------------------------------------------------------------ values and context


class ToyValueContextField:
    """v(x, t, c) = x (1 + t) + e(c), e = values W + flatten(context) U, or e_null if dropped.

    The null branch must reach the field as drop = True (values/context passed unchanged).
    """

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.W = torch.randn(2, D, generator=g, dtype=F64)
        self.U = torch.randn(6, D, generator=g, dtype=F64)
        self.e_null = torch.randn(D, generator=g, dtype=F64)
        self.calls: list = []

    def __call__(self, x, t, cond=None):
        self.calls.append(cond)
        e = torch.zeros_like(x)
        if cond.values is not None:
            e = e + cond.values @ self.W
        if cond.context is not None:
            e = e + cond.context.reshape(len(x), -1) @ self.U
        if cond.drop is not None:
            e = torch.where(cond.drop[:, None], self.e_null, e)
        return x * (1 + t[:, None]) + e


def value_inputs(kinds: tuple[str, ...], batch: int = D):
    x, t, labels = inputs(batch)
    g = torch.Generator().manual_seed(5)
    parts = {
        "values": torch.randn(batch, 2, generator=g, dtype=F64),
        "context": torch.randn(batch, 3, 2, generator=g, dtype=F64),
    }
    return x, t, Condition(**{k: parts[k] for k in kinds})


VALUE_KINDS = [("values",), ("context",), ("values", "context")]


@pytest.mark.parametrize("kinds", VALUE_KINDS)
def test_values_and_context_exact_at_scale_one_and_zero(kinds):
    field = ToyValueContextField()
    x, t, c = value_inputs(kinds)
    cond_out = ClassifierFreeGuidance(field, 1.0)(x, t, c)
    assert torch.equal(cond_out, field(x, t, c))  # s = 1: the conditional field, one call
    field.calls.clear()
    null_out = ClassifierFreeGuidance(field, 0.0)(x, t, c)
    (null,) = field.calls  # s = 0: only the null branch, batch B
    assert null.drop.all() and null.values is c.values and null.context is c.context
    expected = x * (1 + t[:, None]) + field.e_null
    assert torch.equal(null_out, expected)
    assert torch.equal(
        null_out,
        field(
            x,
            t,
            Condition(values=c.values, context=c.context, drop=torch.ones(D, dtype=torch.bool)),
        ),
    )


@pytest.mark.parametrize("kinds", VALUE_KINDS)
def test_values_and_context_guidance_is_affine_in_one_batched_call(kinds):
    field = ToyValueContextField()
    x, t, c = value_inputs(kinds, batch=5)
    v_cond = field(x, t, c)
    v_null = x * (1 + t[:, None]) + field.e_null
    for s in (-0.5, 2.0, 4.5):
        field.calls.clear()
        out = ClassifierFreeGuidance(field, s, interval=(0.0, 1.0))(x, t, c)
        (both,) = field.calls  # one call of batch 2B: [cond; null]
        assert both.batch_size == 10
        assert torch.equal(both.drop, torch.tensor([False] * 5 + [True] * 5))
        # lerp vs the affine form: float64 round-off on O(10) values.
        torch.testing.assert_close(out, v_null + s * (v_cond - v_null), rtol=0, atol=1e-12)


def test_mixed_labels_and_values_null_both():
    seen = []

    def field(x, t, cond=None):
        seen.append(cond)
        return x

    x, t, labels = inputs()
    c = Condition(
        labels=labels,
        values=torch.zeros(D, 1, dtype=F64),
        drop=torch.tensor([True, False, False, False]),
    )
    ClassifierFreeGuidance(field, 3.0, NULL)(x, t, c)
    (both,) = seen
    assert both.labels[:D].tolist() == labels.tolist() and (both.labels[D:] == NULL).all()
    assert both.drop.tolist() == [True, False, False, False] + [True] * D  # a given mask is kept
    with pytest.raises(
        ValueError, match="the condition has labels but ClassifierFreeGuidance got null_label=None"
    ):
        ClassifierFreeGuidance(field, 3.0)(x, t, c)


def test_with_solver_and_mlp_on_values_and_context():
    net = MLP(dim=D, hidden=16, depth=2, values_dim=2, context_shape=(3, 2)).double()
    _, _, c = value_inputs(("values", "context"))
    x0, _, _ = inputs()
    sol = solve(
        ClassifierFreeGuidance(net, 2.0), x0, make_grid("uniform", 4, dtype=F64), Euler(), cond=c
    )
    assert sol.x.shape == (D, D) and sol.nfe == 4
    # At s = 0 the guided solve is the unconditional one (null embedding for every sample).
    null = Condition(values=c.values, context=c.context, drop=torch.ones(D, dtype=torch.bool))
    g0 = solve(
        ClassifierFreeGuidance(net, 0.0), x0, make_grid("uniform", 4, dtype=F64), Euler(), cond=c
    )
    assert torch.equal(
        g0.x, solve(net, x0, make_grid("uniform", 4, dtype=F64), Euler(), cond=null).x
    )


def test_condition_errors():
    cfg = ClassifierFreeGuidance(ToyValueContextField(), 2.0)
    x, t, c = value_inputs(("values",))
    with pytest.raises(ValueError, match="needs a condition with labels, values or context"):
        cfg(x, t, Condition(drop=torch.zeros(D, dtype=torch.bool)))
    with pytest.raises(ValueError, match="cond must have batch size B = 4, got 2"):
        cfg(x, t, Condition(values=c.values[:2]))
    with pytest.raises(ValueError, match="cond must have batch size B = 4, got 3"):
        ClassifierFreeGuidance(ToyValueContextField(), 2.0, NULL)(
            x, t, Condition(labels=torch.zeros(3, dtype=torch.long))
        )
