"""The conditional flow-matching objective (path x coupling x time sampler x prediction)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from flowmatch.couplings.base import Coupling, IndependentCoupling
from flowmatch.interfaces import PREDICTIONS, Prediction, VelocityField
from flowmatch.objectives.weighting import WEIGHTINGS, loss_weight
from flowmatch.paths.affine import AffinePath
from flowmatch.sources import GaussianSource, Source
from flowmatch.times.samplers import TimeSampler, UniformTime
from flowmatch.utils.checks import check_batch, check_in_choices, check_same_batch


@dataclass(frozen=True)
class LossOutput:
    """Per-sample loss ``(B,)`` and detached scalars to log."""

    loss: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


class FlowMatchingObjective:
    """Conditional flow matching: ``E_{t, (x0, x1) ~ pi} w(t) ||f(x_t, t) - y||^2``.

    ``y`` is the target of the network's parameterisation: the conditional velocity
    ``d_alpha x1 + d_sigma x0`` for ``"velocity"``, ``x1`` or ``x0`` for data/noise
    prediction (Lipman et al. 2023, eq. 22; Tong et al. 2024, Alg. 1 for couplings).

    Args:
        path: the affine path (default linear / rectified).
        coupling: pairs ``x0`` with ``x1`` (default independent).
        time_sampler: training times (default uniform).
        source: the source ``p0`` (default ``N(0, I)``).
        prediction: what the network outputs: ``"velocity"``, ``"x1"`` or ``"x0"``.
        weighting: ``"none"`` or ``"cosmap"``.
        cond_dropout: probability of replacing a label by ``null_label`` (classifier-free
            guidance training; Ho & Salimans 2022).
        null_label: the label id of "no condition" (usually ``num_classes``); required when
            ``cond_dropout > 0``.

    Raises:
        ValueError: unknown ``prediction``/``weighting``, ``cond_dropout`` outside ``[0, 1)``,
            or ``cond_dropout > 0`` without ``null_label``.

    Example:
        >>> import torch
        >>> from flowmatch.models import MLP
        >>> obj = FlowMatchingObjective()
        >>> out = obj(MLP(dim=2, hidden=32, depth=2), torch.randn(8, 2))
        >>> out.loss.shape
        torch.Size([8])
    """

    def __init__(
        self,
        path: AffinePath | None = None,
        coupling: Coupling | None = None,
        time_sampler: TimeSampler | None = None,
        source: Source | None = None,
        *,
        prediction: Prediction = "velocity",
        weighting: str = "none",
        cond_dropout: float = 0.0,
        null_label: int | None = None,
    ) -> None:
        self.path = path if path is not None else AffinePath()
        self.coupling = coupling if coupling is not None else IndependentCoupling()
        self.time_sampler = time_sampler if time_sampler is not None else UniformTime()
        self.source = source if source is not None else GaussianSource()
        check_in_choices(prediction, [p for p in PREDICTIONS if p != "score"], "prediction")
        self.prediction: Prediction = prediction
        self.weighting = check_in_choices(weighting, WEIGHTINGS, "weighting")
        if not 0.0 <= cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1), got {cond_dropout}")
        if cond_dropout > 0 and null_label is None:
            raise ValueError("cond_dropout > 0 needs null_label (the id of the empty condition)")
        self.cond_dropout = float(cond_dropout)
        self.null_label = null_label

    def pair(
        self,
        x1: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw sources and couple them with ``x1`` ``(B, *D)``; returns paired ``x0`` ``(B, *D)``.

        Separate from ``__call__`` so a data pipeline can do the coupling ahead of the step.
        """
        x0 = self.source.sample_like(x1, generator)
        x0, _ = self.coupling(x0, x1, labels=labels, generator=generator)
        return x0

    def drop_labels(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Replace each label by ``null_label`` with probability ``cond_dropout``."""
        if self.cond_dropout == 0.0:
            return labels
        assert self.null_label is not None  # guaranteed by __init__
        drop = torch.rand(labels.shape, generator=generator, device=labels.device)
        return torch.where(drop < self.cond_dropout, self.null_label, labels)

    def __call__(
        self,
        model: VelocityField | nn.Module,
        x1: Tensor,
        *,
        x0: Tensor | None = None,
        cond: Tensor | None = None,
        t: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """Per-sample loss for a data batch ``x1`` ``(B, *D)``.

        Args:
            model: the network ``(x, t, cond) -> (B, *D)`` in this objective's parameterisation.
            x1: data ``(B, *D)``.
            x0: already-coupled sources ``(B, *D)``; drawn and coupled here when ``None``.
            cond: labels ``(B,)``; dropped to ``null_label`` with prob. ``cond_dropout``.
            t: times ``(B,)``; drawn from ``time_sampler`` when ``None``.
            generator: randomness for ``x0``, ``t`` and label dropout.

        Returns:
            ``LossOutput`` with ``loss`` of shape ``(B,)``, in ``x1``'s dtype promoted to at
            least float32 (half-precision outputs are compared in float32).

        Raises:
            TypeError: if ``x1`` is not a floating tensor.
            ValueError: if ``x1`` is not ``(B, *D)``, ``x0``/``cond``/``t`` do not match its
                batch, or the model output is not shaped like ``x1``.
        """
        check_batch(x1, "x1")
        if isinstance(cond, Tensor) and (cond.ndim == 0 or cond.shape[0] != x1.shape[0]):
            raise ValueError(
                f"cond must have batch size B = {x1.shape[0]} (labels (B,)), "
                f"got shape {tuple(cond.shape)}"
            )
        if x0 is None:
            x0 = self.pair(x1, labels=cond, generator=generator)
        check_same_batch(x0, x1)
        if t is None:
            t = self.time_sampler.sample_t(x1.shape[0], generator, device=x1.device, dtype=x1.dtype)
        if cond is not None:
            cond = self.drop_labels(cond, generator)
        sample = self.path.sample(x0, x1, t)
        out = model(sample.xt, t, cond)
        target = self.path.target(sample, self.prediction)
        if out.shape != target.shape:
            # A (B,) or (B, 1) output would broadcast silently against (B, *D).
            raise ValueError(
                f"model output must have the shape of x1 {tuple(target.shape)}, "
                f"got {tuple(out.shape)}"
            )
        # Compare in at least float32 (bf16/fp16 outputs) without downcasting float64.
        dtype = torch.promote_types(torch.promote_types(out.dtype, target.dtype), torch.float32)
        diff = out.to(dtype) - target.to(dtype)  # .to is a no-op (no copy) in the fp32 case
        loss = diff.square().reshape(diff.shape[0], -1).mean(1)
        w = loss_weight(self.weighting, t)
        if w is not None:
            loss = loss * w
        return LossOutput(loss=loss)
