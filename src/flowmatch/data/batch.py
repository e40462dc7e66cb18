"""In-memory datasets and the deterministic batch schedule the trainer consumes.

A batch is a pure function of ``(seed, rank, step)``: resumed, prefetched and data-parallel
runs therefore see exactly the same data as an uninterrupted single run would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from flowmatch.interfaces import Cond, Condition
from flowmatch.utils.checks import check_finite, check_positive_int
from flowmatch.utils.tensor import step_generator


@dataclass(frozen=True)
class Batch:
    """One training batch.

    Attributes:
        x1: data ``(B, *D)``.
        labels: class labels ``(B,)`` (long) or ``None``.
        x0: source samples already paired with ``x1`` ``(B, *D)`` (filled by a pairing
            pipeline such as the OT prefetcher), or ``None`` to let the objective draw them.
        values: continuous conditions ``(B, C)`` or ``None``.
        context: context tensors ``(B, *S)`` or ``None``.
    """

    x1: Tensor
    labels: Tensor | None = None
    x0: Tensor | None = None
    values: Tensor | None = None
    context: Tensor | None = None

    @property
    def cond(self) -> Cond:
        """The batch's conditioning: the labels tensor alone, a ``Condition``, or ``None``."""
        if self.values is None and self.context is None:
            return self.labels
        return Condition(labels=self.labels, values=self.values, context=self.context)


@dataclass(frozen=True)
class Standardizer:
    """Affine map ``z = (x - mean) / std`` applied to data before training; inverted for outputs.

    Attributes:
        mean: per-feature mean, shaped like one sample ``(*D,)`` (or broadcastable to it).
        std: per-feature scale, same shape, ``> 0``.

    Raises:
        TypeError: if ``mean`` or ``std`` is not a floating tensor.
        ValueError: if their shapes differ, ``mean`` is not finite, or ``std`` is not finite
            and ``> 0`` (give constant features ``std = 1``, as
            :func:`flowmatch.data.registry.fit_standardizer` does).
    """

    mean: Tensor
    std: Tensor

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(f"Standardizer {name} must be a floating tensor, got {value!r}")
        if self.mean.shape != self.std.shape:
            raise ValueError(
                f"Standardizer mean and std must have the same shape, got "
                f"{tuple(self.mean.shape)} and {tuple(self.std.shape)}"
            )
        if not bool(torch.isfinite(self.mean).all()):
            raise ValueError(f"Standardizer mean must be finite, got {self.mean.tolist()}")
        if not bool((torch.isfinite(self.std) & (self.std > 0)).all()):
            raise ValueError(
                f"Standardizer std must be finite and > 0 (give constant features std = 1), "
                f"got min {float(self.std.min())}"
            )

    def transform(self, x: Tensor) -> Tensor:
        """Map data ``(B, *D)`` to the model space."""
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse(self, z: Tensor) -> Tensor:
        """Map model-space samples ``(B, *D)`` back to data space."""
        return z * self.std.to(z) + self.mean.to(z)

    def log_abs_det(self) -> float:
        """``sum log std``: add to a model-space NLL to get a data-space NLL (per sample)."""
        return float(self.std.log().sum())

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        """JSON-serialisable form (shape and flat values)."""
        return {
            "shape": list(self.mean.shape),
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Standardizer:
        """Inverse of ``to_dict`` (float32 tensors).

        Raises:
            ValueError: if ``d`` lacks or has extra keys, or the values do not fit ``shape``.
        """
        keys = {"shape", "mean", "std"}
        if not isinstance(d, dict) or set(d) != keys:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"Standardizer dict must have keys {sorted(keys)}, got {got}")
        shape = tuple(d["shape"])
        size = math.prod(shape)
        if len(d["mean"]) != size or len(d["std"]) != size:
            raise ValueError(
                f"Standardizer dict: shape {list(shape)} needs {size} values, got "
                f"{len(d['mean'])} means and {len(d['std'])} stds"
            )
        mean = torch.tensor(d["mean"], dtype=torch.float32).reshape(shape)
        std = torch.tensor(d["std"], dtype=torch.float32).reshape(shape)
        return cls(mean, std)

    @classmethod
    def identity(cls, sample_shape: tuple[int, ...]) -> Standardizer:
        """The map that changes nothing."""
        return cls(torch.zeros(sample_shape), torch.ones(sample_shape))


