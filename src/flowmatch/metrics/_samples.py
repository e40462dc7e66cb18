"""Validation shared by the sample-set metrics: ``(N, *D)`` tensors -> float64 ``(N, D)``."""

from __future__ import annotations

import torch
from torch import Tensor

from flowmatch.utils.checks import check_tensor


def as_samples(x: Tensor, name: str) -> Tensor:
    """Validate a sample tensor ``(N, *D)`` and return it flattened to float64 ``(N, D)``."""
    x = check_tensor(x, name)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape (N, *D) with at least 2 dims (use (N, 1) for scalars), "
            f"got {tuple(x.shape)}"
        )
    if x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    flat = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    if not bool(torch.isfinite(flat).all()):
        bad = int((~torch.isfinite(flat)).sum())
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf)")
    return flat


def as_sample_pair(
    x: Tensor, y: Tensor, names: tuple[str, str] = ("x", "y")
) -> tuple[Tensor, Tensor]:
    """Validate two sample sets with the same feature size and device; flatten both."""
    a, b = as_samples(x, names[0]), as_samples(y, names[1])
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of features, got "
            f"{tuple(x.shape[1:])} ({a.shape[1]}) and {tuple(y.shape[1:])} ({b.shape[1]})"
        )
    if a.device != b.device:
        raise ValueError(
            f"{names[0]} and {names[1]} must be on the same device, got {a.device} and {b.device}"
        )
    return a, b
