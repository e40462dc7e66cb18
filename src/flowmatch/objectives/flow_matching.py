"""The conditional flow-matching objective (path x coupling x time sampler x prediction)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from flowmatch.couplings.base import Coupling, IndependentCoupling
from flowmatch.interfaces import PREDICTIONS, Cond, Prediction, VelocityField, cond_batch_size
from flowmatch.objectives.base import (
    OBJECTIVES,
    LossOutput,
    ObjectiveConfig,
    ObjectiveStep,
    TrainingParts,
    drop_condition,
)
from flowmatch.objectives.common import batch_labels, per_sample_mse
from flowmatch.objectives.weighting import WEIGHTINGS, loss_weight
from flowmatch.paths.affine import AffinePath, PathSample
from flowmatch.sources import GaussianSource, Source
from flowmatch.times.samplers import TimeSampler, UniformTime
from flowmatch.utils.checks import (
    check_batch,
    check_in_choices,
    check_same_batch,
    signature_error,
)
from flowmatch.utils.options import OptionError, option


@dataclass(frozen=True)
class FlowMatchingConfig(ObjectiveConfig):
    """Options of conditional flow matching."""

    weighting: Literal["none", "cosmap"] = option("none", doc="loss weight w(t)")
    loss_space: Literal["prediction", "velocity"] = option(
        "prediction",
        doc="compare in the network's parameterisation, or after converting it to a velocity",
    )


def flow_matching_args(config: FlowMatchingConfig, parts: TrainingParts) -> dict[str, Any]:
    """Keyword arguments of :class:`FlowMatchingObjective` (or a subclass) from a run's parts.

    The one place that maps ``[objective]`` and the run's parts onto the objective: a fixed
    source is required, and condition dropout applies only to a conditional model (its null
    label is the model's extra class).
    """
    check_fixed_source(parts.source, config.kind)
    dropout = config.cond_dropout if parts.cond.conditional else 0.0
    return {
        "path": parts.path,
        "coupling": parts.coupling,
        "time_sampler": parts.time_sampler,
        "source": parts.source,
        "prediction": parts.prediction,
        "weighting": config.weighting,
        "loss_space": config.loss_space,
        "cond_dropout": dropout,
        "null_label": parts.cond.num_classes if dropout > 0 else None,
    }


def _build_flow_matching(config: ObjectiveConfig, *, parts: TrainingParts) -> ObjectiveStep:
    assert isinstance(config, FlowMatchingConfig)  # guaranteed by Registry.build
    return ObjectiveStep(FlowMatchingObjective(**flow_matching_args(config, parts)))


def check_fixed_source(source: Source, kind: str) -> None:
    """Refuse a learned source (an ``nn.Module``): plain objectives would never train it.

    Raises:
        OptionError: naming ``source.kind`` and the objectives that train a source.
    """
    if isinstance(source, nn.Module):
        raise OptionError(
            "source.kind",
            f"is a learned source, which objective {kind!r} does not train; use "
            "objective.kind = 'csfm' or 'crossflow'",
        )


@OBJECTIVES.register("flow_matching", config=FlowMatchingConfig, build=_build_flow_matching)
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
        loss_space: ``"prediction"`` regresses the network's own target (``x1``, ``x0`` or the
            velocity); ``"velocity"`` converts an ``x1``/``x0``-prediction to a velocity
            (``AffinePath.convert``, endpoint rule included) and regresses the true endpoint
            converted the same way: the "x-prediction with a velocity loss" of Li & He (2025,
            JiT), equal to weighting the prediction loss by ``(D_t / sigma_t)^2`` (``x1``) or
            ``(D_t / alpha_t)^2`` (``x0``) with the denominator clamped to ``path.eps``
            (linear path, ``x1``: ``|x1_hat - x1|^2 (1 + t / max(1 - t, eps))^2``, i.e.
            ``1 / (1 - t)^2`` until ``1 - t < eps``, at most ``(1 + 1 / eps)^2 = 441`` for the
            default ``eps = 0.05``; a correct prediction scores 0 at every t).
        cond_dropout: probability of replacing a sample's condition by the null condition
            (classifier-free guidance training; Ho & Salimans 2022): labels become
            ``null_label``, values and context are marked dropped (``Condition.drop``).
        null_label: the label id of "no condition" (usually ``num_classes``); required when
            ``cond_dropout > 0`` and the condition has labels.

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
        loss_space: str = "prediction",
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
        self.loss_space = check_in_choices(loss_space, ("prediction", "velocity"), "loss_space")
        if not 0.0 <= cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1), got {cond_dropout}")
        self.cond_dropout = float(cond_dropout)
        self.null_label = null_label

    def __repr__(self) -> str:
        return (
            f"FlowMatchingObjective({self.path!r}, {self.coupling!r}, {self.time_sampler!r}, "
            f"{self.source!r}, prediction={self.prediction!r}, weighting={self.weighting!r}, "
            f"cond_dropout={self.cond_dropout})"
        )

    def pair(
        self,
        x1: Tensor,
        *,
        x0: Tensor | None = None,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Couple sources with ``x1`` ``(B, *D)``; returns the paired ``x0`` ``(B, *D)``.

        Args:
            x1: data ``(B, *D)``.
            x0: sources to couple; drawn from the source when ``None``.
            labels: labels of ``x1`` ``(B,)`` for label-aware couplings.
            generator: randomness of the source and of stochastic couplings.

        Separate from ``__call__`` so a data pipeline can do the coupling ahead of the step.
        """
        if x0 is None:
            x0 = self.source.sample_like(x1, generator)
        x0, _ = self.coupling(x0, x1, labels=labels, generator=generator)
        return x0

    def drop_labels(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Replace each label by ``null_label`` with probability ``cond_dropout``."""
        out = drop_condition(labels, self.cond_dropout, self.null_label, generator)
        assert isinstance(out, Tensor)
        return out

    def __call__(
        self,
        model: VelocityField | nn.Module,
        x1: Tensor,
        *,
        x0: Tensor | None = None,
        x0_paired: bool = False,
        cond: Cond = None,
        t: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """Per-sample loss for a data batch ``x1`` ``(B, *D)``, with its inputs checked.

        The checks run once per call at this boundary: shapes, dtypes and devices (free), and
        the finiteness of ``x1``/``x0`` and the range of ``t`` in one fused reduction read
        with a single host sync (a few microseconds for a 256 x 2 batch on CPU; on a GPU it
        waits for the queued work once). The trainer skips them: it checks its data set
        once and calls :meth:`compute`, the same loss without the checks.

        Args:
            model: the network ``(x, t, cond) -> (B, *D)`` in this objective's parameterisation.
            x1: data ``(B, *D)``, finite.
            x0: sources ``(B, *D)``; drawn from the source when ``None``. The objective's
                coupling is applied to them (a given ``x0`` is re-paired like a drawn one)
                unless ``x0_paired``.
            x0_paired: ``x0`` is already coupled with ``x1`` (e.g. by the trainer's pairing
                pipeline): skip the coupling. Requires ``x0``.
            cond: labels ``(B,)`` or a ``Condition``; dropped to the null condition with
                probability ``cond_dropout``.
            t: times ``(B,)``, floating, in ``[0, 1]``; drawn from ``time_sampler`` when
                ``None``.
            generator: randomness for ``x0``, ``t`` and label dropout.

        Returns:
            ``LossOutput`` with ``loss`` of shape ``(B,)``, in ``x1``'s dtype promoted to at
            least float32 (half-precision outputs are compared in float32).

        Raises:
            TypeError: ``x1``, ``x0`` or ``t`` is not a floating tensor (integer ``t`` is
                refused: times are fractions in ``[0, 1]``), or the model does not take
                ``(x, t, cond)``.
            ValueError: ``x1`` is not ``(B, *D)``; ``x0``/``cond``/``t`` do not match its
                batch; ``t`` lies outside ``[0, 1]`` or is NaN; ``x1``/``x0`` hold NaN/inf;
                or the model output is not shaped like ``x1``.
        """
        check_batch(x1, "x1")
        if x0 is not None:
            check_batch(x0, "x0")
            check_same_batch(x0, x1)
        if t is not None:
            _check_t(t, x1)
        labels = cond if isinstance(cond, Tensor) else getattr(cond, "labels", None)
        if isinstance(labels, Tensor) and (labels.is_floating_point() or labels.is_complex()):
            raise TypeError(
                f"cond labels must be an integer tensor (class ids), got {labels.dtype}"
            )
        _check_finite_inputs(x1, x0, t)
        return self.compute(
            model, x1, x0=x0, x0_paired=x0_paired, cond=cond, t=t, generator=generator
        )

    def compute(
        self,
        model: VelocityField | nn.Module,
        x1: Tensor,
        *,
        x0: Tensor | None = None,
        x0_paired: bool = False,
        cond: Cond = None,
        t: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """The loss of :meth:`__call__` without the value checks (the trainer's hot path).

        Shapes are still checked (that costs no device work); finiteness and the range of
        ``t`` are trusted.
        """
        if cond is not None and cond_batch_size(cond) != x1.shape[0]:
            got = (
                f"shape {tuple(cond.shape)}" if isinstance(cond, Tensor) else cond_batch_size(cond)
            )
            raise ValueError(
                f"cond must have batch size B = {x1.shape[0]} (labels (B,)), got {got}"
            )
        x0, t, cond, sample = self.draw(
            x1, x0=x0, x0_paired=x0_paired, cond=cond, t=t, generator=generator
        )
        try:
            out = model(sample.xt, t, cond)
        except TypeError as err:
            # A correct call costs nothing; only a failed one inspects the signature.
            wrong = signature_error(model, ("x", "t", "cond"), "model")
            if wrong is not None:
                raise wrong from err
            raise
        target = self.path.target(sample, self.prediction)
        if (
            self.loss_space == "velocity"
            and self.prediction != "velocity"
            and isinstance(out, Tensor)
            and out.shape == target.shape
        ):
            # Both sides through the same conversion (JiT): near t = 1 the endpoint rule clamps
            # the denominator, and a correct prediction must still score 0 there.
            out = self.path.convert(out, src=self.prediction, dst="velocity", xt=sample.xt, t=t)
            target = self.path.convert(
                target, src=self.prediction, dst="velocity", xt=sample.xt, t=t
            )
        if not isinstance(out, Tensor) or out.shape != target.shape:
            # A (B,) or (B, 1) output would broadcast silently against (B, *D).
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"model output must have the shape of x1 {tuple(target.shape)}, got {shape}"
            )
        return LossOutput(loss=self.weighted(per_sample_mse(out, target), t))

    def draw(
        self,
        x1: Tensor,
        *,
        x0: Tensor | None,
        x0_paired: bool,
        cond: Cond,
        t: Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor, Cond, PathSample]:
        """The random parts of one loss evaluation, in a fixed order of draws.

        ``x0`` paired by the coupling (unless ``x0_paired``), ``t`` from the time sampler
        (unless given), the condition after dropout, and the path sample ``x_t`` between them.
        Objectives built on flow matching (VeCoR, PAFM, W-CFM) draw through it, so they see the
        same batches as plain flow matching with the same generator.

        Returns:
            ``(x0 (B, *D), t (B,), cond, sample)``.

        Raises:
            ValueError: ``x0_paired`` without ``x0``.
        """
        if x0_paired and x0 is None:
            raise ValueError("x0_paired=True needs the paired sources x0")
        if not x0_paired:
            x0 = self.pair(x1, x0=x0, labels=batch_labels(cond), generator=generator)
        assert x0 is not None
        check_same_batch(x0, x1)
        if t is None:
            t = self.time_sampler.sample_t(x1.shape[0], generator, device=x1.device, dtype=x1.dtype)
        cond = drop_condition(cond, self.cond_dropout, self.null_label, generator)
        return x0, t, cond, self.path.sample(x0, x1, t)

    def weighted(self, loss: Tensor, t: Tensor) -> Tensor:
        """Per-sample ``loss`` ``(B,)`` times the time weighting ``w(t)`` (none: unchanged)."""
        w = loss_weight(self.weighting, t)
        return loss if w is None else loss * w


def _check_t(t: Any, x1: Tensor) -> None:
    """``t`` is a floating ``(B,)`` tensor on ``x1``'s device (values: :func:`_check_finite_inputs`)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a torch.Tensor of shape (B,), got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(
            f"t must be a floating-point tensor of times in [0, 1], got dtype {t.dtype} "
            "(integer time steps are not times; divide by the number of steps)"
        )
    if t.shape != (x1.shape[0],):
        raise ValueError(f"t must have shape (B,) = ({x1.shape[0]},), got {tuple(t.shape)}")
    if t.device != x1.device:
        raise ValueError(f"t must be on x1's device {x1.device}, got {t.device}")
    if t.dtype != x1.dtype:  # x_t would silently take the wider dtype
        raise TypeError(f"t must have x1's dtype {x1.dtype}, got {t.dtype}")


def _check_finite_inputs(x1: Tensor, x0: Tensor | None, t: Tensor | None) -> None:
    """NaN/inf in ``x1``/``x0`` and ``t`` outside ``[0, 1]``: one fused reduction, one sync."""
    flags = [torch.isfinite(x1).all()]
    if x0 is not None:
        flags.append(torch.isfinite(x0).all())
    if t is not None:
        flags.append(((t >= 0) & (t <= 1)).all())  # NaN fails both comparisons
    ok = torch.stack(flags).tolist()
    if not ok[0]:
        bad = int((~torch.isfinite(x1)).sum())
        raise ValueError(f"x1 has {bad} non-finite value(s) (NaN or inf); clean the data batch")
    if x0 is not None and not ok[1]:
        bad = int((~torch.isfinite(x0)).sum())
        raise ValueError(f"x0 has {bad} non-finite value(s) (NaN or inf)")
    if t is not None and not ok[-1]:
        nan = int(torch.isnan(t).sum())
        if nan:
            raise ValueError(f"t has {nan} NaN value(s); times must lie in [0, 1]")
        raise ValueError(
            f"t must lie in [0, 1], got values in [{float(t.min()):.6g}, {float(t.max()):.6g}]"
        )
