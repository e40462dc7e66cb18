"""Inference time grids: 1-D tensors ``(N+1,)`` from ``t = 0`` (source) to ``t = 1`` (data).

Solvers integrate over any strictly monotone grid; a decreasing grid integrates backwards
(inversion, likelihood). There is no float step size: the grid is explicit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowmatch.registry import ComponentConfig, Entry, Registry
from flowmatch.utils.checks import check_positive_float, check_positive_int
from flowmatch.utils.options import option

#: A grid maker: ``make(num_steps, *, dtype, device) -> Tensor (N+1,)``.
GridMaker = Callable[..., Tensor]


@dataclass(frozen=True)
class GridConfig(ComponentConfig):
    """An inference time grid (``sample.grid``): ``kind`` names it, the rest are its options."""


def _build_grid(entry: Entry[Any], config: ComponentConfig) -> GridMaker:
    return functools.partial(entry.target, **config.options())


#: Named inference grids; building one gives ``make(num_steps, *, dtype, device)``.
GRIDS: Registry[GridMaker, GridConfig] = Registry(
    "grid", GridConfig, default="uniform", build=_build_grid
)


@dataclass(frozen=True)
class ShiftedGridConfig(GridConfig):
    """Options of the shifted (SD3) grid."""

    shift: float = option(3.0, gt=0, doc="a of s' = a s / (1 + (a - 1) s); > 1 favours noise")


def grid_values(grid: Tensor, *, name: str = "grid", full: bool = False) -> list[float]:
    """Validate a grid (the rules of ``check_grid``) and return its times as Python floats.

    The one implementation of grid validation: ``check_grid`` and the solvers call it. The
    checks run on one host copy of the grid (a single device read), so a solve can loop over
    the returned floats without further syncs.

    Args:
        grid: times ``(N+1,)``.
        name: argument name for messages.
        full: also require the endpoints ``{0, 1}``.

    Returns:
        The ``N+1`` times as Python floats.

    Raises:
        TypeError, ValueError: as ``check_grid``.
    """
    if not isinstance(grid, Tensor):
        raise TypeError(f"{name} must be a 1-D torch.Tensor, got {type(grid).__name__}")
    if not grid.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {grid.dtype}")
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(f"{name} must be 1-D with at least 2 times, got shape {tuple(grid.shape)}")
    values = grid.tolist()
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must hold finite floats, got {values}")
    pairs = list(zip(values[:-1], values[1:], strict=True))
    if not (all(a < b for a, b in pairs) or all(a > b for a, b in pairs)):
        raise ValueError(f"{name} must be strictly monotone; got {values}")
    if min(values) < 0 or max(values) > 1:
        raise ValueError(f"{name} must lie in [0, 1]; got {values}")
    if full and {values[0], values[-1]} != {0.0, 1.0}:
        raise ValueError(
            f"{name} must include both endpoints 0 and 1; got first={values[0]}, last={values[-1]}"
        )
    return values


def check_grid(grid: Tensor, *, name: str = "grid", full: bool = False) -> Tensor:
    """Validate a grid: 1-D, at least 2 points, finite, strictly monotone, within ``[0, 1]``.

    Args:
        grid: times ``(N+1,)``.
        name: argument name for messages.
        full: also require the endpoints ``{0, 1}`` (``grid[0] = 0, grid[-1] = 1`` or reversed).

    Returns:
        ``grid`` unchanged.

    Raises:
        TypeError: if ``grid`` is not a floating-point tensor.
        ValueError: if it is not 1-D with >= 2 finite, strictly monotone times in ``[0, 1]``
            (or lacks an endpoint when ``full``).
    """
    grid_values(grid, name=name, full=full)
    return grid


@GRIDS.register("uniform")
def uniform_grid(
    num_steps: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """``t_k = k / N`` for ``k = 0..N``; shape ``(N+1,)``.

    Raises:
        TypeError: if ``num_steps`` is not an int.
        ValueError: if ``num_steps < 1``.
    """
    check_positive_int(num_steps, "num_steps")
    return torch.linspace(0.0, 1.0, num_steps + 1, dtype=dtype, device=device)


@GRIDS.register("shifted", config=ShiftedGridConfig)
def shifted_grid(
    num_steps: int,
    shift: float = 3.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """SD3's resolution shift applied to a uniform grid.

    In the noise-level convention ``s = 1 - t``: ``s' = a s / (1 + (a - 1) s)`` (Esser et al.
    2024, eq. 23); ``a > 1`` spends more steps near the noise end, ``a = 1`` is uniform.
    Returns ``t' = 1 - s'``, shape ``(N+1,)``.

    Raises:
        TypeError: if ``num_steps`` is not an int or ``shift`` not a number.
        ValueError: if ``num_steps < 1`` or ``shift`` is not a finite number ``> 0``.
    """
    a = check_positive_float(shift, "shift")
    s = 1.0 - uniform_grid(num_steps, dtype=torch.float64)
    s_shift = a * s / (1 + (a - 1) * s)
    t = 1.0 - s_shift
    t[0], t[-1] = 0.0, 1.0  # exact endpoints despite round-off
    return t.to(dtype=dtype, device=device)


@GRIDS.register("cosine")
def cosine_grid(
    num_steps: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """Cosine spacing ``t_k = (1 - cos(pi k / N)) / 2``: denser near both ends, shape ``(N+1,)``.

    The Chebyshev-Gauss-Lobatto nodes mapped to ``[0, 1]`` (Trefethen 2013, "Approximation
    Theory and Approximation Practice", ch. 2): steps shrink like ``sin(pi k / N)`` towards
    the noise and the data end, where flow fields bend most.

    Raises:
        TypeError: if ``num_steps`` is not an int.
        ValueError: if ``num_steps < 1``.
    """
    check_positive_int(num_steps, "num_steps")
    k = torch.arange(num_steps + 1, dtype=torch.float64)
    t = 0.5 * (1 - torch.cos(math.pi * k / num_steps))
    t[0], t[-1] = 0.0, 1.0
    return t.to(dtype=dtype, device=device)


def custom_grid(
    values: Sequence[float] | Tensor,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """A user-given grid, validated: strictly monotone, in ``[0, 1]``, both endpoints included.

    Args:
        values: the times, increasing (sampling) or decreasing (inversion).
        dtype: dtype of the grid.
        device: device of the grid.

    Returns:
        The grid ``(N+1,)``.

    Raises:
        ValueError: as ``check_grid(..., full=True)``.
    """
    grid = torch.as_tensor(values, dtype=torch.float64)
    return check_grid(grid, full=True).to(dtype=dtype, device=device)


def make_grid(
    kind: str | GridConfig,
    num_steps: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    **options: Any,
) -> Tensor:
    """Build a registered grid of ``num_steps`` steps, shape ``(N+1,)``, from 0 to 1.

    Args:
        kind: a name of :data:`GRIDS` (``"uniform"``, ``"shifted"``, ...) or a grid config.
        num_steps: number of steps ``N >= 1``.
        dtype: dtype of the grid.
        device: device of the grid.
        **options: the grid's options (e.g. ``shift=3.0`` for ``"shifted"``); an option the
            grid does not have is an error.

    Raises:
        ValueError: unknown ``kind`` or option, a bad option value, or ``num_steps < 1``.

    Example:
        >>> make_grid("uniform", 4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
        >>> make_grid("shifted", 2, shift=3.0).tolist()
        [0.0, 0.25, 1.0]
    """
    if isinstance(kind, GridConfig):
        if options:
            raise ValueError(f"pass options inside the grid config, not as {sorted(options)}")
        config = kind
    else:
        config = GRIDS.config(kind, **options)
    return GRIDS.build(config)(num_steps, dtype=dtype, device=device)
