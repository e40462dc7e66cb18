"""Blockwise fields: partition of unity, the documented continuity, grid alignment, training."""

from __future__ import annotations

import pytest
import torch

from flowmatch.interfaces import CondSpec
from flowmatch.models.base import MODELS
from flowmatch.models.blockwise import BlockwiseField, block_weights
from flowmatch.objectives import FlowMatchingObjective
from flowmatch.solvers import Heun, Midpoint, solve
from flowmatch.times import make_grid
from flowmatch.utils.options import OptionError

F64 = torch.float64


@pytest.mark.parametrize("overlap", [0.0, 0.1, 0.5])
def test_weights_are_a_partition_of_unity(overlap):
    t = torch.linspace(0, 1, 1001, dtype=F64)
    w = block_weights(t, 4, overlap)
    assert w.shape == (1001, 4) and (w >= 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(1001, dtype=F64))
    assert ((w > 0).sum(1) <= 2).all()  # at most two blocks at any time


def _field(overlap):
    torch.manual_seed(0)
    return BlockwiseField(2, blocks=4, hidden=16, depth=1, overlap=overlap).double()


def test_hard_switch_uses_one_block_and_is_right_continuous():
    f = _field(0.0)
    x = torch.randn(5, 2, dtype=F64)
    for t0, m in [(0.1, 0), (0.25, 1), (0.49, 1), (0.5, 2), (1.0, 3)]:
        t = torch.full((5,), t0, dtype=F64)
        torch.testing.assert_close(f(x, t), f.nets[m](x, t))
    # The left limit at a boundary is the left block's value there (a jump in general).
    b = torch.full((5,), 0.5, dtype=F64)
    left = f(x, b - 1e-12)
    torch.testing.assert_close(left, f.nets[1](x, b), atol=1e-9, rtol=0)


def test_blended_field_is_continuous_in_t():
    # With overlap > 0, |v(b + h) - v(b - h)| = O(h) at every boundary b (Lipschitz in t):
    # halving h halves the jump (up to the blocks' own curvature).
    f = _field(0.2)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    for b in (0.25, 0.5, 0.75, 0.25 + 0.2 / 4, 0.5 - 0.2 / 4):  # boundaries and blend edges
        jumps = []
        for h in (1e-3, 5e-4, 2.5e-4):
            lo, hi = torch.full((8,), b - h, dtype=F64), torch.full((8,), b + h, dtype=F64)
            jumps.append((f(x, hi) - f(x, lo)).abs().max().item())
        assert jumps[1] < 0.6 * jumps[0] and jumps[2] < 0.6 * jumps[1], (b, jumps)


def test_aligned_grid_contains_the_boundaries_and_steps_stay_in_one_block():
    grid = make_grid("aligned", 10, dtype=F64, segments=4)
    assert grid.shape == (11,) and grid[0] == 0 and grid[-1] == 1
    for b in (0.25, 0.5, 0.75):
        assert (grid - b).abs().min() < 1e-15
    torch.testing.assert_close(
        make_grid("aligned", 8, dtype=F64, segments=4), make_grid("uniform", 8, dtype=F64)
    )
    with pytest.raises(ValueError, match="num_steps >= 4"):
        make_grid("aligned", 3, segments=4)
    # Midpoint on the aligned grid evaluates every block only at times of its own segment.
    f = _field(0.0)
    seen = {m: [] for m in range(4)}
    for m, net in enumerate(f.nets):
        net.register_forward_hook(lambda mod, args, out, m=m: seen[m].extend(args[1].tolist()))
    solve(
        f, torch.zeros(3, 2, dtype=F64), make_grid("aligned", 8, dtype=F64, segments=4), Midpoint()
    )
    for m, times in seen.items():
        assert times and min(times) >= m / 4 and max(times) < (m + 1) / 4
    # Heun's last stage lands on the boundary and is answered by the next block (documented).
    seen = {m: [] for m in range(4)}
    solve(f, torch.zeros(3, 2, dtype=F64), make_grid("aligned", 8, dtype=F64, segments=4), Heun())
    assert 0.25 in seen[1]


def test_blockwise_trains_through_the_ordinary_objective_and_builds_from_config():
    f = _field(0.0)
    x1 = torch.randn(64, 2, dtype=F64)
    out = FlowMatchingObjective()(f, x1, generator=torch.Generator().manual_seed(0))
    out.loss.mean().backward()
    assert all(p.grad is not None for p in f.parameters())  # 64 times reach every block
    net = MODELS.build(
        MODELS.config("blockwise", blocks=2, hidden=8),
        sample_shape=(2,),
        cond=CondSpec(num_classes=3),
    )
    assert isinstance(net, BlockwiseField) and len(net.nets) == 2 and net.null_label == 3
    y = net(torch.randn(4, 2), torch.tensor([0.1, 0.6, 0.2, 0.9]), torch.tensor([0, 1, 2, 3]))
    assert y.shape == (4, 2)
    with pytest.raises(OptionError, match=r"overlap must be in \[0, 0.5\]"):
        MODELS.config("blockwise", overlap=0.7)
    with pytest.raises(ValueError, match="overlap must be"):
        BlockwiseField(2, overlap=-0.1)
