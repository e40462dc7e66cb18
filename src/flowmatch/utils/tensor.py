"""Tensor helpers shared across modules."""

from __future__ import annotations

import torch
from torch import Tensor

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant for mixing seeds (splitmix64)
_MASK = (1 << 63) - 1


def expand_like(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a ``(B,)`` tensor to ``(B, 1, ..., 1)`` so it broadcasts against ``x`` ``(B, *D)``."""
    return t.reshape(t.shape[0], *([1] * (x.ndim - 1)))


def mix_seed(*parts: int) -> int:
    """Combine integers into one 63-bit seed (splitmix64 finaliser); deterministic, no global RNG."""
    h = 0
    for p in parts:
        h = (h + int(p) + _MIX) & ((1 << 64) - 1)
        h ^= h >> 30
        h = (h * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
        h ^= h >> 27
        h = (h * 0x94D049BB133111EB) & ((1 << 64) - 1)
        h ^= h >> 31
    return h & _MASK


def step_generator(seed: int, *parts: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded from ``(seed, *parts)`` (e.g. ``(seed, rank, step)``).

    Deriving every step's randomness from its index, instead of carrying one generator
    forward, makes resumed, prefetched and data-parallel runs reproduce exactly.
    """
    g = torch.Generator(device=device)
    g.manual_seed(mix_seed(seed, *parts))
    return g
