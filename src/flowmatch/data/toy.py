"""Built-in 2-D toy distributions: checkerboard, 8 Gaussians, two moons, circles, spirals.

Besides, :data:`CONDITIONAL_TOYS` are toys with a *continuous* condition value per point
(:func:`sample_conditional_toy`), e.g. the 8 Gaussians with the polar angle of each point.

Every distribution is a finite mixture, and each sample carries the index of the component it
was drawn from; that index is the class label (``return_labels=True``), so the same generators
serve class-conditional experiments. All samplers are vectorised torch code driven by an
explicit ``torch.Generator`` (no global RNG, no NumPy/sklearn randomness) and produce points of
``O(1)``-to-``O(4)`` scale on roughly ``[-4, 4]^2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, overload

import torch
from torch import Tensor

from flowmatch.utils.checks import check_in_choices, check_positive_int

__all__ = [
    "CONDITIONAL_TOYS",
    "TOY_DATASETS",
    "TOY_NUM_CLASSES",
    "polar_angle",
    "sample_conditional_toy",
    "sample_toy",
]

ToyName = Literal["checkerboard", "8gaussians", "moons", "circles", "spirals"]

#: Noise of the two-moons data in the unit-moon frame (sklearn's ``make_moons`` units).
MOONS_NOISE = 0.05
#: Radius, standard deviation of the 8-Gaussians mixture.
GAUSSIANS_RADIUS, GAUSSIANS_STD = 4.0, 0.5
#: Outer and inner radius and noise of the concentric circles.
CIRCLES_RADII, CIRCLES_NOISE = (4.0, 2.0), 0.2
#: Largest radius, total winding angle and noise of the two spirals.
SPIRALS_RADIUS, SPIRALS_TURN, SPIRALS_NOISE = 4.0, 3.0 * math.pi, 0.1

# (x, y) shift and scale mapping the unit two-moons frame (x in [-1, 2], y in [-0.5, 1])
# onto x in [-4, 4], y in [-2, 2].
_MOONS_CENTER, _MOONS_SCALE = (0.5, 0.25), 8.0 / 3.0

_Sampler = Callable[[int, torch.Generator, torch.dtype], tuple[Tensor, Tensor]]


def _uniform(n: int, g: torch.Generator, dtype: torch.dtype) -> Tensor:
    return torch.rand(n, generator=g, device=g.device, dtype=dtype)


def _normal(shape: tuple[int, ...], g: torch.Generator, dtype: torch.dtype) -> Tensor:
    return torch.randn(shape, generator=g, device=g.device, dtype=dtype)


def _component(n: int, k: int, g: torch.Generator) -> Tensor:
    return torch.randint(0, k, (n,), generator=g, device=g.device)


def _checkerboard(n: int, g: torch.Generator, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    # Filled cell k = 0..7 is (i, j) = (k // 2, 2 * (k % 2) + i % 2): i + j is always even.
    k = _component(n, 8, g)
    i = k // 2
    j = 2 * (k % 2) + i % 2
    corner = torch.stack([i, j], dim=1).to(dtype) * 2.0 - 4.0
    offset = 2.0 * torch.rand(n, 2, generator=g, device=g.device, dtype=dtype)
    return corner + offset, k


def _eight_gaussians(n: int, g: torch.Generator, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    k = _component(n, 8, g)
    angle = k.to(dtype) * (2.0 * math.pi / 8.0)
    center = GAUSSIANS_RADIUS * torch.stack([angle.cos(), angle.sin()], dim=1)
    return center + GAUSSIANS_STD * _normal((n, 2), g, dtype), k


def _moons(n: int, g: torch.Generator, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    # Unit frame: moon 0 is the upper half of the unit circle centred at (0, 0); moon 1 is the
    # lower half of the unit circle centred at (1, 0.5). Angle uniform on [0, pi].
    k = _component(n, 2, g)
    theta = math.pi * _uniform(n, g, dtype)
    sign = 1.0 - 2.0 * k.to(dtype)  # +1 for moon 0, -1 for moon 1
    center = torch.stack([k.to(dtype), 0.5 * k.to(dtype)], dim=1)
    unit = center + sign[:, None] * torch.stack([theta.cos(), theta.sin()], dim=1)
    unit = unit + MOONS_NOISE * _normal((n, 2), g, dtype)
    shift = unit.new_tensor(_MOONS_CENTER)
    return _MOONS_SCALE * (unit - shift), k


def _circles(n: int, g: torch.Generator, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    k = _component(n, 2, g)
    radius = torch.where(k == 0, CIRCLES_RADII[0], CIRCLES_RADII[1]).to(dtype)
    theta = 2.0 * math.pi * _uniform(n, g, dtype)
    points = radius[:, None] * torch.stack([theta.cos(), theta.sin()], dim=1)
    return points + CIRCLES_NOISE * _normal((n, 2), g, dtype), k


def _spirals(n: int, g: torch.Generator, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    # Archimedean arm r = R * phi / phi_max. phi = phi_max * sqrt(u) gives p(phi) ~ phi, which
    # matches the arc-length element (~ r dphi), so points are roughly uniform along the arm.
    k = _component(n, 2, g)
    phi = SPIRALS_TURN * _uniform(n, g, dtype).sqrt()
    radius = SPIRALS_RADIUS * phi / SPIRALS_TURN
    angle = phi + math.pi * k.to(dtype)  # arm 1 is arm 0 rotated by pi: the arms interleave
    points = radius[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)
    return points + SPIRALS_NOISE * _normal((n, 2), g, dtype), k


_SAMPLERS: dict[str, _Sampler] = {
    "checkerboard": _checkerboard,
    "8gaussians": _eight_gaussians,
    "moons": _moons,
    "circles": _circles,
    "spirals": _spirals,
}

#: Names accepted by :func:`sample_toy`.
TOY_DATASETS: tuple[str, ...] = tuple(_SAMPLERS)
#: Number of mixture components (= label classes) of each toy distribution.
TOY_NUM_CLASSES: dict[str, int] = {
    "checkerboard": 8,
    "8gaussians": 8,
    "moons": 2,
    "circles": 2,
    "spirals": 2,
}


@overload
def sample_toy(
    name: str,
    n: int,
    *,
    generator: torch.Generator,
    return_labels: Literal[False] = False,
    dtype: torch.dtype = torch.float32,
) -> Tensor: ...


@overload
def sample_toy(
    name: str,
    n: int,
    *,
    generator: torch.Generator,
    return_labels: Literal[True],
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]: ...


def sample_toy(
    name: str,
    n: int,
    *,
    generator: torch.Generator,
    return_labels: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Tensor | tuple[Tensor, Tensor]:
    """Draw ``n`` i.i.d. points from a named 2-D toy distribution.

    Each distribution is a uniform mixture; the label is the component index:

    - ``"checkerboard"``: the board ``[-4, 4]^2`` is cut into 4 x 4 cells of width 2; cell
      ``(i, j)`` (``i`` along x, ``j`` along y, both ``0..3``) is
      ``[-4 + 2i, -2 + 2i) x [-4 + 2j, -2 + 2j)`` and is filled when ``i + j`` is even:
      ``(0,0), (0,2), (1,1), (1,3), (2,0), (2,2), (3,1), (3,3)``, labelled 0..7 in that order.
      Points are uniform on the union of filled cells.
    - ``"8gaussians"``: ``x = 4 (cos(2 pi k / 8), sin(2 pi k / 8)) + 0.5 eps``, ``k`` uniform on
      ``0..7`` (the label), ``eps ~ N(0, I)``.
    - ``"moons"``: two interleaved half circles (sklearn's ``make_moons`` geometry) in the unit
      frame ``m_0 = (cos th, sin th)``, ``m_1 = (1 - cos th, 0.5 - sin th)``,
      ``th ~ U[0, pi]``, plus ``0.05 eps``; then ``x = (8/3) (m - (0.5, 0.25))``, which maps the
      noise-free moons onto ``x in [-4, 4], y in [-2, 2]``.
    - ``"circles"``: ``x = r_k (cos th, sin th) + 0.2 eps`` with ``r_0 = 4`` (outer, label 0),
      ``r_1 = 2`` (inner, label 1), ``th ~ U[0, 2 pi)``.
    - ``"spirals"``: two Archimedean arms ``x = (4 phi / (3 pi)) (cos(phi + pi k),
      sin(phi + pi k)) + 0.1 eps`` with ``phi = 3 pi sqrt(u)``, ``u ~ U[0, 1]`` (roughly uniform
      along the arm, 1.5 turns out to radius 4); arm ``k = 1`` is arm 0 rotated by ``pi``.

    Args:
        name: one of :data:`TOY_DATASETS`.
        n: number of points ``N >= 1``.
        generator: the source of randomness; samples are created on its device.
        return_labels: also return the component index of each point.
        dtype: floating dtype of the points (labels are always int64).

    Returns:
        Points ``(N, 2)``; with ``return_labels=True`` a pair ``(points (N, 2), labels (N,))``,
        labels in ``[0, TOY_NUM_CLASSES[name])``.

    Raises:
        ValueError: unknown ``name`` (the message lists the choices) or ``n < 1``.
        TypeError: ``n`` not an int, ``generator`` not a ``torch.Generator`` or ``dtype`` not
            a floating dtype.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> sample_toy("moons", 4, generator=g).shape
        torch.Size([4, 2])
        >>> x, y = sample_toy("8gaussians", 3, generator=g, return_labels=True)
        >>> y.dtype
        torch.int64
    """
    check_in_choices(name, TOY_DATASETS, "toy dataset")
    check_positive_int(n, "n")
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, got {type(generator).__name__}; "
            "create one with torch.Generator().manual_seed(seed)"
        )
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    points, labels = _SAMPLERS[name](n, generator, dtype)
    return (points, labels) if return_labels else points


#: Toys with a continuous condition: name -> the base toy whose points it draws. The condition
#: of ``"8gaussians_angle"`` is the polar angle of the point (:func:`polar_angle`).
CONDITIONAL_TOYS: dict[str, str] = {"8gaussians_angle": "8gaussians"}


def polar_angle(x: Tensor) -> Tensor:
    """Polar angle ``atan2(x_2, x_1)`` in ``(-pi, pi]`` of points ``(N, 2)``, as ``(N, 1)``."""
    return torch.atan2(x[:, 1], x[:, 0])[:, None]


def sample_conditional_toy(
    name: str, n: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Draw ``n`` points of a conditional toy with their condition values.

    ``"8gaussians_angle"``: the points of ``"8gaussians"`` and, as the condition, the polar
    angle ``theta = atan2(y, x)`` in ``(-pi, pi]`` of each *point* (not of its component),
    the conditional 2-D toy of Kim et al. 2026 ("Better Source, Better Flow",
    arXiv:2602.05951). The point's angle is used because it is continuous, with a positive
    density on the whole circle, and fixes the direction of the point: ``p(x | theta)`` lies
    on the ray of angle ``theta`` (its radius spread by the component's noise), so a model
    must use the value continuously. The component's angle would take only 8 values: a class
    label in disguise.

    Args:
        name: one of :data:`CONDITIONAL_TOYS`.
        n: number of points ``N >= 1``.
        generator: the source of randomness (points are those of the base toy's stream).
        dtype: floating dtype of points and values.

    Returns:
        ``(points (N, 2), values (N, 1))``.

    Raises:
        ValueError, TypeError: as :func:`sample_toy` (the name must be a conditional toy).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, angle = sample_conditional_toy("8gaussians_angle", 5, generator=g)
        >>> torch.allclose(angle[:, 0], torch.atan2(x[:, 1], x[:, 0]))
        True
    """
    check_in_choices(name, tuple(CONDITIONAL_TOYS), "conditional toy dataset")
    points = sample_toy(CONDITIONAL_TOYS[name], n, generator=generator, dtype=dtype)
    return points, polar_angle(points)
