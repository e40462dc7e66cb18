"""One entry point for every dataset: built-in names and user files, split and standardised.

:func:`load_dataset` returns ``(train, test)`` :class:`~flowmatch.data.batch.ArrayDataset`
objects in *model space* (``z = (x - mean) / std``), both carrying the *same*
:class:`~flowmatch.data.batch.Standardizer`, fitted on the training split only, so that
generated samples are mapped back to data space with ``standardizer.inverse``.

User files are split by :func:`split_indices`: a seeded shuffle, stratified by label when the
file is labelled, whose splits come back in shuffled order (any prefix is a random sample).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from flowmatch.data.batch import ArrayDataset, Standardizer
from flowmatch.data.digits import DIGITS_NUM_CLASSES, digits_split_indices, load_digits
from flowmatch.data.files import (
    ARRAY_SUFFIXES,
    read_array_file,
    read_csv_table,
    read_image_folder,
)
from flowmatch.data.toy import (
    CONDITIONAL_TOYS,
    TOY_DATASETS,
    TOY_NUM_CLASSES,
    sample_conditional_toy,
    sample_toy,
)
from flowmatch.utils.checks import check_in_choices, check_positive_int
from flowmatch.utils.tensor import step_generator

__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_TOY_SIZES",
    "STD_FLOOR",
    "StandardizeMode",
    "constant_features",
    "fit_standardizer",
    "load_dataset",
    "split_indices",
]

logger = logging.getLogger(__name__)

StandardizeMode = Literal["auto", "none", "per_feature", "global"]

#: Names :func:`load_dataset` accepts besides file paths.
BUILTIN_DATASETS: tuple[str, ...] = (*TOY_DATASETS, *CONDITIONAL_TOYS, "digits")
#: Default ``(n_train, n_test)`` of the 2-D toy datasets.
DEFAULT_TOY_SIZES: tuple[int, int] = (100_000, 10_000)
#: Smallest standard deviation the fitted standardisers divide by: the smallest normal float32.
#: A feature whose std is below it (or whose training values are all equal) is *constant*:
#: centred and left unscaled (``std = 1``), see :func:`fit_standardizer`.
STD_FLOOR = float(torch.finfo(torch.float32).tiny)
# A user file holds out n_test = max(1, N // 10) samples (10 %) unless n_test is given.
_TEST_DIVISOR = 10

# Stream tags for step_generator: the toy train/test sets and the file split use independent
# random streams derived from the user's seed.
_TOY_STREAM, _SPLIT_STREAM = 0x70E, 0x5B17
_MODES = ("auto", "none", "per_feature", "global")


def _statistics(x: Tensor, mode: Literal["per_feature", "global"]) -> tuple[Tensor, Tensor, Tensor]:
    """Float64 ``(mean, std, constant)`` of shape ``D``; ``constant`` is a bool mask."""
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (N, *D) with N >= 1, got {tuple(x.shape)}")
    shape = tuple(x.shape[1:])
    x64 = x.detach().to(device="cpu", dtype=torch.float64)
    if mode == "per_feature":
        mean, std = x64.mean(0), x64.std(0, correction=0)
        equal = x64.amax(0) == x64.amin(0)
        first = x64[0]
    else:
        mean, std = x64.mean().expand(shape), x64.std(correction=0).expand(shape)
        equal = (x64.amax() == x64.amin()).expand(shape)
        first = x64.flatten()[0].expand(shape)
    constant = equal | (std < STD_FLOOR)
    # A constant feature is centred on its own value, so it becomes exactly 0 (a float64 mean of
    # equal values can be one rounding step off).
    mean = torch.where(equal, first, mean)
    return mean, std, constant


def constant_features(x: Tensor, mode: Literal["per_feature", "global"]) -> Tensor:
    """Which entries of a sample :func:`fit_standardizer` treats as constant.

    Args:
        x: data-space samples ``(N, *D)``, ``N >= 1``.
        mode: ``"per_feature"`` or ``"global"``.

    Returns:
        A bool tensor of shape ``D``: ``True`` where the values of ``x`` are all equal or their
        std is below :data:`STD_FLOOR`.

    Raises:
        ValueError: ``x`` is not ``(N, *D)`` with ``N >= 1``.
    """
    return _statistics(x, mode)[2]


def fit_standardizer(x: Tensor, mode: Literal["none", "per_feature", "global"]) -> Standardizer:
    """Fit ``z = (x - mean) / std`` on data ``x`` ``(N, *D)``.

    - ``"none"``: the identity (``mean = 0``, ``std = 1``).
    - ``"per_feature"``: ``mean_d``, ``std_d`` over the N samples of each entry ``d``.
    - ``"global"``: one mean and one std over all entries of all samples, broadcast to the
      sample shape ``D`` (stored at full shape so ``log_abs_det`` counts every dimension).

    Statistics are computed in float64 (population std, ``ddof = 0``). A *constant* feature
    (all its values equal, or a std below :data:`STD_FLOOR`, which float32 cannot divide by)
    is centred on its value and left unscaled: ``std = 1``. It becomes exactly 0 in model
    space, nothing is divided by ~0, and it adds nothing to ``log_abs_det`` (a floor such as
    ``1e-6`` would add ``log 1e-6 = -13.8`` nats per constant feature to every data-space NLL).
    Every other feature is divided by its own std, however small: the rule does not depend
    on the data's units.

    Args:
        x: data-space samples ``(N, *D)``, ``N >= 1``, finite.
        mode: one of ``"none"``, ``"per_feature"``, ``"global"``.

    Returns:
        A float32 :class:`Standardizer` with ``mean``, ``std`` of shape ``D``.

    Raises:
        ValueError: unknown ``mode``, or ``x`` not ``(N, *D)`` with ``N >= 1``.

    Example:
        >>> import torch
        >>> x = torch.tensor([[0.0, 3.0], [4.0, 3.0]])  # the second feature is constant
        >>> std = fit_standardizer(x, "per_feature")
        >>> std.mean.tolist(), std.std.tolist(), std.transform(x).tolist()
        ([2.0, 3.0], [2.0, 1.0], [[-1.0, 0.0], [1.0, 0.0]])
    """
    check_in_choices(mode, ("none", "per_feature", "global"), "standardize mode")
    if mode == "none":
        return Standardizer.identity(tuple(x.shape[1:]))
    mean, std, constant = _statistics(x, mode)
    std = torch.where(constant, torch.ones_like(std), std)
    return Standardizer(mean.to(torch.float32).clone(), std.to(torch.float32).clone())


class _Rows(NamedTuple):
    """Data-space rows of one split: samples and, aligned with them, their conditions."""

    x: Tensor
    labels: Tensor | None
    values: Tensor | None = None
    context: Tensor | None = None

    def pick(self, idx: Tensor) -> _Rows:
        """The rows ``idx`` of every part (so a split keeps conditions with their samples)."""
        x, labels, values, context = (None if v is None else v[idx] for v in self)
        assert x is not None
        return _Rows(x, labels, values, context)


@dataclass
class _Raw:
    """Data-space train/test arrays before standardisation."""

    train: _Rows
    test: _Rows
    kind: str
    auto_mode: Literal["none", "per_feature", "global"]
    num_classes: int | None
    meta: dict = field(default_factory=dict)


def _check_size(value: int | None, name: str) -> int | None:
    return None if value is None else check_positive_int(value, name)


def _take(n: int | None, available: int, name: str, what: str) -> int:
    if n is None:
        return available
    if n > available:
        raise ValueError(f"{name}={n} exceeds the {available} samples available for {what}")
    return n


def _toy(name: str, seed: int, n_train: int | None, n_test: int | None) -> _Raw:
    sizes = (n_train or DEFAULT_TOY_SIZES[0], n_test or DEFAULT_TOY_SIZES[1])
    # Train and test come from different streams of the same seed: independent samples.
    gens = [step_generator(seed, _TOY_STREAM, i) for i in range(2)]
    if name in CONDITIONAL_TOYS:  # points with their continuous condition, no labels
        drawn = [
            sample_conditional_toy(name, n, generator=g) for n, g in zip(sizes, gens, strict=True)
        ]
        train, test = (_Rows(x, None, values) for x, values in drawn)
        return _Raw(train, test, "2d", "none", None, {"cond_names": ["angle"]})
    train, test = (
        _Rows(*sample_toy(name, n, generator=g, return_labels=True))
        for n, g in zip(sizes, gens, strict=True)
    )
    k = TOY_NUM_CLASSES[name]
    return _Raw(train, test, "2d", "none", k, {"class_names": list(range(k))})


def _digits(n_train: int | None, n_test: int | None) -> _Raw:
    x, labels = load_digits("all")  # read once, then index both fixed splits
    idx_tr, idx_te = digits_split_indices()
    idx_tr = idx_tr[: _take(n_train, len(idx_tr), "n_train", "the digits train split")]
    idx_te = idx_te[: _take(n_test, len(idx_te), "n_test", "the digits test split")]
    train, test = _Rows(x, labels).pick(idx_tr), _Rows(x, labels).pick(idx_te)
    names = list(range(DIGITS_NUM_CLASSES))
    return _Raw(train, test, "image", "none", DIGITS_NUM_CLASSES, {"class_names": names})


def _allocate(counts: Tensor, k: int, g: torch.Generator, *, lo: Tensor, hi: Tensor) -> Tensor:
    """Split ``k`` among classes of sizes ``counts`` by largest remainder, within ``[lo, hi]``.

    Hamilton's method: every class gets ``floor(k c / N)``, and the samples left go one each
    to the classes with the largest remainders (ties at random). Without binding bounds each
    class gets its quota ``k c / N`` rounded down or up; the bounds are relaxed (to 0 and to
    ``c``) when they cannot all hold.
    """
    if int(lo.sum()) > k:
        lo = torch.zeros_like(lo)
    if int(hi.sum()) < k:
        hi = counts.clone()
    quota = counts.to(torch.float64) * (k / float(counts.sum()))
    alloc = torch.minimum(torch.maximum(quota.floor().long(), lo), hi)
    tie = torch.randperm(len(counts), generator=g)
    while (left := k - int(alloc.sum())) != 0:
        room = alloc < hi if left > 0 else alloc > lo
        # Most under-served first when adding, most over-served first when removing.
        urgency = (quota - alloc) if left > 0 else (alloc - quota)
        cand = tie[room[tie]]
        cand = cand[torch.sort(urgency[cand], descending=True, stable=True).indices]
        assert len(cand) > 0, "bounds were relaxed to a feasible range"
        alloc[cand[: abs(left)]] += 1 if left > 0 else -1
    return alloc


def _stratified_pick(labels: Tensor, k: int, g: torch.Generator, *, for_test: bool) -> Tensor:
    """Positions of ``k`` of ``labels``, each class in proportion (:func:`_allocate`).

    For a test set (``for_test``) a class of >= 2 samples gives at least one and keeps at least
    one; otherwise every class present gives at least one. Members of a class are random.
    """
    n = len(labels)
    counts = torch.bincount(labels)
    if for_test:
        lo, hi = (counts >= 2).long(), (counts - 1).clamp_min(0)
    else:
        lo, hi = (counts >= 1).long(), counts
    take = _allocate(counts, k, g, lo=lo, hi=hi)
    by_class = torch.argsort(labels * n + torch.randperm(n, generator=g))  # random in a class
    cls = labels[by_class]
    rank = torch.arange(n) - (torch.cumsum(counts, 0) - counts)[cls]
    return by_class[rank < take[cls]]


def split_indices(
    n: int,
    labels: Tensor | None,
    seed: int,
    n_train: int | None = None,
    n_test: int | None = None,
    *,
    name: str = "the data",
) -> tuple[Tensor, Tensor]:
    """Seeded train/test split of ``n`` samples, stratified by label when labels are given.

    ``n_test`` (default ``max(1, n // 10)``) samples are held out and ``n_train`` (default: all
    the rest) are kept for training.

    - Unlabelled: the first ``n_test`` entries of a seeded permutation are the test set, the
      next ``n_train`` the training set.
    - Labelled (class indices ``0..K-1``): class ``k`` of ``c_k`` samples gives the test set
      its quota ``n_test * c_k / n`` rounded down or up (largest remainders, ties at random);
      besides, a class of ``>= 2`` samples gives at least one test sample (when ``n_test``
      allows one per such class; these are taken from the quotas of the others) and keeps at
      least one for training (when ``n_test <= n - K``); a class of one sample stays in
      training. A smaller ``n_train`` is drawn from the rest the same way (at least one sample
      per class when it allows). Which rows of a class are taken is random, so the result does
      not depend on how the file is sorted.

    Both index sets are returned in shuffled order: any prefix is a random sample of its split.
    The result is a pure function of ``(n, labels, seed, n_train, n_test)``.

    Args:
        n: number of samples, ``>= 2``.
        labels: int64 ``(n,)`` class indices ``0..K-1``, or ``None``.
        seed: the split's seed.
        n_train: training samples, ``1 <= n_train <= n - n_test``, or ``None``.
        n_test: test samples, ``1 <= n_test <= n - 1``, or ``None``.
        name: how error messages name the data (e.g. its path).

    Returns:
        ``(train_idx, test_idx)``: disjoint int64 index tensors.

    Raises:
        TypeError: ``n``, ``seed``, ``n_train``, ``n_test`` not ints, ``labels`` not an integer
            tensor.
        ValueError: ``n < 2``, sizes larger than the data allows, ``labels`` not of shape
            ``(n,)`` or negative.
    """
    check_positive_int(n, "n", minimum=0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
    n_train, n_test = _check_size(n_train, "n_train"), _check_size(n_test, "n_test")
    if labels is not None:
        if not isinstance(labels, Tensor) or labels.dtype != torch.int64:
            got = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
            raise TypeError(f"labels must be an int64 tensor of class indices, got {got}")
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape (n,) = ({n},), got {tuple(labels.shape)}")
        if n and int(labels.min()) < 0:
            raise ValueError(f"labels must be class indices >= 0, got {int(labels.min())}")
    if n < 2:
        raise ValueError(f"{name} has {n} sample(s); a train/test split needs at least 2")
    if n_test is None:
        k_te = max(1, n // _TEST_DIVISOR)
    else:
        k_te = _take(n_test, n - 1, "n_test", f"testing {name} (one must stay for training)")
    k_tr = _take(n_train, n - k_te, "n_train", f"training {name} after holding out {k_te}")
    g = step_generator(seed, _SPLIT_STREAM)
    if labels is None:
        perm = torch.randperm(n, generator=g)
        return perm[k_te : k_te + k_tr], perm[:k_te]
    idx_te = _stratified_pick(labels, k_te, g, for_test=True)
    in_test = torch.zeros(n, dtype=torch.bool)
    in_test[idx_te] = True
    rest = torch.nonzero(~in_test).flatten()
    if k_tr < len(rest):
        rest = rest[_stratified_pick(labels[rest], k_tr, g, for_test=False)]
    # Membership is stratified; the order is a fresh uniform shuffle of each split.
    idx_tr = rest[torch.randperm(len(rest), generator=g)]
    idx_te = idx_te[torch.randperm(k_te, generator=g)]
    return idx_tr, idx_te


def _split(
    rows: _Rows, seed: int, n_train: int | None, n_test: int | None, p: Path
) -> tuple[_Rows, _Rows]:
    """Seeded (stratified when labelled) held-out split of a user file, in shuffled order.

    Conditions (values, context) are indexed with their samples: rows stay aligned.
    """
    idx_tr, idx_te = split_indices(len(rows.x), rows.labels, seed, n_train, n_test, name=str(p))
    return rows.pick(idx_tr), rows.pick(idx_te)


def _read_user_file(
    p: Path, label_column: str | None, grayscale: bool | None, cond_columns: Sequence[str] | None
) -> tuple[_Rows, list[int] | list[str], str, dict]:
    """``(rows, class_names, kind, meta)`` of a user file or image folder."""
    suffix = p.suffix.lower()
    data_suffixes = [*ARRAY_SUFFIXES, ".csv"]
    if label_column is not None and suffix != ".csv":
        raise ValueError(
            f"label_column={label_column!r} applies to .csv files only, got {str(p)!r}; "
            "store labels under 'labels' in a .npz, or use one subfolder per class"
        )
    if cond_columns and suffix != ".csv":
        raise ValueError(
            f"cond_columns={list(cond_columns)!r} applies to .csv files only, got {str(p)!r}; "
            "store continuous conditions under 'cond' in a .npz"
        )
    if grayscale is not None and not p.is_dir():
        raise ValueError(f"grayscale={grayscale!r} applies to image folders only, got {str(p)!r}")
    if p.is_dir():
        if suffix in data_suffixes:
            raise ValueError(
                f"{str(p)!r} is a folder, but its name ends in {suffix}: pass the {suffix} file "
                "itself, or rename the folder if it holds images"
            )
        folder = read_image_folder(p, grayscale=grayscale)
        return _Rows(folder.x, folder.labels), folder.class_names, "image", {}
    if suffix == ".csv":
        table = read_csv_table(p, label_column=label_column, cond_columns=cond_columns)
        meta: dict = {"columns": table.columns}
        if table.cond_columns:
            meta["cond_names"] = table.cond_columns
        return _Rows(table.x, table.labels, table.values), table.class_names, "tabular", meta
    if suffix in ARRAY_SUFFIXES:
        arrays = read_array_file(p)
        x = arrays.x
        kind = "tabular" if x.ndim == 2 else "image" if x.ndim == 4 else "array"
        rows = _Rows(x, arrays.labels, arrays.values, arrays.context)
        return rows, arrays.class_names, kind, {}
    raise ValueError(
        f"dataset path {str(p)!r} must be a folder of images or a file ending in {data_suffixes}"
    )


def _user_file(
    p: Path,
    seed: int,
    n_train: int | None,
    n_test: int | None,
    label_column: str | None,
    grayscale: bool | None,
    cond_columns: Sequence[str] | None = None,
) -> _Raw:
    rows, class_names, kind, meta = _read_user_file(p, label_column, grayscale, cond_columns)
    x, labels = rows.x, rows.labels
    if len(x) >= 2 and bool((x == x[0]).all()):
        raise ValueError(
            f"all {len(x)} samples in {p} are identical: there is nothing to learn (and no "
            "distance between samples to evaluate with)"
        )
    num_classes = None
    if labels is not None:
        meta["class_names"] = class_names
        num_classes = len(class_names)
    train, test = _split(rows, seed, n_train, n_test, p)
    auto: Literal["per_feature", "global"] = "per_feature" if kind == "tabular" else "global"
    return _Raw(train, test, kind, auto, num_classes, meta)


def _dataset(
    rows: _Rows,
    num_classes: int | None,
    std: Standardizer,
    values_std: Standardizer | None,
    name: str,
    meta: dict,
) -> ArrayDataset:
    """One split in model space (samples and, when fitted, condition values standardised)."""
    values = rows.values
    if values is not None and values_std is not None:
        values = values_std.transform(values)
    return ArrayDataset(
        std.transform(rows.x),
        rows.labels,
        num_classes if rows.labels is not None else None,
        std,
        name,
        meta,
        values=values,
        context=rows.context,
        values_standardizer=values_std,
    )


def load_dataset(
    spec: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    standardize: StandardizeMode = "auto",
    label_column: str | None = None,
    grayscale: bool | None = None,
    cond_columns: Sequence[str] | None = None,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Load a built-in or user dataset as standardised ``(train, test)`` splits.

    ``spec`` is a name from :data:`BUILTIN_DATASETS` or a path (a built-in name wins over a
    file of the same name; write ``./moons`` for the file):

    - 2-D toys (``sample_toy``): ``n_train`` (default 100 000) and ``n_test`` (default 10 000)
      fresh samples from two independent streams derived from ``seed``; labels are the
      mixture components. ``meta["kind"] = "2d"``. The conditional toys
      (:data:`~flowmatch.data.toy.CONDITIONAL_TOYS`, e.g. ``"8gaussians_angle"``) carry no
      labels but one continuous condition value per point (the polar angle).
    - ``"digits"``: the fixed 1500/297 split of :func:`~flowmatch.data.digits.load_digits`
      (independent of ``seed``), ``(N, 1, 8, 8)`` in ``[-1, 1]``, labels 0..9;
      ``n_train``/``n_test`` keep the first samples of each split. ``meta["kind"] = "image"``.
    - ``.npy``/``.npz`` (:func:`~flowmatch.data.files.load_array_file`), ``.csv``
      (:func:`~flowmatch.data.files.load_csv`) or an image folder
      (:func:`~flowmatch.data.files.load_image_folder`): ``n_test`` (default
      ``max(1, N // 10)``) samples are held out and ``n_train`` (default: all the rest) kept
      for training by :func:`split_indices`: a shuffle seeded by ``seed``, stratified by label
      when the file is labelled; both splits are in shuffled order (a prefix is a random
      sample). Labels are the file's values remapped to ``0..K-1`` in sorted order; the
      original values are ``meta["class_names"]``. A file whose samples are all identical is
      refused.

    Standardisation ``z = (x - mean) / std`` is fitted on the training split and applied to
    both. ``"auto"`` chooses ``"none"`` for the toys (already of scale O(1)-O(4)) and digits
    (already in ``[-1, 1]``), ``"per_feature"`` for tables (CSV and ``(N, F)`` arrays), and
    ``"global"`` for images (folders, ``(N, C, H, W)`` and other arrays). A feature that is
    constant in the training split is centred and left unscaled (``std = 1``); see
    :func:`fit_standardizer`.

    Conditions travel with their samples through the split: continuous values ``(N, C)``
    (CSV ``cond_columns``, the ``"cond"`` array of an ``.npz``, the angle of
    ``"8gaussians_angle"``) and context tensors ``(N, *S)`` (the ``"context"`` array of an
    ``.npz``). Condition values are standardised per column with the training split's
    statistics (``values_standardizer``; a constant column gets ``std = 1``) unless
    ``standardize = "none"``: their units are arbitrary, like table columns, so ``"auto"``
    standardises them for every data kind, also where it leaves the samples alone (toys).
    Context tensors are used as stored.

    Args:
        spec: built-in name or path to a ``.npy``/``.npz``/``.csv`` file or image folder.
        seed: seed of the toy samples and of the held-out split of user files.
        n_train: number of training samples (see above), ``>= 1``, or ``None``.
        n_test: number of test samples, ``>= 1``, or ``None``.
        standardize: ``"auto"``, ``"none"``, ``"per_feature"`` or ``"global"``.
        label_column: for CSV files, the header name of the integer label column.
        cond_columns: for CSV files, header names of continuous condition columns.
        grayscale: for image folders, ``None`` (keep the images' mode), ``True`` (convert
            to 1 channel) or ``False`` (to RGB); see
            :func:`~flowmatch.data.files.load_image_folder`.

    Returns:
        ``(train, test)``: datasets of float32 ``(N, *D)`` model-space samples sharing one
        standardizer; ``meta`` holds ``kind`` (``"2d"``, ``"tabular"``, ``"image"`` or
        ``"array"``), ``source`` (``spec``), ``split``, ``standardize`` (the resolved mode),
        ``constant_features`` (how many entries of a sample were constant in the training
        split, see :func:`fit_standardizer`), ``class_names`` for labelled data (the original
        label of each class ``0..K-1``: ints, or folder names), ``columns`` for CSV files and
        ``cond_names`` (the names of the condition values, where known).

    Raises:
        TypeError: ``spec``, ``seed``, ``n_train``, ``n_test`` of the wrong type.
        ValueError: unknown name or missing path (the message lists the built-in names), an
            unsupported file type, a folder named like a data file (``x.npy/``),
            ``label_column`` for a non-CSV spec, ``grayscale`` for a non-folder spec, a file
            whose samples are all identical, sizes larger than the data allows, an unknown
            ``standardize``, or any error of the file loaders.

    Example:
        >>> train, test = load_dataset("moons", n_train=512, n_test=128)
        >>> len(train), train.sample_shape, train.meta["kind"]
        (512, (2,), '2d')
        >>> x_data = train.standardizer.inverse(train.x)  # back to data space
    """
    if not isinstance(spec, str | os.PathLike):
        raise TypeError(f"spec must be a dataset name or path, got {type(spec).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
    n_train, n_test = _check_size(n_train, "n_train"), _check_size(n_test, "n_test")
    check_in_choices(standardize, _MODES, "standardize")
    name = os.fspath(spec)
    if name in BUILTIN_DATASETS:
        if label_column is not None:
            raise ValueError(f"label_column applies to .csv files only, not to {name!r}")
        if grayscale is not None:
            raise ValueError(f"grayscale applies to image folders only, not to {name!r}")
        if cond_columns:
            raise ValueError(f"cond_columns applies to .csv files only, not to {name!r}")
        raw = _digits(n_train, n_test) if name == "digits" else _toy(name, seed, n_train, n_test)
    elif Path(name).exists():
        raw = _user_file(Path(name), seed, n_train, n_test, label_column, grayscale, cond_columns)
    else:
        raise ValueError(
            f"unknown dataset {name!r}: not a built-in name {list(BUILTIN_DATASETS)} and no "
            "such file or folder"
        )
    mode = raw.auto_mode if standardize == "auto" else standardize
    std = fit_standardizer(raw.train[0], mode)
    n_constant = 0 if mode == "none" else int(constant_features(raw.train[0], mode).sum())
    if n_constant:
        logger.info(
            "dataset %s: %d of %d feature entries are constant in the training split: centred, "
            "not scaled (std = 1)",
            name,
            n_constant,
            std.mean.numel(),
        )
    meta = {
        "kind": raw.kind,
        "source": name,
        "standardize": mode,
        "constant_features": n_constant,
        **raw.meta,
    }
    values_std = None
    if raw.train.values is not None and standardize != "none":  # "auto" standardises values
        values_std = fit_standardizer(raw.train.values, "per_feature")
    short = Path(name).name or name
    train, test = (
        _dataset(
            rows, raw.num_classes, std, values_std, f"{short}/{split}", {**meta, "split": split}
        )
        for split, rows in (("train", raw.train), ("test", raw.test))
    )
    logger.info(
        "dataset %s: %d train / %d test samples of shape %s, kind=%s, standardize=%s",
        name,
        len(train),
        len(test),
        train.sample_shape,
        raw.kind,
        mode,
    )
    return train, test
