"""Couplings decide which source sample ``x0`` is paired with which data sample ``x1``.

Every coupling returns a re-ordering of ``x0``: the data ``x1`` (and its labels) keep their
order, so labels stay attached to their data and both marginals are preserved exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from flowmatch.registry import ComponentConfig, Registry
from flowmatch.utils.checks import check_same_batch


@dataclass(frozen=True)
class CouplingConfig(ComponentConfig):
    """The ``[coupling]`` section: ``kind`` names the coupling, the rest are its options."""


def check_labels(labels: Any, batch_size: int) -> Tensor:
    """Check ``labels`` is a tensor of shape ``(B,)`` with ``B = batch_size``; return it.

    Raises:
        ValueError: if ``labels`` is not a tensor or not of shape ``(batch_size,)``.
    """
    if not isinstance(labels, Tensor) or labels.shape != (batch_size,):
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a tensor of shape (B,) = ({batch_size},), got {got}")
    return labels


class Coupling(ABC):
    """Pairs a batch of sources with a batch of data by permuting the sources.

    Attributes:
        name: registry name (set by the registration).
        uses_labels: whether the coupling needs class labels (then a run must be conditional).
        pairs: whether it does real work; ``False`` only for the independent coupling, which
            lets the trainer skip the pairing pipeline.
    """

    name: ClassVar[str]
    uses_labels: ClassVar[bool] = False
    pairs: ClassVar[bool] = True

    @abstractmethod
    def permutation(
        self,
        x0: Tensor,
        x1: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Indices ``perm`` ``(B,)`` (a permutation) such that ``x0[perm][i]`` pairs with ``x1[i]``."""

    def __call__(
        self,
        x0: Tensor,
        x1: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Return the paired batch ``(x0[perm], x1)``, both ``(B, *D)``.

        Args:
            x0: source samples ``(B, *D)``.
            x1: data samples ``(B, *D)``.
            labels: class labels of ``x1`` ``(B,)``, used by label-aware couplings.
            generator: randomness for stochastic couplings.
        """
        check_same_batch(x0, x1)
        if labels is not None:
            check_labels(labels, x1.shape[0])
        perm = self.permutation(x0, x1, labels=labels, generator=generator)
        return x0[perm], x1

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: Couplings by name (``COUPLINGS["exact_ot"]`` is ``ExactOTCoupling``).
COUPLINGS: Registry[Coupling, CouplingConfig] = Registry(
    "coupling", CouplingConfig, default="independent"
)


@COUPLINGS.register("independent")
class IndependentCoupling(Coupling):
    """The product coupling ``p0 x p1``: keep the (independently drawn) pairs as they are."""

    pairs = False

    def permutation(
        self,
        x0: Tensor,
        x1: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Return the identity permutation."""
        return torch.arange(x0.shape[0], device=x0.device)

    def __call__(
        self,
        x0: Tensor,
        x1: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Return ``(x0, x1)`` unchanged (no copy)."""
        check_same_batch(x0, x1)
        return x0, x1
