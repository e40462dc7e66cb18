"""Butcher tableaus of explicit Runge-Kutta methods (data, not code).

Hairer, Norsett & Wanner, "Solving Ordinary Differential Equations I", Sec. II.1.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge-Kutta method ``k_i = f(x + h sum_j a_ij k_j, t + c_i h)``, ``x' = x + h sum_i b_i k_i``.

    Attributes:
        name: method name.
        order: classical order of accuracy.
        c: stage times ``(s,)``.
        a: strictly lower triangular stage weights, ``a[i]`` has ``i`` entries.
        b: solution weights ``(s,)``.
        b_err: for embedded pairs, ``b - b_hat`` (weights of the error estimate), else ``None``.
    """

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_err: tuple[float, ...] | None = None

    @property
    def stages(self) -> int:
        """Number of stages (function evaluations per step without FSAL)."""
        return len(self.b)


EULER = ButcherTableau("euler", 1, c=(0.0,), a=((),), b=(1.0,))
MIDPOINT = ButcherTableau("midpoint", 2, c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))
HEUN = ButcherTableau("heun", 2, c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5))
RK4 = ButcherTableau(
    "rk4",
    4,
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
)

# Dormand & Prince (1980), "A family of embedded Runge-Kutta formulae"; 5th-order solution
# with an embedded 4th-order estimate; the last stage is evaluated at the new point (FSAL).
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B_HAT = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
DOPRI5 = ButcherTableau(
    "dopri5",
    5,
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _DP_B[:6],
    ),
    b=_DP_B,
    b_err=tuple(b - bh for b, bh in zip(_DP_B, _DP_B_HAT, strict=True)),
)

# Shampine (1986), "Some practical Runge-Kutta formulas", Math. Comp. 46: an alternative
# 4th-order embedded solution for the same Dormand-Prince stages. Its error estimate is
# smaller for smooth problems, so a controller accepts larger steps at the same tolerance
# (the estimator torchdiffeq's dopri5 uses). Stored as b - b_hat, like ``b_err``.
_SHAMPINE_B_HAT = (
    1951 / 21600,
    0.0,
    22642 / 50085,
    451 / 720,
    -12231 / 42400,
    649 / 6300,
    1 / 60,
)
DOPRI5_SHAMPINE_ERR: tuple[float, ...] = tuple(
    b - bh for b, bh in zip(_DP_B, _SHAMPINE_B_HAT, strict=True)
)

TABLEAUS: dict[str, ButcherTableau] = {t.name: t for t in (EULER, MIDPOINT, HEUN, RK4, DOPRI5)}
