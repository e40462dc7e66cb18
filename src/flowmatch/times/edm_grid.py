"""The EDM time grid (Karras et al. 2022, eq. 5) in flowmatch's time.

EDM spaces the noise levels of its sampler as ``sigma_i = (sigma_max^(1/rho) + i/N
(sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``: with ``rho = 7`` most steps go to low noise.
On the linear path the noise-to-signal ratio is ``sigma = (1 - t) / t``, so the grid is
``t_i = 1 / (1 + sigma_i)``; the first and last times are set to exactly 0 and 1 (EDM likewise
starts from pure noise and ends with ``sigma_N = 0``). For other schedules the same times are a
heuristic, not EDM's noise levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flowmatch.times.grids import GRIDS, GridConfig
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import OptionError, option


@dataclass(frozen=True)
class EDMGridConfig(GridConfig):
    """Options of the EDM grid."""

    rho: float = option(7.0, gt=0, doc="spacing exponent; larger puts more steps near the data")
    sigma_min: float = option(0.002, gt=0, doc="smallest noise-to-signal ratio before t = 1")
    sigma_max: float = option(80.0, gt=0, doc="largest noise-to-signal ratio after t = 0")

    def validate(self) -> None:
        """``sigma_min < sigma_max``."""
        if not self.sigma_min < self.sigma_max:
            raise OptionError(
                "sigma_min", f"must be < sigma_max = {self.sigma_max}, got {self.sigma_min}"
            )


@GRIDS.register("edm", config=EDMGridConfig)
def edm_grid(
    num_steps: int,
    rho: float = 7.0,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """EDM's rho-spaced grid (Karras et al. 2022, eq. 5) as times ``(N+1,)`` from 0 to 1.

    Example:
        >>> [round(v, 3) for v in edm_grid(4).tolist()]
        [0.0, 0.054, 0.284, 0.855, 1.0]
    """
    check_positive_int(num_steps, "num_steps")
    i = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigma = (hi + i * (lo - hi)) ** rho
    t = 1 / (1 + sigma)
    t[0], t[-1] = 0.0, 1.0
    return t.to(dtype=dtype, device=device)
