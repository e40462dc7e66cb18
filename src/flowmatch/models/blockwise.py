"""Blockwise velocity fields: one small network per time segment, trained jointly as one field.

Park, Lee, Joo & Kim (2025), "Blockwise Flow Matching", arXiv:2510.21167: ``[0, 1]`` is cut
into ``M`` segments ``[m / M, (m + 1) / M)`` and block ``m`` (a network ``1/M`` the size of a
single-field baseline) predicts the velocity on its segment only, so one evaluation costs one
small block. Trained with the ordinary objective on the combined field (each sample's loss
reaches the block of its time: the sum of the per-segment losses), sampled as one field on a
time grid aligned to the segment boundaries (grid ``aligned``). The paper's semantic-feature
guidance and feature-residual approximation are not part of this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from flowmatch.interfaces import Cond, CondSpec, index_cond
from flowmatch.models.base import MODELS, ModelConfig, check_cond_kinds
from flowmatch.models.mlp import MLP
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import OptionError, option

__all__ = ["BlockwiseConfig", "BlockwiseField", "block_weights"]


def block_weights(t: Tensor, blocks: int, overlap: float = 0.0) -> Tensor:
    """Weights ``(B, M)`` of the ``M`` blocks at times ``t`` ``(B,)``: a partition of unity.

    ``overlap = 0``: the indicator of the segment ``[m / M, (m + 1) / M)`` (the last segment
    includes ``t = 1``). ``overlap = r > 0``: around each inner boundary ``b`` the weight moves
    linearly from the left block to the right one over ``[b - d, b + d]``, ``d = r / M``, so
    the blended field is continuous in ``t``.
    """
    m = torch.arange(blocks, device=t.device, dtype=t.dtype)
    lo, hi = m / blocks, (m + 1) / blocks
    tt = t[:, None]
    if overlap == 0.0:
        w = (tt >= lo) & (tt < hi)
        w[:, -1] |= tt[:, 0] >= 1.0
        return w.to(t.dtype)
    d = overlap / blocks
    rise = ((tt - (lo - d)) / (2 * d)).clamp(0, 1)
    fall = (((hi + d) - tt) / (2 * d)).clamp(0, 1)
    rise[:, 0], fall[:, -1] = 1.0, 1.0  # no boundary below the first or above the last block
    return torch.minimum(rise, fall)


@dataclass(frozen=True)
class BlockwiseConfig(ModelConfig):
    """Options of the blockwise field (each block is an MLP)."""

    blocks: int = option(4, ge=1, doc="number M of time segments (and of small networks)")
    hidden: int = option(128, ge=1, doc="width of each block's hidden layers")
    depth: int = option(2, ge=1, doc="hidden layers of each block")
    time_dim: int = option(64, ge=2, doc="size of each block's time embedding (even)")
    overlap: float = option(
        0.0,
        ge=0,
        le=0.5,
        doc="half-width of the linear blend at each boundary, in segments (0: hard switch)",
    )

    def validate(self) -> None:
        """``time_dim`` must be even."""
        if self.time_dim % 2:
            raise OptionError("time_dim", f"must be even, got {self.time_dim}")


def _build_blockwise(
    config: ModelConfig, *, sample_shape: tuple[int, ...], cond: CondSpec
) -> nn.Module:
    assert isinstance(config, BlockwiseConfig)  # guaranteed by Registry.build
    check_cond_kinds("blockwise", BlockwiseField.cond_kinds, cond)
    return BlockwiseField(
        math.prod(sample_shape),
        blocks=config.blocks,
        hidden=config.hidden,
        depth=config.depth,
        time_dim=config.time_dim,
        overlap=config.overlap,
        cond=cond,
    )


@MODELS.register("blockwise", config=BlockwiseConfig, build=_build_blockwise)
class BlockwiseField(nn.Module):
    """``v(x, t, c) = sum_m w_m(t) v_m(x, t, c)``, one :class:`MLP` ``v_m`` per time segment.

    ``w`` from :func:`block_weights`: with ``overlap = 0`` exactly one block answers at each
    ``t`` (right-continuous at the boundaries ``m / M``: ``v(b) = v_m(b)`` for the block that
    starts at ``b``); with ``overlap > 0`` two blocks blend linearly near each boundary and the
    field is continuous in ``t``. Only blocks with a non-zero weight are evaluated, so a batch
    at one time costs one block (two inside a blend).

    Continuity and grids: a fixed-step solver on a grid aligned to the boundaries (grid
    ``aligned`` with ``segments = M``, or ``uniform`` with ``M`` dividing the steps) evaluates
    Euler and midpoint stages inside one segment; a stage exactly at a step's right end (Heun,
    RK4) there uses the next block, an ``O(h)`` error confined to the boundary steps, which
    ``overlap > 0`` removes.

    Args:
        dim: number of features ``prod(D)``.
        blocks: ``M >= 1``.
        hidden: width of each block.
        depth: hidden layers of each block.
        time_dim: time-embedding size of each block.
        overlap: blend half-width in segments, ``[0, 0.5]``.
        cond: the conditioning every block takes.
    """

    cond_kinds: ClassVar[frozenset[str]] = MLP.cond_kinds

    def __init__(
        self,
        dim: int,
        *,
        blocks: int = 4,
        hidden: int = 128,
        depth: int = 2,
        time_dim: int = 64,
        overlap: float = 0.0,
        cond: CondSpec | None = None,
    ) -> None:
        super().__init__()
        self.blocks = check_positive_int(blocks, "blocks")
        if not 0.0 <= overlap <= 0.5:
            raise ValueError(f"overlap must be in [0, 0.5], got {overlap}")
        self.overlap = float(overlap)
        spec = cond or CondSpec()
        self.num_classes = spec.num_classes
        self.nets = nn.ModuleList(
            MLP(
                dim,
                hidden=hidden,
                depth=depth,
                time_dim=time_dim,
                num_classes=spec.num_classes,
                values_dim=spec.values_dim,
                context_shape=spec.context_shape,
            )
            for _ in range(self.blocks)
        )

    @property
    def null_label(self) -> int | None:
        """The label id of the empty condition, or ``None`` without labels."""
        return self.num_classes

    @property
    def boundaries(self) -> list[float]:
        """The segment boundaries ``[0, 1/M, ..., 1]``."""
        return [m / self.blocks for m in range(self.blocks + 1)]

    def forward(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """The blended velocity ``(B, *D)`` at ``x`` ``(B, *D)``, ``t`` ``(B,)``."""
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
        w = block_weights(t, self.blocks, self.overlap)
        out = torch.zeros_like(x)
        for m, net in enumerate(self.nets):
            rows = torch.nonzero(w[:, m] > 0).flatten()
            if rows.numel() == 0:
                continue
            if rows.numel() == x.shape[0]:
                v = net(x, t, cond)
                out = out + w[:, m].reshape(-1, *([1] * (x.ndim - 1))).to(v) * v
                continue
            v = net(x[rows], t[rows], index_cond(cond, rows))
            wm = w[rows, m].reshape(-1, *([1] * (x.ndim - 1))).to(v)
            out = out.index_add(0, rows, wm * v)
        return out

    def extra_repr(self) -> str:
        """Summarise size for ``print(model)``."""
        per = sum(p.numel() for p in self.nets[0].parameters())
        return f"blocks={self.blocks}, overlap={self.overlap}, params per block={per}"
