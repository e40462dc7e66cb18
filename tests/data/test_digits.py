"""Tests for the bundled 8x8 digits and their fixed split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowmatch.data.digits import (
    DIGITS_N_TEST,
    DIGITS_N_TRAIN,
    digits_split_indices,
    load_digits,
)


@pytest.mark.parametrize(("split", "n"), [("train", 1500), ("test", 297), ("all", 1797)])
def test_sizes_shapes_and_ranges(split, n):
    x, labels = load_digits(split)
    assert x.shape == (n, 1, 8, 8) and x.dtype == torch.float32
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert set(labels.tolist()) == set(range(10))  # every class present in every split
    assert x.min() >= -1 and x.max() <= 1
    # x = pixel / 8 - 1 with integer pixels 0..16: (x + 1) * 8 is an integer in [0, 16]
    pixels = (x.double() + 1) * 8
    assert torch.equal(pixels, pixels.round()) and pixels.min() == 0 and pixels.max() == 16


def test_split_sizes_match_constants():
    assert DIGITS_N_TRAIN == 1500 and DIGITS_N_TEST == 297


def test_split_is_disjoint_and_complete():
    train_idx, test_idx = digits_split_indices()
    assert train_idx.shape == (1500,) and test_idx.shape == (297,)
    both = torch.cat([train_idx, test_idx])
    assert torch.equal(both.sort().values, torch.arange(1797))  # a partition of 0..1796


def test_splits_are_the_indexed_rows_of_all():
    x_all, y_all = load_digits("all")
    train_idx, test_idx = digits_split_indices()
    for split, idx in (("train", train_idx), ("test", test_idx)):
        x, y = load_digits(split)
        assert torch.equal(x, x_all[idx]) and torch.equal(y, y_all[idx])


def test_split_is_deterministic_and_ignores_global_rng():
    np.random.seed(123)
    torch.manual_seed(123)
    a = load_digits("train")
    np.random.seed(7)
    torch.manual_seed(7)
    b = load_digits("train")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(digits_split_indices()[0], digits_split_indices()[0])


def test_unknown_split():
    with pytest.raises(
        ValueError, match=r"unknown digits split 'val'; choose one of \['all', 'test', 'train'\]"
    ):
        load_digits("val")  # type: ignore[arg-type]
