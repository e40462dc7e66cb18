"""Input validation for public entry points.

Every check raises ``ValueError``/``TypeError`` whose message names the argument, shows the
offending value and says what was expected. Checks run once at a boundary, never per step.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


def check_tensor(value: Any, name: str) -> Tensor:
    """Raise ``TypeError`` unless ``value`` is a tensor; return it."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_batch(x: Any, name: str = "x", *, min_dim: int = 2) -> Tensor:
    """Check ``x`` is a floating tensor of shape ``(B, *D)`` with ``B >= 1``."""
    check_tensor(x, name)
    if x.ndim < min_dim:
        raise ValueError(
            f"{name} must have shape (B, *D) with at least {min_dim} dims, got {tuple(x.shape)}"
        )
    if x.shape[0] < 1:
        raise ValueError(f"{name} must have a non-empty batch, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def check_time(t: Any, batch_size: int, name: str = "t") -> Tensor:
    """Check ``t`` is a floating ``(B,)`` tensor with values in ``[0, 1]``."""
    check_tensor(t, name)
    if t.shape != (batch_size,):
        raise ValueError(f"{name} must have shape (B,) = ({batch_size},), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    lo, hi = float(t.min()), float(t.max())
    if not (lo >= 0.0 and hi <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got values in [{lo:.6g}, {hi:.6g}]")
    return t


def check_same_batch(a: Tensor, b: Tensor, names: tuple[str, str] = ("x0", "x1")) -> None:
    """Check two tensors have identical shapes (same batch and feature shape)."""
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.device != b.device:
        raise ValueError(
            f"{names[0]} and {names[1]} must be on the same device, got {a.device} and {b.device}"
        )


def check_finite(x: Tensor, name: str, *, hint: str = "") -> Tensor:
    """Raise ``FloatingPointError`` if ``x`` has NaN/inf entries (one check, not per step)."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        msg = f"{name} has {bad} non-finite value(s) (NaN or inf)"
        raise FloatingPointError(msg + (f"; {hint}" if hint else ""))
    return x


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Check ``value`` is an int (not bool) ``>= minimum``; return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_positive_float(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Check ``value`` is a finite real number ``> 0`` (or ``>= 0``); return it as float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    ok = v >= 0 if allow_zero else v > 0
    if not (ok and math.isfinite(v)):
        expected = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {expected}, got {value!r}")
    return v


def check_in_choices(value: Any, choices: Iterable[str], name: str) -> str:
    """Check ``value`` is one of ``choices``; the message lists the valid names."""
    options = sorted(choices)
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of {options}")
    return value


def signature_error(fn: Any, params: tuple[str, ...], name: str) -> TypeError | None:
    """A ``TypeError`` naming the expected call if ``fn`` cannot take ``len(params)`` arguments.

    Used *after* a call raised ``TypeError`` (so a correct call costs nothing): ``None`` when
    the signature does fit (the error came from inside ``fn``) or cannot be inspected. For a
    ``torch.nn.Module`` the signature of its ``forward`` is checked; wrappers that hold the
    callable as ``.model`` or ``.field`` are looked into one level.

    Args:
        fn: the callable (a network, a velocity field, a flow map).
        params: the positional parameters it is called with, e.g. ``("x", "t", "cond")``;
            the last one is shown as optional (``cond=None``).
        name: what ``fn`` is, for the message (``"model"``, ``"field"``).
    """
    expected = ", ".join([*params[:-1], f"{params[-1]}=None"])
    for candidate in (fn, getattr(fn, "model", None), getattr(fn, "field", None)):
        if candidate is None or not callable(candidate):
            continue
        target = candidate.forward if isinstance(candidate, torch.nn.Module) else candidate
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):  # builtins, some C extensions
            continue
        try:
            sig.bind(*([None] * len(params)))
        except TypeError:
            what = type(candidate).__name__
            shown = f"{what}.forward{sig}" if isinstance(candidate, torch.nn.Module) else f"{sig}"
            return TypeError(
                f"{name} must be called as {name}({', '.join(params)}) and so define "
                f"forward({expected}) (a function: ({expected})); got {shown}"
            )
    return None
