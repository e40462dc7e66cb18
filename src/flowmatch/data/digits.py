"""The 8x8 handwritten digits bundled with scikit-learn, with a fixed train/test split.

``sklearn.datasets.load_digits`` reads a file shipped inside the scikit-learn package (1797
images of 8 x 8 pixels, integer intensities 0..16, labels 0..9): nothing is downloaded.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from flowmatch.utils.checks import check_in_choices

__all__ = [
    "DIGITS_NUM_CLASSES",
    "DIGITS_N_TEST",
    "DIGITS_N_TRAIN",
    "DIGITS_SPLIT_SEED",
    "digits_split_indices",
    "load_digits",
]

#: Total number of images in the bundled data set.
DIGITS_N_TOTAL = 1797
#: Size of the fixed training split.
DIGITS_N_TRAIN = 1500
#: Size of the fixed test split (the remaining images).
DIGITS_N_TEST = DIGITS_N_TOTAL - DIGITS_N_TRAIN
#: Seed of the permutation that defines the split (never changes).
DIGITS_SPLIT_SEED = 0
#: Number of classes (digits 0..9).
DIGITS_NUM_CLASSES = 10


def digits_split_indices() -> tuple[Tensor, Tensor]:
    """Indices into the 1797 bundled images of the fixed train and test splits.

    The split is ``perm[:1500]`` (train) and ``perm[1500:]`` (test) with
    ``perm = numpy.random.RandomState(0).permutation(1797)``. ``RandomState`` is NumPy's
    frozen legacy stream, guaranteed to give the same permutation in every NumPy version, so
    the split is the same everywhere and forever. It is not stratified; every class has at
    least 20 test images.

    Returns:
        ``(train_idx (1500,), test_idx (297,))`` int64 tensors; disjoint, together
        ``0..1796``.
    """
    perm = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(DIGITS_N_TOTAL)
    perm_t = torch.from_numpy(perm.astype(np.int64))
    return perm_t[:DIGITS_N_TRAIN], perm_t[DIGITS_N_TRAIN:]


def load_digits(split: Literal["train", "test", "all"] = "train") -> tuple[Tensor, Tensor]:
    """The 8x8 digits images scaled to ``[-1, 1]``, with their labels.

    ``x = pixels / 8 - 1`` maps the integer intensities 0..16 onto ``[-1, 1]`` (a multiple
    of 1/8).

    Args:
        split: ``"train"`` (1500 images), ``"test"`` (297) or ``"all"`` (1797, file order);
            see :func:`digits_split_indices` for how the split is drawn.

    Returns:
        ``(x, labels)``: images ``(N, 1, 8, 8)`` float32 in ``[-1, 1]`` and labels ``(N,)``
        int64 in ``0..9``.

    Raises:
        ValueError: unknown ``split``.

    Example:
        >>> x, y = load_digits("test")
        >>> tuple(x.shape), tuple(y.shape)
        ((297, 1, 8, 8), (297,))
    """
    check_in_choices(split, ("train", "test", "all"), "digits split")
    # Imported here: sklearn takes a noticeable time to import and only this loader needs it.
    from sklearn.datasets import load_digits as _sklearn_load_digits

    bunch = _sklearn_load_digits()
    x = torch.from_numpy(np.asarray(bunch.data, dtype=np.float32)).reshape(-1, 1, 8, 8)
    x = x / 8.0 - 1.0
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    if split == "all":
        return x, labels
    train_idx, test_idx = digits_split_indices()
    idx = train_idx if split == "train" else test_idx
    return x[idx], labels[idx]
