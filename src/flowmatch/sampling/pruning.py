"""Directional pruning of a Gaussian source (SourceFM): skip noise pointing where data is not.

Lee, Kim & Lee (2025), "Is There a Better Source Distribution than Gaussian? Exploring Source
Distributions for Image Flow Matching" (TMLR), pruned sampling; the repository's
``find_pruning_axis_with_pca.py`` and ``utils/pruned.py``. Offline, once per run: L2-normalise
the training data, fit PCA, and keep the candidate axes ``{+pc_k, -pc_k}`` along which no
training point points: ``max_n cos(axis, x_n) <= threshold`` (data-sparse directions). At
sampling time a Gaussian draw is rejected when it points along one of those axes,
``max_k cos(x0, a_k) > tau``, and redrawn; the accepted draws are used unchanged (the model
is any Gaussian-source model; nothing is retrained).

(The repository saves the *accepted* axes but rejects candidates near the loaded ones; as the
paper describes, the axes stored here are the rejected, data-sparse ones.) In ``D``
dimensions random cosines are ``~N(0, 1/D)``: choose ``tau ~ c / sqrt(D)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowmatch.sources import Source
from flowmatch.utils.checks import check_positive_int

__all__ = ["PrunedGaussian", "fit_sparse_axes"]


def _unit_rows(x: Tensor) -> Tensor:
    flat = x.reshape(len(x), -1).double()
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def fit_sparse_axes(data: Tensor, threshold: float = 0.01) -> Tensor:
    """The data-sparse PCA axes ``(K, D)`` (unit rows) of ``data`` ``(N, *D)``.

    Args:
        data: training samples in the model's space.
        threshold: an axis is data-sparse when ``max_n cos(axis, x_n) <= threshold``.

    Returns:
        float64 ``(K, D)``; ``K`` may be 0.
    """
    unit = _unit_rows(data)
    centred = unit - unit.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    axes = torch.cat([vh, -vh])
    max_cos = (axes @ unit.T).max(1).values
    return axes[max_cos <= threshold]


class PrunedGaussian(Source):
    """``N(0, I)`` conditioned on ``max_k cos(x, a_k) <= tau`` (rejection sampling).

    Args:
        axes: unit axes ``(K, D)`` (e.g. from :func:`fit_sparse_axes`).
        tau: the rejection cosine.
        max_rounds: rounds of redrawing before giving up.

    Raises:
        ValueError: ``tau`` outside ``(-1, 1]`` or the axes are not ``(K, D)``.
    """

    def __init__(self, axes: Tensor, tau: float, *, max_rounds: int = 1000) -> None:
        if axes.ndim != 2:
            raise ValueError(f"axes must be (K, D), got {tuple(axes.shape)}")
        if not -1 < tau <= 1:
            raise ValueError(f"tau must be in (-1, 1], got {tau}")
        self.axes, self.tau = axes.double(), float(tau)
        self.max_rounds = check_positive_int(max_rounds, "max_rounds")

    def __repr__(self) -> str:
        return f"PrunedGaussian({len(self.axes)} axes, tau={self.tau})"

    def accepts(self, x: Tensor) -> Tensor:
        """``(B,)`` bool: whether each draw keeps ``max_k cos(x, a_k) <= tau``."""
        if len(self.axes) == 0:
            return torch.ones(len(x), dtype=torch.bool, device=x.device)
        cos = _unit_rows(x) @ self.axes.to(x.device).T
        return cos.max(1).values <= self.tau

    def sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``shape[0]`` accepted draws; a draw depends only on ``generator``'s stream.

        Raises:
            RuntimeError: fewer than ``shape[0]`` draws accepted after ``max_rounds`` rounds.
        """
        n, out, have = shape[0], [], 0
        for _ in range(self.max_rounds):
            cand = torch.randn(shape, generator=generator, device=device, dtype=dtype)
            keep = cand[self.accepts(cand)]
            out.append(keep)
            have += len(keep)
            if have >= n:
                return torch.cat(out)[:n]
        raise RuntimeError(
            f"pruned source accepted {have} of {n} draws after {self.max_rounds} rounds: raise tau "
            f"(now {self.tau}) or fit fewer axes"
        )

    def log_prob(self, x: Tensor) -> Tensor:
        """Unnormalised: the Gaussian log-density inside the accepted set, ``-inf`` outside."""
        flat = x.reshape(x.shape[0], -1)
        logp = -0.5 * (flat.pow(2).sum(1) + flat.shape[1] * math.log(2 * math.pi))
        return torch.where(self.accepts(x), logp, torch.full_like(logp, -math.inf))
