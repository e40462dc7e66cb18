"""Training hyper-parameters: one frozen dataclass, validated field by field.

The lead's TOML/CLI layer maps the ``[train]`` table onto :class:`TrainConfig`; every field is
checked here once, so the training loop itself never re-validates anything.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


def _int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def _choice(value: Any, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")
    return value


@dataclass(frozen=True)
class TrainConfig:
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
        lr: peak learning rate (2-D toys train well at 1e-3; ALGORITHMS.md 0.2).
        weight_decay: AdamW's decoupled weight decay (0 for the small reference nets, which
            do not overfit in a few thousand steps).
        betas: Adam's moment decay rates ``(beta1, beta2)``, each in ``[0, 1)``.
        warmup_steps: linear warm-up length, ``0 <= warmup_steps <= steps``. 0 by default:
            Adam's bias correction already keeps the first updates at ~``lr`` per weight, and
            the reference networks train stably without it (docs/training.md).
        lr_schedule: ``"constant"`` (default) or ``"cosine"`` (decay to ``min_lr_ratio * lr``
            at ``steps``). Constant, because the EMA already does the averaging that a decay
            to zero buys late in a run, while a cosine halves the learning of short runs: at
            1000 steps it was worse than a plain constant-lr loop on 4 of 5 data sets
            (bench/defaults.py, docs/benchmarks.md).
        min_lr_ratio: final learning rate of the cosine as a fraction of ``lr``, in ``[0, 1]``
            (only used with ``lr_schedule="cosine"``).
        grad_clip: maximum global L2 norm of the gradient (``None``, the default: no
            clipping). Off by default: the gradient norm of these objectives is O(1) (~1.4 on
            checkerboard), so a clip at 1.0 rescales most steps, and with Adam that changed
            nothing measurable; set it for losses with rare huge gradients (e.g.
            x0-prediction near ``t -> 1``).
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

    Raises:
        TypeError: a field has the wrong type (e.g. ``steps=1.5``).
        ValueError: a field is out of range; the message names the field and the value.

    Example:
        >>> cfg = TrainConfig(steps=100, batch_size=64, lr=3e-4)
        >>> cfg.lr_schedule, cfg.grad_clip, cfg.ema_decay
        ('constant', None, 0.999)
    """

    steps: int = 5000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = None
    ema_decay: float | None = 0.999
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    seed: int = 0
    log_every: int = 100
    eval_every: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    device: str = "cpu"

    def __post_init__(self) -> None:
        # Normalise through object.__setattr__ (the dataclass is frozen): TOML gives ints for
        # floats like ``lr = 1`` and lists for ``betas``; store the canonical types.
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        _int(self.steps, "steps", minimum=1)
        _int(self.batch_size, "batch_size", minimum=1)
        lr = _float(self.lr, "lr")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        put("lr", lr)
        wd = _float(self.weight_decay, "weight_decay")
        if wd < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        put("weight_decay", wd)
        put("betas", self._check_betas(self.betas))
        _int(self.warmup_steps, "warmup_steps", minimum=0)
        if self.warmup_steps > self.steps:
            raise ValueError(
                f"warmup_steps must be <= steps = {self.steps}, got {self.warmup_steps}"
            )
        _choice(self.lr_schedule, LR_SCHEDULES, "lr_schedule")
        ratio = _float(self.min_lr_ratio, "min_lr_ratio")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        put("min_lr_ratio", ratio)
        if self.grad_clip is not None:
            clip = _float(self.grad_clip, "grad_clip")
            if clip <= 0:
                raise ValueError(
                    f"grad_clip must be > 0 (or None to disable clipping), got {self.grad_clip!r}"
                )
            put("grad_clip", clip)
        if self.ema_decay is not None:
            decay = _float(self.ema_decay, "ema_decay")
            if not 0.0 < decay < 1.0:
                raise ValueError(
                    f"ema_decay must be in (0, 1) (or None to disable EMA), got {self.ema_decay!r}"
                )
            put("ema_decay", decay)
        _choice(self.precision, PRECISIONS, "precision")
        if not isinstance(self.compile, bool):
            raise TypeError(f"compile must be a bool, got {self.compile!r}")
        _int(self.seed, "seed", minimum=0)
        _int(self.log_every, "log_every", minimum=1)
        _int(self.eval_every, "eval_every", minimum=0)
        _int(self.checkpoint_every, "checkpoint_every", minimum=0)
        _int(self.keep_checkpoints, "keep_checkpoints", minimum=1)
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a str such as 'cpu' or 'cuda:0', got {self.device!r}")
        try:
            torch.device(self.device)
        except RuntimeError as err:
            raise ValueError(
                f"device {self.device!r} is not a valid torch device string "
                f"(e.g. 'cpu', 'cuda', 'cuda:1'): {err}"
            ) from None

    @staticmethod
    def _check_betas(betas: Any) -> tuple[float, float]:
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        b1, b2 = _float(betas[0], "betas[0]"), _float(betas[1], "betas[1]")
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {tuple(betas)!r}")
        return (b1, b2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of all fields (``betas`` as a list)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (never silently dropped).

        Raises:
            ValueError: ``d`` has keys that are not fields of ``TrainConfig``.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"unknown TrainConfig key(s) {unknown}; valid keys are {sorted(names)}"
            )
        return cls(**d)
