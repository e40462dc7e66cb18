"""One entry point for every dataset: built-in names and user files, split and standardised.

:func:`load_dataset` returns ``(train, test)`` :class:`~flowmatch.data.batch.ArrayDataset`
objects in *model space* (``z = (x - mean) / std``), both carrying the *same*
:class:`~flowmatch.data.batch.Standardizer`, fitted on the training split only, so that
generated samples are mapped back to data space with ``standardizer.inverse``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from flowmatch.data.batch import ArrayDataset, Standardizer
from flowmatch.data.digits import DIGITS_NUM_CLASSES, digits_split_indices, load_digits
from flowmatch.data.files import ARRAY_SUFFIXES, load_array_file, read_csv_table, read_image_folder
from flowmatch.data.toy import TOY_DATASETS, TOY_NUM_CLASSES, sample_toy
from flowmatch.utils.checks import check_in_choices, check_positive_int
from flowmatch.utils.tensor import step_generator

__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_TOY_SIZES",
    "STD_FLOOR",
    "StandardizeMode",
    "fit_standardizer",
    "load_dataset",
]

logger = logging.getLogger(__name__)

StandardizeMode = Literal["auto", "none", "per_feature", "global"]

#: Names :func:`load_dataset` accepts besides file paths.
BUILTIN_DATASETS: tuple[str, ...] = (*TOY_DATASETS, "digits")
#: Default ``(n_train, n_test)`` of the 2-D toy datasets.
DEFAULT_TOY_SIZES: tuple[int, int] = (100_000, 10_000)
#: Smallest standard deviation used by the fitted standardisers (near-constant features).
STD_FLOOR = 1e-6
# A user file holds out n_test = max(1, N // 10) samples (10 %) unless n_test is given.
_TEST_DIVISOR = 10

# Stream tags for step_generator: the toy train/test sets and the file split use independent
# random streams derived from the user's seed.
_TOY_STREAM, _SPLIT_STREAM = 0x70E, 0x5B17
_MODES = ("auto", "none", "per_feature", "global")


def fit_standardizer(x: Tensor, mode: Literal["none", "per_feature", "global"]) -> Standardizer:
    """Fit ``z = (x - mean) / std`` on data ``x`` ``(N, *D)``.

    - ``"none"``: the identity (``mean = 0``, ``std = 1``).
    - ``"per_feature"``: ``mean_d``, ``std_d`` over the N samples of each entry ``d``.
    - ``"global"``: one mean and one std over all entries of all samples, broadcast to the
      sample shape ``D`` (stored at full shape so ``log_abs_det`` counts every dimension).

    Statistics are computed in float64 (population std, ``ddof = 0``) and floored at
    :data:`STD_FLOOR`, so constant features are centred but never divided by ~0.

    Args:
        x: data-space samples ``(N, *D)``, ``N >= 1``.
        mode: one of ``"none"``, ``"per_feature"``, ``"global"``.

    Returns:
        A float32 :class:`Standardizer` with ``mean``, ``std`` of shape ``D``.

    Raises:
        ValueError: unknown ``mode``.
    """
    check_in_choices(mode, ("none", "per_feature", "global"), "standardize mode")
    shape = tuple(x.shape[1:])
    if mode == "none":
        return Standardizer.identity(shape)
    x64 = x.detach().to(device="cpu", dtype=torch.float64)
    if mode == "per_feature":
        mean, std = x64.mean(0), x64.std(0, correction=0)
    else:
        mean = x64.mean().expand(shape)
        std = x64.std(correction=0).expand(shape)
    std = std.clamp_min(STD_FLOOR)
    return Standardizer(mean.to(torch.float32).clone(), std.to(torch.float32).clone())


@dataclass
class _Raw:
    """Data-space train/test arrays before standardisation."""

    train: tuple[Tensor, Tensor | None]
    test: tuple[Tensor, Tensor | None]
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
    train, test = (
        sample_toy(name, n, generator=step_generator(seed, _TOY_STREAM, i), return_labels=True)
        for i, n in enumerate(sizes)
    )
    return _Raw(train, test, "2d", "none", TOY_NUM_CLASSES[name])


def _digits(n_train: int | None, n_test: int | None) -> _Raw:
    x, labels = load_digits("all")  # read once, then index both fixed splits
    idx_tr, idx_te = digits_split_indices()
    idx_tr = idx_tr[: _take(n_train, len(idx_tr), "n_train", "the digits train split")]
    idx_te = idx_te[: _take(n_test, len(idx_te), "n_test", "the digits test split")]
    train, test = (x[idx_tr], labels[idx_tr]), (x[idx_te], labels[idx_te])
    return _Raw(train, test, "image", "none", DIGITS_NUM_CLASSES)


def _split(
    x: Tensor, labels: Tensor | None, seed: int, n_train: int | None, n_test: int | None, p: Path
) -> tuple[tuple[Tensor, Tensor | None], tuple[Tensor, Tensor | None]]:
    """Seeded held-out split of a user file; each split keeps the file's row order."""
    n = len(x)
    if n < 2:
        raise ValueError(f"{p} has {n} sample(s); a train/test split needs at least 2")
    if n_test is None:
        k_te = max(1, n // _TEST_DIVISOR)
    else:
        k_te = _take(n_test, n - 1, "n_test", f"testing {p} (one must stay for training)")
    k_tr = _take(n_train, n - k_te, "n_train", f"training {p} after holding out {k_te}")
    perm = torch.randperm(n, generator=step_generator(seed, _SPLIT_STREAM))
    idx_te, idx_tr = perm[:k_te].sort().values, perm[k_te : k_te + k_tr].sort().values

    def pick(idx: Tensor) -> tuple[Tensor, Tensor | None]:
        return x[idx], None if labels is None else labels[idx]

    return pick(idx_tr), pick(idx_te)


def _user_file(
    p: Path, seed: int, n_train: int | None, n_test: int | None, label_column: str | None
) -> _Raw:
    suffix = p.suffix.lower()
    if label_column is not None and suffix != ".csv":
        raise ValueError(
            f"label_column={label_column!r} applies to .csv files only, got {str(p)!r}; "
            "store labels under 'labels' in a .npz, or use one subfolder per class"
        )
    meta: dict = {}
    if p.is_dir():
        folder = read_image_folder(p)
        x, labels, kind, meta["class_names"] = folder.x, folder.labels, "image", folder.class_names
    elif suffix == ".csv":
        table = read_csv_table(p, label_column=label_column)
        x, labels, kind, meta["columns"] = table.x, table.labels, "tabular", table.columns
    elif suffix in ARRAY_SUFFIXES:
        x, labels = load_array_file(p)
        kind = "tabular" if x.ndim == 2 else "image" if x.ndim == 4 else "array"
    else:
        raise ValueError(
            f"dataset path {str(p)!r} must be a folder of images or a file ending in "
            f"{[*ARRAY_SUFFIXES, '.csv']}"
        )
    num_classes = None if labels is None else int(labels.max()) + 1
    train, test = _split(x, labels, seed, n_train, n_test, p)
    auto: Literal["per_feature", "global"] = "per_feature" if kind == "tabular" else "global"
    return _Raw(train, test, kind, auto, num_classes, meta)


def load_dataset(
    spec: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    standardize: StandardizeMode = "auto",
    label_column: str | None = None,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Load a built-in or user dataset as standardised ``(train, test)`` splits.

    ``spec`` is a name from :data:`BUILTIN_DATASETS` or a path (a built-in name wins over a
    file of the same name; write ``./moons`` for the file):

    - 2-D toys (``sample_toy``): ``n_train`` (default 100 000) and ``n_test`` (default 10 000)
      fresh samples from two independent streams derived from ``seed``; labels are the
      mixture components. ``meta["kind"] = "2d"``.
    - ``"digits"``: the fixed 1500/297 split of :func:`~flowmatch.data.digits.load_digits`
      (independent of ``seed``), ``(N, 1, 8, 8)`` in ``[-1, 1]``, labels 0..9;
      ``n_train``/``n_test`` keep the first samples of each split. ``meta["kind"] = "image"``.
    - ``.npy``/``.npz`` (:func:`~flowmatch.data.files.load_array_file`), ``.csv``
      (:func:`~flowmatch.data.files.load_csv`) or an image folder
      (:func:`~flowmatch.data.files.load_image_folder`): ``n_test`` (default
      ``max(1, N // 10)``) samples are held out by a permutation seeded by ``seed``, and
      ``n_train`` (default: all the rest) are kept for training; each split keeps file order.

    Standardisation ``z = (x - mean) / std`` is fitted on the training split and applied to
    both. ``"auto"`` chooses ``"none"`` for the toys (already of scale O(1)-O(4)) and digits
    (already in ``[-1, 1]``), ``"per_feature"`` for tables (CSV and ``(N, F)`` arrays), and
    ``"global"`` for images (folders, ``(N, C, H, W)`` and other arrays). See
    :func:`fit_standardizer`.

    Args:
        spec: built-in name or path to a ``.npy``/``.npz``/``.csv`` file or image folder.
        seed: seed of the toy samples and of the held-out split of user files.
        n_train: number of training samples (see above), ``>= 1``, or ``None``.
        n_test: number of test samples, ``>= 1``, or ``None``.
        standardize: ``"auto"``, ``"none"``, ``"per_feature"`` or ``"global"``.
        label_column: for CSV files, the header name of the integer label column.

    Returns:
        ``(train, test)``: datasets of float32 ``(N, *D)`` model-space samples sharing one
        standardizer; ``meta`` holds ``kind`` (``"2d"``, ``"tabular"``, ``"image"`` or
        ``"array"``), ``source`` (``spec``), ``split``, ``standardize`` (the resolved mode) and,
        when known, ``class_names`` or ``columns``.

    Raises:
        TypeError: ``spec``, ``seed``, ``n_train``, ``n_test`` of the wrong type.
        ValueError: unknown name or missing path (the message lists the built-in names), an
            unsupported file type, ``label_column`` for a non-CSV spec, sizes larger than the
            data allows, an unknown ``standardize``, or any error of the file loaders.

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
        raw = (
            _toy(name, seed, n_train, n_test) if name in TOY_DATASETS else _digits(n_train, n_test)
        )
    elif Path(name).exists():
        raw = _user_file(Path(name), seed, n_train, n_test, label_column)
    else:
        raise ValueError(
            f"unknown dataset {name!r}: not a built-in name {list(BUILTIN_DATASETS)} and no "
            "such file or folder"
        )
    mode = raw.auto_mode if standardize == "auto" else standardize
    std = fit_standardizer(raw.train[0], mode)
    meta = {"kind": raw.kind, "source": name, "standardize": mode, **raw.meta}
    short = Path(name).name or name
    train, test = (
        ArrayDataset(
            std.transform(x),
            labels,
            raw.num_classes if labels is not None else None,
            std,
            f"{short}/{split}",
            {**meta, "split": split},
        )
        for split, (x, labels) in (("train", raw.train), ("test", raw.test))
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
