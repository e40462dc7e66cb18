"""Frozen feature networks ("teachers") that training methods read, loaded from their names.

``objective.teacher`` (representation alignment, ``objective.kind = "repa"``) names one:

- ``"digits_classifier"``: the library's digits classifier (``flowmatch.metrics``); note that
  ``fd_digits`` uses its penultimate features, so aligning to them optimises the metric's own
  feature space: report such runs with that caveat;
- ``"autoencoder:RUN_DIR"``: the encoder of an autoencoder trained by
  ``flowmatch autoencoder train`` (an independent teacher);
- ``"random"``: a fixed random MLP ``D -> 256 -> feature_dim`` seeded from ``train.seed`` (the
  control arm: alignment to features that know nothing about the data).

Every teacher takes model-space samples ``(B, *D)`` (flattened first).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from flowmatch.utils.options import OptionError
from flowmatch.utils.tensor import mix_seed

__all__ = ["frozen_modules", "load_teacher"]

_TEACHER_STREAM = 0x7EA


def load_teacher(
    spec: str, sample_shape: tuple[int, ...], *, feature_dim: int, seed: int
) -> nn.Module:
    """The frozen teacher named ``spec`` (see the module docstring), in eval mode.

    Raises:
        OptionError: an unknown name or a missing autoencoder run.
    """
    dim = math.prod(sample_shape)
    if spec == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(seed, _TEACHER_STREAM))
            net: nn.Module = nn.Sequential(
                nn.Flatten(), nn.Linear(dim, 256), nn.SiLU(), nn.Linear(256, feature_dim)
            )
    elif spec == "digits_classifier":
        from flowmatch.metrics.digits_features import load_digits_classifier

        clf = load_digits_classifier()
        net = nn.Sequential(nn.Flatten(), _Float64(clf))
    elif spec.startswith("autoencoder:"):
        from flowmatch.api.latent import load_autoencoder

        try:
            space = load_autoencoder(spec.partition(":")[2])
        except FileNotFoundError as err:
            raise OptionError("objective.teacher", str(err)) from None
        net = nn.Sequential(nn.Flatten(), space.net.encoder)
    else:
        raise OptionError(
            "objective.teacher",
            f"={spec!r} names no teacher; use 'digits_classifier', 'autoencoder:RUN_DIR' or "
            "'random'",
        )
    return net.eval().requires_grad_(False)


class _Float64(nn.Module):
    """Runs a float64 network on float32 inputs (the digits classifier is stored in float64)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.double()).to(x.dtype)


def frozen_modules(cfg: Any, sample_shape: tuple[int, ...]) -> dict[str, nn.Module]:
    """The frozen modules a run's objective reads (``{"teacher": ...}`` or none)."""
    spec = getattr(cfg.objective, "teacher", None)
    if spec is None:
        return {}
    dim = int(getattr(cfg.objective, "feature_dim", 64))
    return {
        "teacher": load_teacher(spec, tuple(sample_shape), feature_dim=dim, seed=cfg.train.seed)
    }
