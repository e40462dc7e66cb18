"""Exponential moving average of model weights, with the standard warm-up of the decay."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)


def ema_decay_at(k: int, decay: float, *, warmup: bool = True) -> float:
    """Decay used by the ``k``-th update (0-based): ``min(decay, (1 + k) / (10 + k))``.

    The warm-up is the ``num_updates`` rule of TensorFlow's
    ``tf.train.ExponentialMovingAverage``. Below the cap, after ``n`` updates the average
    weighs the iterate of update ``j`` by ``C(j + 8, 8) / C(n + 9, 9)``, about ``j^8``: the
    power-function EMA of Karras et al. (2024, "Analyzing and improving the training dynamics
    of diffusion models", eq. 3) with ``gamma = 8`` (relative width 0.09). So the average
    covers about the last 10 % of the run whatever its length (it lags a steady drift by
    ``n / 10`` steps) and keeps only ``1 / C(n + 9, 9)`` of the initialisation. The cap
    ``decay`` is reached at ``k = (10 decay - 1) / (1 - decay)`` (8 990 updates for 0.999).
    Without the warm-up the average keeps ``decay^n`` of the random initialisation (0.22 after
    1 500 updates at 0.999).

    Args:
        k: number of updates done before this one, ``>= 0``.
        decay: the decay cap, in ``(0, 1)``.
        warmup: ``False`` returns ``decay`` at every ``k`` (the plain EMA).

    Returns:
        The effective decay in ``(0, decay]``.

    Example:
        >>> [round(ema_decay_at(k, 0.999), 4) for k in (0, 10, 100, 10_000)]
        [0.1, 0.55, 0.9182, 0.999]
    """
    if not warmup:
        return decay
    return min(decay, (1.0 + k) / (10.0 + k))


class EMA:
    """Keeps ``theta_ema <- d_k theta_ema + (1 - d_k) theta`` after every step ``k``.

    ``d_k = min(decay, (1 + k) / (10 + k))`` (:func:`ema_decay_at`; TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``; Karras et al. 2024's power EMA with
    ``gamma = 8`` until the cap), so the average forgets the random
    initialisation from the first steps on and is usable after runs of any length; ``k`` is
    :attr:`num_updates`, part of the state (:meth:`extra_state`) so that resume is exact.
    ``warmup=False`` gives the plain EMA ``d_k = decay``.

    The average lives in a frozen copy of the model (:attr:`module`), so it can be evaluated
    or sampled from directly. The update is one fused ``torch._foreach_lerp_`` over all
    parameters (no Python loop per tensor). Buffers (e.g. normalisation statistics) are not
    averaged: they are copied from the model whenever the average is read (:meth:`module_synced`,
    :meth:`state_dict`), which costs nothing per step. Polyak & Juditsky (1992); the weight EMA
    used for sampling in DDPM (Ho et al. 2020) and EDM (Karras et al. 2022).

    Args:
        model: the trained model (its parameters are read, never written).
        decay: the decay cap ``decay`` in ``(0, 1)``; once reached, the average spans about
            ``1 / (1 - decay)`` steps.
        warmup: grow the decay with the update count (default) or use ``decay`` throughout.

    Raises:
        ValueError: ``decay`` outside ``(0, 1)``.
        TypeError: ``warmup`` is not a bool.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> ema = EMA(net, decay=0.999)
        >>> with torch.no_grad():
        ...     _ = net.weight.add_(1.0)
        >>> ema.update()  # d_0 = 0.1: the first update moves 90 % of the way
        >>> torch.allclose(ema.module.weight, net.weight - 0.1), ema.num_updates
        (True, 1)
        >>> round(ema.current_decay, 4)  # d_1 = 2 / 11
        0.1818
    """

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay!r}")
        if not isinstance(warmup, bool):
            raise TypeError(f"ema warmup must be a bool, got {warmup!r}")
        self.decay = float(decay)
        self.warmup = warmup
        self.num_updates = 0
        self._model = model
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.module.eval()
        self._src: list[Tensor] = [p.detach() for p in model.parameters()]
        self._dst: list[Tensor] = [p.detach() for p in self.module.parameters()]

    @property
    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses (``ema_decay_at(num_updates, decay)``)."""
        return ema_decay_at(self.num_updates, self.decay, warmup=self.warmup)

    @torch.no_grad()
    def update(self) -> None:
        """Move the average one step towards the current weights (lerp by ``1 - d_k``)."""
        torch._foreach_lerp_(self._dst, self._src, 1.0 - self.current_decay)
        self.num_updates += 1

    @torch.no_grad()
    def module_synced(self) -> nn.Module:
        """The averaged model with buffers copied from the trained model; ready to evaluate."""
        for dst, src in zip(self.module.buffers(), self._model.buffers(), strict=True):
            dst.copy_(src)
        return self.module

    def state_dict(self) -> dict[str, Tensor]:
        """``state_dict`` of the averaged model (same keys as the model's, so it loads into it)."""
        return self.module_synced().state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the averaged weights from :meth:`state_dict` (strict: keys must match).

        The update count is restored separately, by :meth:`load_extra_state`.
        """
        self.module.load_state_dict(state)

    def extra_state(self) -> dict[str, Any]:
        """The non-tensor state as JSON: ``{"num_updates", "decay", "warmup"}``."""
        return {"num_updates": self.num_updates, "decay": self.decay, "warmup": self.warmup}

    def load_extra_state(self, state: Mapping[str, Any] | None, *, step: int) -> None:
        """Restore :attr:`num_updates` from :meth:`extra_state`, saved at training step ``step``.

        ``state=None`` is a checkpoint written before the update count was saved (flowmatch
        0.1.0, whose EMA had no warm-up): its EMA was updated once per step, so ``num_updates``
        is set to ``step`` and the continued average follows the warm-up rule from there
        (a run with the old, plain EMA is not reproduced exactly; this is logged).

        ``decay`` and ``warmup`` are not restored: they come from the current config, so a
        resumed run may change them (the trainer logs changed config fields).

        Raises:
            ValueError: ``num_updates`` missing, not an int, or negative.
        """
        if state is None:
            logger.warning(
                "checkpoint at step %d has EMA weights but no EMA update count (written before "
                "the EMA warm-up); continuing with num_updates = %d",
                step,
                step,
            )
            self.num_updates = step
            return
        n = state.get("num_updates") if isinstance(state, Mapping) else None
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(
                f"EMA state must hold an int num_updates >= 0, got {state!r} (checkpoint at "
                f"step {step})"
            )
        self.num_updates = n
