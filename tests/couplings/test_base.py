"""The Coupling contract: ``__call__`` validates once, then permutes ``x0`` by ``permutation``."""

import pytest
import torch

from flowmatch.couplings import Coupling, IndependentCoupling
from flowmatch.couplings.base import check_labels


class ReverseCoupling(Coupling):
    """A fixed, non-trivial permutation: exercises the base ``__call__``."""

    name = "reverse"

    def permutation(self, x0, x1, *, labels=None, generator=None):
        return torch.arange(x0.shape[0] - 1, -1, -1)


def test_call_applies_permutation_and_keeps_x1():
    # B == D == 4: a batch/feature mix-up in the gather would go unnoticed otherwise.
    x0 = torch.arange(16, dtype=torch.float64).reshape(4, 4)
    x1 = -x0
    x0c, x1c = ReverseCoupling()(x0, x1, labels=torch.arange(4))
    assert x0c.shape == (4, 4) and x1c is x1
    assert torch.equal(x0c, x0.flip(0))


def test_independent_is_identity_without_copy():
    x0, x1 = torch.randn(3, 2), torch.randn(3, 2)
    x0c, x1c = IndependentCoupling()(x0, x1)
    assert x0c is x0 and x1c is x1
    assert torch.equal(IndependentCoupling().permutation(x0, x1), torch.arange(3))


def test_call_rejects_bad_labels_and_shapes():
    x0, x1 = torch.randn(4, 2), torch.randn(4, 2)
    with pytest.raises(
        ValueError, match=r"labels must be a tensor of shape \(B,\) = \(4,\), got \(3,\)"
    ):
        ReverseCoupling()(x0, x1, labels=torch.arange(3))
    with pytest.raises(
        ValueError, match=r"labels must be a tensor of shape \(B,\) = \(4,\), got list"
    ):
        ReverseCoupling()(x0, x1, labels=[0, 1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"x0 and x1 must have the same shape"):
        ReverseCoupling()(x0, torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"x0 and x1 must have the same shape"):
        IndependentCoupling()(x0, torch.randn(4, 3))


def test_check_labels_returns_valid_labels():
    labels = torch.tensor([2, 0, 1])
    assert check_labels(labels, 3) is labels
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(3,\), got \(3, 1\)"):
        check_labels(labels[:, None], 3)
