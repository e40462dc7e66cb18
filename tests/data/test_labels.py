"""Tests for encode_labels: the one label rule shared by every file kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowmatch.data.labels import MAX_EXACT_FLOAT_LABEL, encode_labels


@pytest.mark.parametrize(
    ("values", "labels", "names"),
    [
        # uint64 beyond 2**63 would wrap to -1 in a cast to int64: compared as they are
        (np.array([0, 2**64 - 1, 0], dtype=np.uint64), [0, 1, 0], [0, 2**64 - 1]),
        # sparse: two classes, not 10**8 + 1
        (np.array([10**8, 0, 10**8]), [1, 0, 1], [0, 10**8]),
        (np.array([1, -1, -1, 1], dtype=np.int8), [1, 0, 0, 1], [-1, 1]),
        (np.array([True, False, True]), [1, 0, 1], [0, 1]),
        (np.array([3.0, 1.0, -2.0]), [2, 1, 0], [-2, 1, 3]),  # floats holding integers
        (np.array([float(MAX_EXACT_FLOAT_LABEL), 0.0]), [1, 0], [0, 2**53]),  # the edge is in
        (np.array([5, 5, 5]), [0, 0, 0], [5]),
    ],
)
def test_remap_to_sorted_class_indices(values, labels, names):
    got, class_names = encode_labels(values, "y")
    assert got.dtype == torch.int64 and got.tolist() == labels
    assert class_names == names and all(type(v) is int for v in class_names)
    json.dumps(class_names)  # stored with the run


def test_text_labels_when_allowed():
    got, names = encode_labels(np.array(["dog", "cat", "dog"]), "folders", allow_text=True)
    assert got.tolist() == [1, 0, 1] and names == ["cat", "dog"]


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=40))
@settings(max_examples=60, deadline=None)
def test_round_trip_property(raw):
    values = np.array(raw, dtype=np.int64)
    labels, names = encode_labels(values, "y")
    assert names == sorted(set(raw))  # sorted distinct originals
    assert [names[i] for i in labels.tolist()] == raw  # class_names[label] is the original


@pytest.mark.parametrize(
    ("values", "kwargs", "match"),
    [
        (np.array([0.0, 2.5]), {}, r"y, at index 1: expected an integer class label, got 2.5"),
        (
            np.array([0.0, np.nan, np.inf]),
            {},
            r"at index 1: expected a finite integer class label .*got nan \(2 such value\(s\)\)",
        ),
        (np.array([0.0, 1e30]), {}, r"at index 1: .*magnitude <= 2\*\*53 .*got 1e\+30"),
        (np.array([0.0, -(2.0**54)]), {}, r"magnitude <= 2\*\*53"),
        (
            np.array([1.0, 1.5]),
            {"where": lambda i: f"line {i + 2}"},
            r"y, line 3: expected an integer class label, got 1.5",
        ),
        (
            np.array(["a", "b"]),
            {},
            "must be integers, got dtype <U1: text labels are not supported",
        ),
        (np.array([1j, 2j]), {}, "must be integers, got dtype complex128"),
        (np.array([1, None], dtype=object), {}, "must be integers, got dtype object"),
        (np.zeros((2, 1), dtype=int), {}, r"non-empty one-dimensional array, got \(2, 1\)"),
        (np.zeros(0, dtype=int), {}, r"non-empty one-dimensional array, got \(0,\)"),
        ([0, 1], {}, "non-empty one-dimensional array, got list"),
    ],
)
def test_refused(values, kwargs, match):
    with pytest.raises(ValueError, match=match):
        encode_labels(values, "y", **kwargs)
