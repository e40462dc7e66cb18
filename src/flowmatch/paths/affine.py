"""Affine probability paths and conversions between prediction types.

``x_t = alpha_t x1 + sigma_t x0``, conditional velocity ``v_t = d_alpha_t x1 + d_sigma_t x0``
(Lipman et al. 2023, eq. 10-15; Albergo & Vanden-Eijnden 2023). With a standard Gaussian
source the score is ``grad log p_t(x) = -E[x0 | x_t = x] / sigma_t``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from flowmatch.interfaces import PREDICTIONS, Prediction
from flowmatch.paths.schedules import LinearSchedule, Schedule, ScheduleOutput
from flowmatch.utils.checks import (
    check_in_choices,
    check_positive_float,
    check_same_batch,
    check_tensor,
)
from flowmatch.utils.tensor import expand_like


@dataclass(frozen=True)
class PathSample:
    """A batch of points on the path.

    Attributes:
        x0: source samples ``(B, *D)``.
        x1: data samples ``(B, *D)``.
        t: times ``(B,)``.
        xt: ``alpha_t x1 + sigma_t x0``, ``(B, *D)``.
        v_target: conditional velocity ``d_alpha_t x1 + d_sigma_t x0``, ``(B, *D)``.
    """

    x0: Tensor
    x1: Tensor
    t: Tensor
    xt: Tensor
    v_target: Tensor


class AffinePath:
    """The path ``x_t = alpha_t x1 + sigma_t x0`` for a ``Schedule``.

    Endpoint rule for conversions: a conversion that divides by ``alpha_t``, ``sigma_t`` or
    ``D_t = d_alpha_t sigma_t - d_sigma_t alpha_t`` (e.g. an ``x1``-prediction turned into a
    velocity divides by ``sigma_t``, which is 0 at ``t = 1``; a velocity turned into ``x1``
    divides by ``D_t``, which is 0 at ``t = 0`` for ``PolynomialSchedule(n > 1)``) clamps that
    denominator to at least ``eps`` (default ``1e-3``), so results stay finite at ``t = 0`` and
    ``t = 1``. The clamp only changes values where the denominator is below ``eps``; keep
    evaluation grids off the singular endpoint when that matters (e.g. use a final Euler step).

    Args:
        schedule: the ``(alpha, sigma)`` schedule; default ``LinearSchedule()``.
        eps: the minimum denominator of conversions, ``> 0``.

    Example:
        >>> import torch
        >>> from flowmatch.paths import AffinePath, LinearSchedule
        >>> path = AffinePath(LinearSchedule())
        >>> x0, x1 = torch.zeros(4, 2), torch.ones(4, 2)
        >>> s = path.sample(x0, x1, torch.full((4,), 0.25))
        >>> s.xt[0].tolist(), s.v_target[0].tolist()
        ([0.25, 0.25], [1.0, 1.0])
    """

    def __init__(self, schedule: Schedule | None = None, *, eps: float = 1e-3) -> None:
        self.schedule = schedule if schedule is not None else LinearSchedule()
        if not isinstance(self.schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        self.eps = check_positive_float(eps, "eps")

    def __repr__(self) -> str:
        return f"AffinePath({self.schedule!r}, eps={self.eps})"

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor) -> PathSample:
        """Points ``x_t`` and target velocities for paired ``x0, x1`` ``(B, *D)`` and ``t`` ``(B,)``.

        ``x_t = alpha_t x1 + sigma_t x0``, ``v_target = d_alpha_t x1 + d_sigma_t x0``
        (Lipman et al. 2023, eq. 20-21 for the linear schedule).

        Raises:
            TypeError: if an argument is not a tensor.
            ValueError: if ``x0`` and ``x1`` differ in shape or ``t`` is not ``(B,)``.
        """
        check_tensor(x0, "x0")
        check_tensor(x1, "x1")
        check_same_batch(x0, x1)
        self._check_time(t, x1)
        xt, v = self.schedule.interpolate(x0, x1, expand_like(t, x1))
        return PathSample(x0=x0, x1=x1, t=t, xt=xt, v_target=v)

    @staticmethod
    def _check_time(t: Tensor, x: Tensor) -> None:
        # Shape-only checks (no host sync): a (1,) or scalar t would silently broadcast.
        check_tensor(t, "t")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")

    def _check_point(self, value: Tensor, name: str, xt: Tensor, t: Tensor) -> None:
        check_tensor(value, name)
        check_tensor(xt, "xt")
        if value.shape != xt.shape:
            raise ValueError(
                f"{name} must have the shape of xt {tuple(xt.shape)}, got {tuple(value.shape)}"
            )
        self._check_time(t, xt)

    def target(self, sample: PathSample, prediction: Prediction) -> Tensor:
        """Regression target of a network predicting ``prediction`` for ``sample``.

        ``"velocity"``: ``v_target``; ``"x1"``: ``x1``; ``"x0"``: ``x0``; ``"score"``:
        ``-x0 / sigma_t`` (standard Gaussian source; ``sigma_t`` clamped to ``eps``).

        Raises:
            ValueError: if ``prediction`` is unknown.
        """
        if prediction == "velocity":
            return sample.v_target
        if prediction == "x1":
            return sample.x1
        if prediction == "x0":
            return sample.x0
        if prediction == "score":
            c = self.schedule(expand_like(sample.t, sample.x1))
            return -sample.x0 / c.sigma.clamp_min(self.eps)
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {list(PREDICTIONS)}")

    def to_endpoints(
        self, value: Tensor, *, src: Prediction, xt: Tensor, t: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Recover ``(x0_hat, x1_hat)`` from a prediction of type ``src`` at ``(xt, t)``.

        Uses ``D_t = d_alpha_t sigma_t - d_sigma_t alpha_t`` (> 0 for all built-in schedules):
        ``x1 = (sigma u - d_sigma x) / D``, ``x0 = (d_alpha x - alpha u) / D`` from a velocity;
        ``x1 = (x - sigma x0) / alpha`` from ``x0``; ``x0 = (x - alpha x1) / sigma`` from ``x1``;
        ``x0 = -sigma s`` from a score ``s``. Denominators follow the endpoint rule (``eps``).

        Args:
            value: the prediction ``(B, *D)``.
            src: its type, one of ``"velocity", "x1", "x0", "score"``.
            xt: the points ``(B, *D)``.
            t: times ``(B,)``.

        Returns:
            ``(x0_hat, x1_hat)``, each ``(B, *D)``.

        Raises:
            TypeError: if an argument is not a tensor.
            ValueError: if ``src`` is unknown or the shapes disagree.
        """
        check_in_choices(src, PREDICTIONS, "src prediction")
        self._check_point(value, "value", xt, t)
        return self._to_endpoints(value, src, xt, self.schedule(expand_like(t, xt)))

    def _to_endpoints(
        self, value: Tensor, src: str, xt: Tensor, c: ScheduleOutput
    ) -> tuple[Tensor, Tensor]:
        """Unchecked ``to_endpoints`` with the schedule ``c`` already evaluated at ``t``."""
        alpha, sigma = c.alpha.clamp_min(self.eps), c.sigma.clamp_min(self.eps)
        if src == "velocity":
            d = (c.d_alpha * c.sigma - c.d_sigma * c.alpha).clamp_min(self.eps)
            return (c.d_alpha * xt - c.alpha * value) / d, (c.sigma * value - c.d_sigma * xt) / d
        if src == "score":
            value = -c.sigma * value  # score = -x0 / sigma for a N(0, I) source
            src = "x0"
        if src == "x0":
            return value, (xt - c.sigma * value) / alpha
        return (xt - c.alpha * value) / sigma, value  # src == "x1"

    def from_endpoints(
        self, x0: Tensor, x1: Tensor, *, dst: Prediction, xt: Tensor, t: Tensor
    ) -> Tensor:
        """Express the endpoint estimates ``(x0, x1)`` as a prediction of type ``dst``.

        ``velocity = d_alpha_t x1 + d_sigma_t x0``; ``score = -x0 / sigma_t`` (``sigma_t``
        clamped to ``eps``).

        Args:
            x0: estimate of the source endpoint ``(B, *D)``.
            x1: estimate of the data endpoint ``(B, *D)``.
            dst: the wanted type.
            xt: the points ``(B, *D)``.
            t: times ``(B,)``.

        Returns:
            The prediction of type ``dst``, ``(B, *D)``.

        Raises:
            TypeError: if an argument is not a tensor.
            ValueError: if ``dst`` is unknown or the shapes disagree.
        """
        check_in_choices(dst, PREDICTIONS, "dst prediction")
        self._check_point(x0, "x0", xt, t)
        self._check_point(x1, "x1", xt, t)
        if dst in ("x0", "x1"):  # no schedule needed
            return x0 if dst == "x0" else x1
        return self._from_endpoints(x0, x1, dst, self.schedule(expand_like(t, xt)))

    def _from_endpoints(self, x0: Tensor, x1: Tensor, dst: str, c: ScheduleOutput) -> Tensor:
        """Unchecked ``from_endpoints`` with the schedule ``c`` already evaluated at ``t``."""
        if dst == "x0":
            return x0
        if dst == "x1":
            return x1
        if dst == "score":
            return -x0 / c.sigma.clamp_min(self.eps)
        return c.d_alpha * x1 + c.d_sigma * x0

    def convert(
        self, value: Tensor, *, src: Prediction, dst: Prediction, xt: Tensor, t: Tensor
    ) -> Tensor:
        """Convert a prediction ``value`` ``(B, *D)`` of type ``src`` into type ``dst``.

        Args:
            value: the prediction at ``(xt, t)``, ``(B, *D)``.
            src: its type, one of ``"velocity", "x1", "x0", "score"``.
            dst: the wanted type.
            xt: the current points ``(B, *D)``.
            t: times ``(B,)``.

        Returns:
            The prediction of type ``dst``, ``(B, *D)``. Denominators follow the class's
            endpoint rule (clamped to ``eps``).

        Raises:
            TypeError: if an argument is not a tensor.
            ValueError: if ``src``/``dst`` is unknown or the shapes disagree.
        """
        check_in_choices(src, PREDICTIONS, "src prediction")
        check_in_choices(dst, PREDICTIONS, "dst prediction")
        self._check_point(value, "value", xt, t)
        if src == dst:
            return value
        # One schedule evaluation and one set of checks per call: this runs once per NFE when
        # a non-velocity network is sampled (models.adapters).
        c = self.schedule(expand_like(t, xt))
        x0, x1 = self._to_endpoints(value, src, xt, c)
        return self._from_endpoints(x0, x1, dst, c)
