"""Training hyper-parameters: one frozen dataclass, validated field by field.

The ``[train]`` table of a run config maps onto :class:`TrainConfig`; every field is checked
when the record is built (``flowmatch.utils.options``), so the training loop never re-validates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from flowmatch.utils.options import OptionError, Options, option

LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig(Options):
    """Optimisation, schedule, precision and bookkeeping settings of a training run.

    A step ``k`` (0-based) uses the learning rate ``lr_k`` of a linear warm-up followed by a
    constant rate (the default) or a cosine decay (Loshchilov & Hutter 2017, SGDR eq. 5,
    without restarts):

    ``lr_k = lr (k + 1) / W`` for ``k < W``; then ``lr_k = lr`` (``lr_schedule="constant"``) or
    ``lr_k = lr (r + (1 - r) (1 + cos(pi (k - W) / (S - W))) / 2)`` (``"cosine"``),

    with ``W = warmup_steps``, ``S = steps`` and ``r = min_lr_ratio``. The optimiser is AdamW
    (Loshchilov & Hutter 2019). The defaults are measured against a plain PyTorch loop in
    ``bench/defaults.py`` (docs/training.md says why each is what it is).

    Attributes:
        steps: total number of optimisation steps of the run; also the horizon of the cosine
            decay (if chosen), so resuming with a different ``steps`` changes its curve.
        batch_size: samples per step and per rank (data-parallel runs see
            ``batch_size * world_size`` samples per step).
        lr: peak learning rate (the 2-D toys and digits train well at 1e-3; docs/benchmarks.md).
        weight_decay: AdamW's decoupled weight decay (0 for the small reference nets, which
            do not overfit in a few thousand steps).
        betas: Adam's moment decay rates ``(beta1, beta2)``, each in ``[0, 1)``.
        warmup_steps: linear warm-up length, ``0 <= warmup_steps <= steps``. 0 by default:
            Adam's bias correction already keeps the first updates at ~``lr`` per weight, and
            the reference networks train stably without it (docs/training.md).
        lr_schedule: ``"constant"`` (default) or ``"cosine"`` (decay to ``min_lr_ratio * lr``
            at ``steps``). Constant, because the EMA already does the averaging that a decay
            to zero buys late in a run, while a cosine halves the learning of short runs: at
            1000 steps it was worse than a plain constant-lr loop on the 2-D sets
            (bench/defaults.py, docs/benchmarks.md).
        min_lr_ratio: final learning rate of the cosine as a fraction of ``lr``, in ``[0, 1]``
            (only used with ``lr_schedule="cosine"``).
        grad_clip: maximum global L2 norm of the gradient (``None``, the default: no
            clipping). Off by default: the gradient norm of these objectives is O(1) (median
            1.44 on checkerboard, 1.09 on moons), so a clip at 1.0 rescales most steps; set it
            for losses with rare huge gradients (e.g. x0-prediction near ``t -> 1``).
        ema_decay: cap of the decay of the weight EMA (``None``: no EMA), in ``(0, 1)``. The
            effective decay of update ``k`` is ``min(ema_decay, (1 + k) / (10 + k))``
            (:class:`~flowmatch.train.ema.EMA`), so the EMA averages about the last 10 % of
            a run until ``1 / (1 - ema_decay)`` steps (0.999: reached after ~9000 steps);
            it is usable after runs of any length.
        precision: ``"fp32"``, or ``"bf16"`` autocast for the forward pass (the loss and the
            master weights stay fp32).
        compile: wrap the model in ``torch.compile`` (off by default: compilation costs tens
            of seconds, which only pays off for long GPU runs).
        seed: base seed; every batch and every step's randomness derive from it.
        log_every: steps between metric records (and the only points where the loop waits for
            the device, so keep it >= 10 for speed).
        eval_every: steps between calls of the evaluation function (0: never).
        checkpoint_every: steps between checkpoints (0: only at the end of ``fit``).
        keep_checkpoints: number of most recent checkpoints kept on disk (>= 1).
        device: torch device string, e.g. ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
        dist_timeout: data-parallel runs: seconds a collective waits for the other ranks
            before the run stops with one line naming the rank that did not respond (PyTorch's
            default is 30 minutes). It must exceed the longest work rank 0 does alone
            (an evaluation, a checkpoint write), during which the other ranks wait.

    Raises:
        TypeError: a field has the wrong type (e.g. ``steps=1.5``).
        ValueError: a field is out of range; the message names the field and the value.

    Example:
        >>> cfg = TrainConfig(steps=100, batch_size=64, lr=3e-4)
        >>> cfg.lr_schedule, cfg.grad_clip, cfg.ema_decay
        ('constant', None, 0.999)
    """

    steps: int = option(5000, ge=1, doc="total optimisation steps (also the cosine horizon)")
    batch_size: int = option(256, ge=1, doc="samples per step and per rank")
    lr: float = option(1e-3, gt=0, doc="peak learning rate")
    weight_decay: float = option(0.0, ge=0, doc="AdamW decoupled weight decay")
    betas: tuple[float, ...] = option((0.9, 0.999), doc="Adam moment decays (beta1, beta2)")
    warmup_steps: int = option(0, ge=0, doc="linear warm-up steps (<= steps)")
    lr_schedule: Literal["constant", "cosine"] = option(
        "constant", doc="learning-rate curve after the warm-up"
    )
    min_lr_ratio: float = option(0.0, ge=0, le=1, doc="final lr of the cosine, as a fraction")
    grad_clip: float | None = option(
        None, gt=0, hint="or None to disable clipping", doc="max global gradient L2 norm"
    )
    ema_decay: float | None = option(
        0.999,
        gt=0,
        lt=1,
        hint="or None to disable EMA",
        doc="cap of the weight EMA decay (warm-up below it)",
    )
    ema_warmup: bool = option(
        True,
        doc="grow the EMA decay as (1 + k) / (10 + k) up to ema_decay (false: ema_decay from "
        "step 0, a slow average from the start, e.g. for a self-teacher)",
    )
    precision: Literal["fp32", "bf16"] = option("fp32", doc="bf16 autocasts the forward pass")
    compile: bool = option(False, doc="wrap the trained modules in torch.compile")
    seed: int = option(0, ge=0, doc="base seed of model init, batches and per-step randomness")
    log_every: int = option(100, ge=1, doc="steps between metric records (the only host syncs)")
    eval_every: int = option(0, ge=0, doc="steps between evaluations (0: never)")
    checkpoint_every: int = option(1000, ge=0, doc="steps between checkpoints (0: at the end)")
    keep_checkpoints: int = option(2, ge=1, doc="most recent checkpoints kept on disk")
    device: str = option("cpu", doc="torch device: 'cpu', 'cuda', 'cuda:1', ...")
    dist_timeout: float = option(
        300.0, gt=0, doc="DDP: seconds to wait for a silent rank before stopping, naming it"
    )

    def validate(self) -> None:
        """Checks that involve several fields or torch (betas, warm-up, device)."""
        if self.lr > torch.finfo(torch.float32).max:
            raise OptionError("lr", f"must be a float32-representable number, got {self.lr!r}")
        if len(self.betas) != 2:
            raise OptionError("betas", f"must be a pair (beta1, beta2), got {self.betas!r}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise OptionError("betas", f"must lie in [0, 1), got {self.betas!r}")
        if self.warmup_steps > self.steps:
            raise OptionError(
                "warmup_steps", f"must be <= steps = {self.steps}, got {self.warmup_steps}"
            )
        try:
            torch.device(self.device)
        except RuntimeError as err:
            raise OptionError(
                "device",
                f"{self.device!r} is not a valid torch device string "
                f"(e.g. 'cpu', 'cuda', 'cuda:1'): {err}",
            ) from None
