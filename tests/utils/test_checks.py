"""Input validation helpers: each check accepts good input and names the argument otherwise."""

from __future__ import annotations

import math

import pytest
import torch

from flowmatch.utils.checks import (
    check_batch,
    check_finite,
    check_in_choices,
    check_positive_float,
    check_positive_int,
    check_same_batch,
    check_tensor,
    check_time,
)


def test_check_tensor():
    x = torch.zeros(2)
    assert check_tensor(x, "x") is x
    with pytest.raises(TypeError, match="weights must be a torch.Tensor, got list"):
        check_tensor([1.0], "weights")


@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (2, 3, 5)])
def test_check_batch_accepts(shape):
    x = torch.zeros(shape, dtype=torch.float64)
    assert check_batch(x) is x


@pytest.mark.parametrize(
    ("value", "kwargs", "exc", "match"),
    [
        (
            torch.zeros(3),
            {},
            ValueError,
            r"x must have shape \(B, \*D\) with at least 2 dims, got \(3,\)",
        ),
        (torch.zeros(2, 3), {"min_dim": 3}, ValueError, r"at least 3 dims, got \(2, 3\)"),
        (torch.zeros(0, 3), {}, ValueError, r"x must have a non-empty batch, got shape \(0, 3\)"),
        (
            torch.zeros(2, 3, dtype=torch.int32),
            {},
            TypeError,
            "x must be a floating-point tensor, got dtype torch.int32",
        ),
        ((1.0, 2.0), {"name": "x1"}, TypeError, "x1 must be a torch.Tensor, got tuple"),
    ],
)
def test_check_batch_errors(value, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        check_batch(value, **kwargs)


def test_check_time():
    t = torch.tensor([0.0, 0.5, 1.0])
    assert check_time(t, 3) is t
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(4,\), got \(3,\)"):
        check_time(t, 4)
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(3,\), got \(3, 1\)"):
        check_time(t[:, None], 3)
    with pytest.raises(TypeError, match="t must be a floating-point tensor, got dtype torch.int64"):
        check_time(torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\], got values in \[-0.1, 0.5\]"):
        check_time(torch.tensor([-0.1, 0.5]), 2)
    with pytest.raises(ValueError, match=r"times must lie in \[0, 1\], got values in \[nan, nan\]"):
        check_time(torch.tensor([math.nan, 0.5]), 2, "times")
    with pytest.raises(TypeError, match="t must be a torch.Tensor, got float"):
        check_time(0.5, 1)


def test_check_same_batch():
    a = torch.zeros(3, 2)
    check_same_batch(a, torch.ones(3, 2))
    with pytest.raises(
        ValueError, match=r"x0 and x1 must have the same shape, got \(3, 2\) and \(2, 3\)"
    ):
        check_same_batch(a, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"u and v must have the same shape"):
        check_same_batch(a, torch.zeros(3), names=("u", "v"))
    with pytest.raises(ValueError, match="x0 and x1 must be on the same device, got cpu and meta"):
        check_same_batch(a, torch.zeros(3, 2, device="meta"))


def test_check_finite():
    x = torch.tensor([1.0, 2.0])
    assert check_finite(x, "x") is x
    bad = torch.tensor([1.0, math.inf, math.nan])
    with pytest.raises(
        FloatingPointError, match=r"^samples has 2 non-finite value\(s\) \(NaN or inf\)$"
    ):
        check_finite(bad, "samples")
    with pytest.raises(
        FloatingPointError, match=r"non-finite value\(s\) \(NaN or inf\); lower the lr"
    ):
        check_finite(bad, "loss", hint="lower the lr")


def test_check_positive_int():
    assert check_positive_int(3, "n") == 3
    assert check_positive_int(0, "rank", minimum=0) == 0
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        check_positive_int(0, "n")
    with pytest.raises(ValueError, match="dim must be >= 2, got 1"):
        check_positive_int(1, "dim", minimum=2)
    with pytest.raises(TypeError, match=r"n must be an int, got 2\.0 \(float\)"):
        check_positive_int(2.0, "n")
    with pytest.raises(TypeError, match=r"n must be an int, got True \(bool\)"):
        check_positive_int(True, "n")


def test_check_positive_float():
    assert check_positive_float(2, "lr") == 2.0 and isinstance(check_positive_float(2, "lr"), float)
    assert check_positive_float(0.0, "eps", allow_zero=True) == 0.0
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got 0"):
        check_positive_float(0, "lr")
    with pytest.raises(ValueError, match=r"eps must be a finite number >= 0, got -1.0"):
        check_positive_float(-1.0, "eps", allow_zero=True)
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got inf"):
        check_positive_float(math.inf, "lr")
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got nan"):
        check_positive_float(math.nan, "lr")
    with pytest.raises(TypeError, match=r"lr must be a number, got '1e-3' \(str\)"):
        check_positive_float("1e-3", "lr")
    with pytest.raises(TypeError, match=r"lr must be a number, got False \(bool\)"):
        check_positive_float(False, "lr")


def test_check_in_choices():
    assert check_in_choices("rk4", {"euler", "rk4"}, "solver") == "rk4"
    with pytest.raises(ValueError, match=r"unknown solver 'rk5'; choose one of \['euler', 'rk4'\]"):
        check_in_choices("rk5", ("rk4", "euler"), "solver")
    with pytest.raises(ValueError, match=r"unknown solver None"):
        check_in_choices(None, ("rk4",), "solver")
