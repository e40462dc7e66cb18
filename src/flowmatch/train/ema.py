"""Exponential moving average of model weights."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class EMA:
    """Keeps ``theta_ema <- decay * theta_ema + (1 - decay) * theta`` after every step.

    The average lives in a frozen copy of the model (:attr:`module`), so it can be evaluated
    or sampled from directly. The update is one fused ``torch._foreach_lerp_`` over all
    parameters (no Python loop per tensor). Buffers (e.g. normalisation statistics) are not
    averaged: they are copied from the model whenever the average is read (:meth:`module_synced`,
    :meth:`state_dict`), which costs nothing per step. Polyak & Juditsky (1992); the weight EMA
    used for sampling in DDPM (Ho et al. 2020) and EDM (Karras et al. 2022).

    Args:
        model: the trained model (its parameters are read, never written).
        decay: ``decay`` in ``(0, 1)``; the average spans about ``1 / (1 - decay)`` steps.

    Raises:
        ValueError: ``decay`` outside ``(0, 1)``.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> ema = EMA(net, decay=0.9)
        >>> ema.update()
        >>> torch.equal(ema.module.weight, net.weight)
        True
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self._model = model
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.module.eval()
        self._src: list[Tensor] = [p.detach() for p in model.parameters()]
        self._dst: list[Tensor] = [p.detach() for p in self.module.parameters()]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average one step towards the current weights (lerp by ``1 - decay``)."""
        torch._foreach_lerp_(self._dst, self._src, 1.0 - self.decay)

    @torch.no_grad()
    def module_synced(self) -> nn.Module:
        """The averaged model with buffers copied from the trained model; ready to evaluate."""
        for dst, src in zip(self.module.buffers(), self._model.buffers(), strict=True):
            dst.copy_(src)
        return self.module

    def state_dict(self) -> dict[str, Tensor]:
        """``state_dict`` of the averaged model (same keys as the model's)."""
        return self.module_synced().state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the average from :meth:`state_dict` (strict: keys must match)."""
        self.module.load_state_dict(state)
