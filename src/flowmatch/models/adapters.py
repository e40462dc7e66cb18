"""Boundary adapters: other parameterisations and time conventions -> our ``VelocityField``.

Inside flowmatch every network is a velocity field ``v(x, t, cond)`` with ``t = 0`` the
source (noise) and ``t = 1`` the data. This module is the one place that converts from
anything else:

* networks that predict ``x1`` (data, "x-prediction", Li & He 2025), ``x0`` (noise,
  epsilon-prediction) or the score: ``PredictionAdapter`` via ``AffinePath.convert``;
* networks written in the noise-level convention of Stable Diffusion 3 / diffusers
  ``FlowMatchEulerDiscreteScheduler`` (Esser et al. 2024, "Scaling Rectified Flow
  Transformers"): time ``s = 1 - t`` runs from 1 (noise) to 0 (data),
  ``z_s = (1 - s) x + s eps``, the network regresses ``eps - x`` (``= dz/ds = -dx/dt``) and
  receives the timestep ``1000 s``: ``NoiseLevelConventionAdapter`` and the small conversion
  functions below, each named for its direction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import Tensor, nn

from flowmatch.interfaces import PREDICTIONS, Cond, Prediction
from flowmatch.paths.affine import AffinePath
from flowmatch.utils.checks import check_in_choices, check_positive_float

_T = TypeVar("_T", Tensor, float)

#: ``num_train_timesteps`` of diffusers' flow-matching schedulers (timestep = 1000 * sigma).
DIFFUSERS_NUM_TRAIN_TIMESTEPS = 1000.0


def t_to_noise_level(t: _T) -> _T:
    """Our time ``t`` (0 = noise, 1 = data) -> the SD3/diffusers noise level ``s = 1 - t``.

    ``s`` is what diffusers calls ``sigma`` in ``FlowMatchEulerDiscreteScheduler``.

    Args:
        t: times, a float or a tensor of any shape, in ``[0, 1]``.

    Returns:
        ``1 - t``, same type and shape.
    """
    return 1 - t


def noise_level_to_t(s: _T) -> _T:
    """The SD3/diffusers noise level ``s`` (1 = noise, 0 = data) -> our time ``t = 1 - s``.

    Args:
        s: noise levels, a float or a tensor of any shape, in ``[0, 1]``.

    Returns:
        ``1 - s``, same type and shape.
    """
    return 1 - s


def t_to_diffusers_timestep(
    t: _T, num_train_timesteps: float = DIFFUSERS_NUM_TRAIN_TIMESTEPS
) -> _T:
    """Our time ``t`` -> the diffusers flow-matching ``timestep = num_train_timesteps (1 - t)``.

    ``t = 0`` (pure noise) maps to ``num_train_timesteps``, ``t = 1`` (data) to 0.

    Args:
        t: times, a float or a tensor of any shape, in ``[0, 1]``.
        num_train_timesteps: the scheduler's ``num_train_timesteps`` (diffusers: 1000), ``> 0``.

    Returns:
        The timesteps, same type and shape as ``t`` (floats: not rounded to integers).

    Raises:
        ValueError: if ``num_train_timesteps`` is not a finite number ``> 0``.
    """
    scale = check_positive_float(num_train_timesteps, "num_train_timesteps")
    return scale * t_to_noise_level(t)


def diffusers_timestep_to_t(
    timestep: _T, num_train_timesteps: float = DIFFUSERS_NUM_TRAIN_TIMESTEPS
) -> _T:
    """A diffusers flow-matching ``timestep`` -> our time ``t = 1 - timestep / N``.

    ``N`` is ``num_train_timesteps``; this inverts ``t_to_diffusers_timestep``.

    Args:
        timestep: diffusers timesteps in ``[0, num_train_timesteps]``, float or tensor.
        num_train_timesteps: the scheduler's ``num_train_timesteps`` (diffusers: 1000), ``> 0``.

    Returns:
        Times ``t`` in ``[0, 1]``, same type and shape as ``timestep``.

    Raises:
        ValueError: if ``num_train_timesteps`` is not a finite number ``> 0``.
    """
    scale = check_positive_float(num_train_timesteps, "num_train_timesteps")
    return noise_level_to_t(timestep / scale)


def velocity_from_noise_level_convention(v_sd3: Tensor) -> Tensor:
    """SD3/diffusers model output ``v_sd3 = eps - x = dz/ds`` -> our velocity ``dx/dt = -v_sd3``.

    Because ``s = 1 - t``, ``dx/dt = (dz/ds)(ds/dt) = -dz/ds``. On the linear path
    ``x_t = t x1 + (1 - t) x0`` this is ``x1 - x0`` with ``x0 = eps``, ``x1 = x``.

    Args:
        v_sd3: the network output ``(B, *D)``.

    Returns:
        Our velocity ``(B, *D)``.
    """
    return -v_sd3


def velocity_to_noise_level_convention(v: Tensor) -> Tensor:
    """Our velocity ``dx/dt`` -> the SD3/diffusers output ``v_sd3 = dz/ds = -v``.

    Args:
        v: our velocity ``(B, *D)``.

    Returns:
        The SD3-convention velocity ``(B, *D)``.
    """
    return -v


class PredictionAdapter(nn.Module):
    r"""Turn a network predicting ``x1``, ``x0``, the score or the velocity into a velocity field.

    ``v(x, t, cond) = path.convert(net(x, t, cond), src=prediction, dst="velocity", xt=x, t=t)``;
    e.g. on the linear path an ``x1``-prediction gives ``v = (x1_hat - x) / (1 - t)`` (the
    x-prediction of Li & He 2025, "Back to Basics", with its v-space sampler). The adapter
    has no parameters of its own: ``state_dict`` is the wrapped network's under ``net.``.

    Endpoint rule (inherited from ``AffinePath``): a conversion that divides by ``sigma_t``
    (``x1``-prediction, at ``t = 1``) or ``alpha_t`` (``x0``/score prediction, at ``t = 0``)
    clamps that denominator to ``path.eps``, so the velocity stays finite but is biased where
    ``sigma_t < eps`` or ``alpha_t < eps``. Euler and midpoint never evaluate the field at
    the last grid time; Heun and RK4 evaluate their last stage at ``t = 1`` and get the
    clamped value there (JiT/RiT end with an Euler step and use ``eps = 0.05``, i.e.
    ``AffinePath(eps=0.05)``). On the linear path this equals JiT's
    ``(x1_hat - x) / max(1 - t, eps)`` for ``t <= 1 - eps``; inside the clamp zone JiT clamps
    that whole quotient while here only ``x0_hat = (x - t x1_hat) / max(1 - t, eps)`` is.
    The ``"score"`` conversion assumes a standard Gaussian source ``x0 ~ N(0, I)``.

    Args:
        net: any callable ``(x (B, *D), t (B,), cond) -> (B, *D)`` returning a ``prediction``.
        path: the affine path the network was trained on.
        prediction: what ``net`` predicts: ``"x1"``, ``"x0"``, ``"score"`` or ``"velocity"``.

    Raises:
        TypeError: if ``path`` is not an ``AffinePath`` or ``net`` is not callable.
        ValueError: if ``prediction`` is not one of the four names.

    Example:
        >>> import torch
        >>> from flowmatch.paths import AffinePath
        >>> x1 = torch.ones(3, 2)
        >>> oracle = lambda x, t, cond=None: x1  # predicts the data point exactly
        >>> field = PredictionAdapter(oracle, AffinePath(), "x1")
        >>> x0 = torch.zeros(3, 2)
        >>> t = torch.full((3,), 0.5)
        >>> field(0.5 * x1 + 0.5 * x0, t)[0].tolist()  # = x1 - x0 on the linear path
        [1.0, 1.0]
    """

    def __init__(
        self,
        net: Callable[[Tensor, Tensor, Cond], Tensor],
        path: AffinePath,
        prediction: Prediction,
    ) -> None:
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be callable (x, t, cond) -> Tensor, got {net!r}")
        if not isinstance(path, AffinePath):
            raise TypeError(f"path must be an AffinePath, got {type(path).__name__}")
        check_in_choices(prediction, PREDICTIONS, "prediction")
        self.prediction: Prediction = prediction
        self.net = net
        self.path = path

    def forward(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """Return the velocity ``(B, *D)`` at ``x`` ``(B, *D)``, ``t`` ``(B,)``."""
        value = self.net(x, t, cond)
        return self.path.convert(value, src=self.prediction, dst="velocity", xt=x, t=t)

    def extra_repr(self) -> str:
        """Show the parameterisation and the path."""
        return f"prediction={self.prediction!r}, path={self.path!r}"


class NoiseLevelConventionAdapter(nn.Module):
    r"""Wrap a network written in the SD3/diffusers noise-level convention as our velocity field.

    ``v(x, t, cond) = -net(x, time_scale * (1 - t), cond)``: the wrapped network takes the
    noise level ``s = 1 - t`` scaled by ``time_scale`` (diffusers passes ``timestep = 1000 s``
    to its SD3 transformer; use ``time_scale=1`` for nets that take ``s`` itself) and returns
    ``v_sd3 = eps - x = dz/ds`` (Esser et al. 2024). One Euler step
    ``z_{s'} = z_s + (s' - s) v_sd3`` in that convention is the step
    ``x_{t'} = x_t + (t' - t) v`` here, so any of our solvers reproduces theirs.

    Networks with other call signatures (diffusers' ``hidden_states=``, ``timestep=``,
    ``encoder_hidden_states=`` ...) need a small lambda that maps ``(x, timestep, cond)`` onto
    them; the adapter never forwards keyword arguments it does not know.

    Args:
        net: callable ``(x (B, *D), timestep (B,), cond) -> v_sd3 (B, *D)``.
        time_scale: factor applied to the noise level before calling ``net``, ``> 0``
            (default 1000, diffusers' ``num_train_timesteps``).

    Raises:
        TypeError: if ``net`` is not callable.
        ValueError: if ``time_scale`` is not a finite number ``> 0``.

    Example:
        >>> import torch
        >>> sd3_net = lambda z, timestep, cond=None: torch.ones_like(z)  # v_sd3 = eps - x
        >>> field = NoiseLevelConventionAdapter(sd3_net)
        >>> field(torch.zeros(2, 3), torch.rand(2))[0].tolist()
        [-1.0, -1.0, -1.0]
    """

    def __init__(
        self,
        net: Callable[[Tensor, Tensor, Cond], Tensor],
        *,
        time_scale: float = DIFFUSERS_NUM_TRAIN_TIMESTEPS,
    ) -> None:
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be callable (x, timestep, cond) -> Tensor, got {net!r}")
        self.time_scale = check_positive_float(time_scale, "time_scale")
        self.net = net

    def forward(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """Return our velocity ``(B, *D)`` at ``x`` ``(B, *D)``, ``t`` ``(B,)`` in ``[0, 1]``."""
        timestep = t_to_diffusers_timestep(t, self.time_scale)
        return velocity_from_noise_level_convention(self.net(x, timestep, cond))

    def extra_repr(self) -> str:
        """Show the time scale."""
        return f"time_scale={self.time_scale}"
