"""Rewards / verifiers for inference-time search and reward steering.

A reward scores data-space samples: ``reward(x (B, *D), cond) -> (B,)``, higher is better.
Built-in toy rewards are registered in :data:`REWARDS`; a user reward joins by registration
in a plugin module named in the run's ``plugins`` (``@REWARDS.register("mine")``), never by
importing an arbitrary ``module:function`` string.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from flowmatch.interfaces import Cond
from flowmatch.registry import ComponentConfig, Registry
from flowmatch.utils.options import OptionError, option

__all__ = [
    "REWARDS",
    "DigitReward",
    "DistanceReward",
    "RegionReward",
    "Reward",
    "RewardConfig",
]


@dataclass(frozen=True)
class RewardConfig(ComponentConfig):
    """A reward (``--reward NAME``): ``kind`` names it, the rest are its options."""


class Reward(ABC):
    """``reward(x, cond) -> (B,)`` on data-space samples ``x`` ``(B, *D)``; higher is better.

    Attributes:
        differentiable: whether ``torch.autograd`` gives useful gradients (steering).
    """

    differentiable: bool = True

    @abstractmethod
    def __call__(self, x: Tensor, cond: Cond = None) -> Tensor:
        """Rewards ``(B,)``."""


#: Rewards by name (plugins register more).
REWARDS: Registry[Reward, RewardConfig] = Registry("reward", RewardConfig, default="distance")


def _point(values: tuple[float, ...], x: Tensor, name: str) -> Tensor:
    flat = x.reshape(len(x), -1)
    if len(values) != flat.shape[1]:
        raise ValueError(
            f"{name} has {len(values)} coordinates but samples have {flat.shape[1]} features"
        )
    return flat.new_tensor(values)


@dataclass(frozen=True)
class DistanceConfig(RewardConfig):
    """Options of the distance reward."""

    point: tuple[float, ...] = option((2.0, 2.0), doc="target point (one value per feature)")


@REWARDS.register("distance", config=DistanceConfig)
class DistanceReward(Reward):
    """``r(x) = -||x - p||^2``: closeness to a point (a differentiable toy reward).

    Its reward-tilted target ``p(x) exp(r(x) / beta)`` concentrates around ``p`` as ``beta``
    shrinks (ALGORITHMS.md-style mode preference on 2-D data).
    """

    def __init__(self, point: tuple[float, ...] = (2.0, 2.0)) -> None:
        self.point = tuple(float(v) for v in point)

    def __repr__(self) -> str:
        return f"DistanceReward(point={self.point})"

    def __call__(self, x: Tensor, cond: Cond = None) -> Tensor:
        """``-||x - p||^2`` per sample."""
        flat = x.reshape(len(x), -1)
        return -(flat - _point(self.point, x, "point")).square().sum(1)


@dataclass(frozen=True)
class RegionConfig(RewardConfig):
    """Options of the region reward."""

    center: tuple[float, ...] = option((1.0, 1.0), doc="centre of the ball")
    radius: float = option(1.0, gt=0, doc="radius of the ball")


@REWARDS.register("region", config=RegionConfig)
class RegionReward(Reward):
    """``r(x) = 1[||x - c|| <= radius]``: the mass of a ball (a black-box, non-differentiable reward)."""

    differentiable = False

    def __init__(self, center: tuple[float, ...] = (1.0, 1.0), radius: float = 1.0) -> None:
        self.center, self.radius = tuple(float(v) for v in center), float(radius)

    def __repr__(self) -> str:
        return f"RegionReward(center={self.center}, radius={self.radius})"

    def __call__(self, x: Tensor, cond: Cond = None) -> Tensor:
        """1 inside the ball, 0 outside."""
        flat = x.reshape(len(x), -1)
        d2 = (flat - _point(self.center, x, "center")).square().sum(1)
        return (d2 <= self.radius**2).to(flat.dtype)


@dataclass(frozen=True)
class DigitConfig(RewardConfig):
    """Options of the digit-class reward."""

    target: int = option(3, ge=0, le=9, doc="the digit class rewarded")


@REWARDS.register("digit", config=DigitConfig)
class DigitReward(Reward):
    """``log p(target | x)`` of flowmatch's 8x8 digits classifier (differentiable).

    The classifier is trained once and cached (``flowmatch.metrics.digits_features``); inputs
    are digits in data scaling ``[-1, 1]``, ``(B, 1, 8, 8)`` or ``(B, 64)``.
    """

    def __init__(self, target: int = 3) -> None:
        if not 0 <= target <= 9:
            raise OptionError("target", f"must be a digit class 0..9, got {target}")
        self.target = int(target)
        self._net: torch.nn.Module | None = None

    def __repr__(self) -> str:
        return f"DigitReward(target={self.target})"

    def __call__(self, x: Tensor, cond: Cond = None) -> Tensor:
        """``log_softmax(classifier(x))[:, target]`` in ``x``'s dtype."""
        if self._net is None:
            from flowmatch.metrics.digits_features import load_digits_classifier

            self._net = load_digits_classifier()
        logits = self._net(x)
        return torch.log_softmax(logits, dim=1)[:, self.target].to(x.dtype)