@dataclass
class ArrayDataset:
    """A dataset held as tensors, already in model space (standardised).

    Attributes:
        x: samples ``(N, *D)``, float32, finite.
        labels: labels ``(N,)`` int64 in ``[0, num_classes)``, or ``None``.
        num_classes: number of classes (``None`` when unlabelled).
        standardizer: the map from data space to model space (inverted for outputs).
        name: a short description for logs.
        meta: JSON-serialisable facts about the data (see
            :func:`flowmatch.data.registry.load_dataset`); ``meta["class_names"]``, when
            present for labelled data, has one entry per class.
        values: continuous conditions ``(N, C)``, float, finite, in model space (standardised
            by ``values_standardizer``), or ``None``.
        context: context tensors ``(N, *S)`` (a sequence, an image, a point set), float,
            finite, or ``None``.
        values_standardizer: the map from data-space condition values to ``values`` (``None``
            when there are no values or they are used as given).

    Raises:
        ValueError: ``x`` not a finite float ``(N, *D)``; labels, values or context with
            another number of rows, the wrong rank or dtype, or non-finite entries.
    """

    x: Tensor
    labels: Tensor | None = None
    num_classes: int | None = None
    standardizer: Standardizer | None = None
    name: str = "array"
    meta: dict = field(default_factory=dict)
    values: Tensor | None = None
    context: Tensor | None = None
    values_standardizer: Standardizer | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.x, Tensor) or self.x.ndim < 2 or not self.x.is_floating_point():
            raise ValueError(
                f"dataset x must be a float tensor of shape (N, *D), got "
                f"{getattr(self.x, 'shape', type(self.x).__name__)}"
            )
        check_finite(self.x, f"dataset {self.name!r}", hint="remove or impute missing values")
        if self.labels is not None:
            if self.labels.shape != (self.x.shape[0],):
                raise ValueError(
                    f"labels must have shape (N,) = ({self.x.shape[0]},), "
                    f"got {tuple(self.labels.shape)}"
                )
            if self.num_classes is None:
                self.num_classes = int(self.labels.max()) + 1
            lo, hi = int(self.labels.min()), int(self.labels.max())
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(
                    f"labels must lie in [0, {self.num_classes}), got values in [{lo}, {hi}]"
                )
            names = self.meta.get("class_names")
            if names is not None and len(names) != self.num_classes:
                raise ValueError(
                    f"meta['class_names'] must name the {self.num_classes} classes, got "
                    f"{len(names)} names"
                )
        self._check_condition("values", self.values, "(N, C)", matrix=True)
        self._check_condition("context", self.context, "(N, *S)", matrix=False)

    def _check_condition(self, what: str, v: Tensor | None, shape: str, *, matrix: bool) -> None:
        """Values ``(N, C)`` / context ``(N, *S)``: float, finite, one row per sample."""
        if v is None:
            return
        n = self.x.shape[0]
        ok = isinstance(v, Tensor) and v.is_floating_point() and v.ndim >= 1 and len(v) == n
        if not ok or not (v.ndim == 2 if matrix else v.ndim >= 2):
            got = f"{tuple(v.shape)} {v.dtype}" if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(
                f"dataset {what} must be a float tensor of shape {shape} with N = {n}, got {got}"
            )
        check_finite(v, f"dataset {self.name!r} {what}", hint="remove or impute missing values")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape ``D`` of one sample."""
        return tuple(self.x.shape[1:])

    @property
    def cond_kinds(self) -> tuple[str, ...]:
        """The conditioning kinds the data carries (``"labels"``, ``"values"``, ``"context"``)."""
        parts = (("labels", self.labels), ("values", self.values), ("context", self.context))
        return tuple(k for k, v in parts if v is not None)

    def to(self, device: torch.device | str) -> ArrayDataset:
        """Copy of the dataset on ``device``."""

        def move(v: Tensor | None) -> Tensor | None:
            return None if v is None else v.to(device)

        return ArrayDataset(
            self.x.to(device),
            move(self.labels),
            self.num_classes,
            self.standardizer,
            self.name,
            self.meta,
            values=move(self.values),
            context=move(self.context),
            values_standardizer=self.values_standardizer,
        )


class BatchSchedule:
    """Deterministic mini-batches: ``batch_at(step)`` depends only on ``(seed, step, rank)``.

    Each epoch is a fresh permutation of the dataset drawn from ``(seed, epoch)``; with
    ``world_size > 1`` every rank takes its own disjoint shard of that permutation. The last
    incomplete batch of an epoch is dropped.

    Args:
        dataset: the data.
        batch_size: per-rank batch size ``B``.
        seed: base seed (an int).
        rank: this process's rank in data-parallel training, ``0 <= rank < world_size``.
        world_size: number of ranks.

    Raises:
        TypeError: if ``batch_size``, ``seed``, ``rank`` or ``world_size`` is not an int.
        ValueError: if ``batch_size``/``world_size`` < 1, ``rank`` is out of range, or the
            dataset holds fewer than ``batch_size * world_size`` samples.

    Example:
        >>> import torch
        >>> sched = BatchSchedule(ArrayDataset(torch.randn(10, 2)), 4, seed=0)
        >>> sched.batch_at(0).x1.shape, sched.batches_per_epoch
        (torch.Size([4, 2]), 2)
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.dataset = dataset
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.world_size = check_positive_int(world_size, "world_size")
        check_positive_int(rank, "rank", minimum=0)
        if not rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
        self.rank, self.seed = rank, seed
        self.batches_per_epoch = len(dataset) // (batch_size * world_size)
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"dataset {dataset.name!r} has {len(dataset)} samples, fewer than one global "
                f"batch of batch_size*world_size = {batch_size * world_size}; lower batch_size"
            )
        self._epoch: int | None = None
        self._perm: Tensor | None = None

    def _permutation(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            g = step_generator(self.seed, 0x5EED, epoch)
            self._perm = torch.randperm(len(self.dataset), generator=g).to(self.dataset.x.device)
            self._epoch = epoch
        assert self._perm is not None
        return self._perm

    def batch_at(self, step: int) -> Batch:
        """The batch of optimisation step ``step`` (0-based) for this rank.

        Step ``k * batches_per_epoch + j`` takes batch ``j`` of epoch ``k``'s permutation.

        Raises:
            TypeError: if ``step`` is not an int.
            ValueError: if ``step < 0``.
        """
        check_positive_int(step, "step", minimum=0)
        epoch, k = divmod(step, self.batches_per_epoch)
        start = (k * self.world_size + self.rank) * self.batch_size
        idx = self._permutation(epoch)[start : start + self.batch_size]
        ds = self.dataset

        def pick(v: Tensor | None) -> Tensor | None:
            return None if v is None else v[idx]

        return Batch(
            x1=ds.x[idx], labels=pick(ds.labels), values=pick(ds.values), context=pick(ds.context)
        )
