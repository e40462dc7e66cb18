"""Continuous conditions and context in the data layer: files, split, standardisation, batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowmatch.data.batch import ArrayDataset, BatchSchedule
from flowmatch.data.files import read_array_file, read_condition_file, read_csv_table
from flowmatch.data.registry import load_dataset
from flowmatch.data.toy import (
    CONDITIONAL_TOYS,
    GAUSSIANS_RADIUS,
    polar_angle,
    sample_conditional_toy,
    sample_toy,
)

# ------------------------------------------------------------------------- ArrayDataset


def _ds(n: int = 6, **kw) -> ArrayDataset:
    x = torch.arange(2 * n, dtype=torch.float32).reshape(n, 2)
    return ArrayDataset(x, **kw)


def test_dataset_carries_values_and_context_through_batches_and_to():
    n = 12
    x = torch.arange(2 * n, dtype=torch.float32).reshape(n, 2)
    # Each condition is a function of its row, so any misalignment shows.
    ds = ArrayDataset(x, values=x[:, :1] * 10, context=x[:, :, None].repeat(1, 1, 3))
    assert ds.cond_kinds == ("values", "context")
    moved = ds.to("cpu")
    assert torch.equal(moved.values, ds.values) and torch.equal(moved.context, ds.context)
    sched = BatchSchedule(ds, 4, seed=3)
    for step in range(6):
        b = sched.batch_at(step)
        assert b.values.shape == (4, 1) and b.context.shape == (4, 2, 3)
        assert torch.equal(b.values, b.x1[:, :1] * 10)
        assert torch.equal(b.context[:, :, 0], b.x1)
        assert b.cond.values is b.values and b.cond.labels is None
    # Without values/context a batch's cond is the labels tensor itself (unchanged behaviour).
    labelled = ArrayDataset(x, labels=torch.arange(n) % 3)
    b = BatchSchedule(labelled, 4, seed=0).batch_at(0)
    assert isinstance(b.cond, torch.Tensor) and b.values is None


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"values": torch.zeros(6)}, r"values must be a float tensor of shape \(N, C\) with N = 6"),
        ({"values": torch.zeros(5, 1)}, r"values must be .* N = 6, got \(5, 1\)"),
        ({"values": torch.zeros(6, 1, dtype=torch.long)}, r"values must be .*torch.int64"),
        ({"values": [[0.0]] * 6}, r"values must be a float tensor .* got list"),
        ({"context": torch.zeros(6)}, r"context must be a float tensor of shape \(N, \*S\)"),
        ({"context": torch.zeros(7, 2, 2)}, r"context must be .* N = 6, got \(7, 2, 2\)"),
    ],
)
def test_dataset_condition_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        _ds(**kw)
    with pytest.raises(FloatingPointError, match=r"dataset 'array' values has 6 non-finite"):
        _ds(values=torch.full((6, 1), math.nan))


# ------------------------------------------------------------------------- files


def test_npz_cond_and_context_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 2))
    values, context = rng.normal(size=(5, 3)), rng.normal(size=(5, 4, 2))
    np.savez(
        tmp_path / "d.npz", x=x, labels=np.array([1, 1, 0, 2, 2]), cond=values, context=context
    )
    f = read_array_file(tmp_path / "d.npz")
    assert f.labels.tolist() == [1, 1, 0, 2, 2]
    assert torch.equal(f.values, torch.from_numpy(values.astype(np.float32)))
    assert torch.equal(f.context, torch.from_numpy(context.astype(np.float32)))
    # A single unnamed sample array still works next to condition arrays.
    np.savez(tmp_path / "e.npz", pts=x, cond=values)
    assert read_array_file(tmp_path / "e.npz").x.shape == (5, 2)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        (
            {"cond": np.zeros(5)},
            r"'cond' .* must have shape \(N, C\), got \(5,\); reshape to \(N, 1\)",
        ),
        ({"cond": np.zeros((5, 1, 1))}, r"'cond' .* must have shape \(N, C\), got \(5, 1, 1\)"),
        ({"cond": np.zeros((4, 1))}, r"'cond' .* must have 5 rows \(one per sample\)"),
        ({"context": np.zeros((6, 2))}, r"'context' .* must have 5 rows"),
        ({"cond": np.full((5, 1), np.nan)}, r"'cond' .* non-finite"),
        ({"cond": np.array([["a"]] * 5)}, r"'cond' .* must hold real numbers"),
        (
            {"other": np.zeros(5)},
            r"unexpected keys \['other'\].*conditions under \['cond', 'context'\]",
        ),
    ],
)
def test_npz_condition_errors(tmp_path, arrays, match):
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 2)), **arrays)
    with pytest.raises(ValueError, match=match):
        read_array_file(tmp_path / "d.npz")


def test_csv_cond_columns(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,angle,b,y,temp\n1,0.5,2,7,300\n3,-0.5,4,8,310\n5,1.5,6,7,320\n")
    t = read_csv_table(p, label_column="y", cond_columns=["temp", "angle"])
    assert t.columns == ["a", "b"] and t.x.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert t.cond_columns == ["temp", "angle"]  # in the order given
    assert t.values.tolist() == [[300, 0.5], [310, -0.5], [320, 1.5]]
    assert t.labels.tolist() == [0, 1, 0]
    assert read_csv_table(p).values is None


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"cond_columns": ["nope"]}, ValueError, r"cond_columns='nope' is not a column of"),
        ({"cond_columns": ["a", "a"]}, ValueError, r"cond_columns lists a column twice"),
        (
            {"cond_columns": ["y"], "label_column": "y"},
            ValueError,
            "both label_column and one of cond_columns",
        ),
        ({"cond_columns": ["a", "b", "y"]}, ValueError, "no feature columns besides"),
        ({"cond_columns": "a"}, TypeError, "cond_columns must be a list of column names"),
    ],
)
def test_csv_cond_column_errors(tmp_path, kwargs, exc, match):
    p = tmp_path / "t.csv"
    p.write_text("a,b,y\n1,2,0\n3,4,1\n")
    with pytest.raises(exc, match=match):
        read_csv_table(p, **kwargs)


def test_csv_cond_column_needs_header_and_numbers(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match=r"cond_columns='a' needs a header row"):
        read_csv_table(p, cond_columns=["a"])
    p.write_text("a,c\n1,2\n3,x\n")
    with pytest.raises(ValueError, match=r"line 3, column 'c': expected a finite number"):
        read_csv_table(p, cond_columns=["c"])


def test_condition_file(tmp_path):
    p = tmp_path / "c.npz"
    np.savez(p, labels=np.array([0, 2]), cond=np.array([[0.1], [0.2]]))
    c = read_condition_file(p)
    assert c.labels.tolist() == [0, 2] and c.values.dtype == torch.float32 and c.context is None
    np.savez(p, context=np.zeros((1, 3, 4, 4)))
    assert read_condition_file(p).context.shape == (1, 3, 4, 4)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        (
            {"x": np.zeros((2, 2))},
            r"must hold arrays named \['labels', 'cond', 'context'\], got \['x'\]",
        ),
        (
            {"labels": np.array([0.5, 1.0])},
            r"labels in .* must be integer class ids of shape \(N,\)",
        ),
        ({"labels": np.array([0, 1]), "cond": np.zeros((3, 1))}, r"'cond' .* must have 2 rows"),
        (
            {"cond": np.zeros((2, 1)), "context": np.zeros((3, 2))},
            "must have the same number of rows",
        ),
    ],
)
def test_condition_file_errors(tmp_path, arrays, match):
    p = tmp_path / "c.npz"
    np.savez(p, **arrays)
    with pytest.raises(ValueError, match=match):
        read_condition_file(p)


def test_condition_file_refuses_other_files(tmp_path):
    with pytest.raises(ValueError, match=r"must be an .npz"):
        read_condition_file(tmp_path / "c.csv")
    (tmp_path / "c.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a NumPy file"):
        read_condition_file(tmp_path / "c.npz")


# ------------------------------------------------------------------------- load_dataset


def _aligned_npz(path, n: int = 40) -> None:
    x = np.arange(2 * n, dtype=np.float64).reshape(n, 2)
    labels = np.arange(n) % 4
    # cond = 3 x[:, 0] + 1 and context[i] = x[i] repeated: a row mix-up would show.
    np.savez(path, x=x, labels=labels, cond=3 * x[:, :1] + 1, context=np.repeat(x[:, None], 3, 1))


def test_split_keeps_conditions_aligned_and_standardises_values(tmp_path):
    p = tmp_path / "d.npz"
    _aligned_npz(p)
    train, test = load_dataset(p, seed=1, n_test=8)
    assert (len(train), len(test)) == (32, 8)
    for ds in (train, test):
        x = ds.standardizer.inverse(ds.x.double())
        values = ds.values_standardizer.inverse(ds.values.double())
        torch.testing.assert_close(values, 3 * x[:, :1] + 1, rtol=1e-6, atol=1e-4)
        # context is stored as given; x went through the standardiser and back (round-off)
        torch.testing.assert_close(
            ds.context.double(), x[:, None].repeat(1, 3, 1), rtol=0, atol=1e-4
        )
        assert ds.cond_kinds == ("labels", "values", "context")
    # The value standardiser is fitted on the training split only: z-scores there.
    assert train.values_standardizer is test.values_standardizer
    torch.testing.assert_close(
        train.values.double().mean(), torch.tensor(0.0, dtype=torch.float64), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        train.values.double().std(correction=0),
        torch.tensor(1.0, dtype=torch.float64),
        atol=1e-5,
        rtol=0,
    )


def test_standardize_none_leaves_values_as_given(tmp_path):
    p = tmp_path / "d.npz"
    _aligned_npz(p)
    train, _ = load_dataset(p, standardize="none")
    assert train.values_standardizer is None
    torch.testing.assert_close(train.values, 3 * train.x[:, :1] + 1)


def test_csv_dataset_with_cond_columns(tmp_path):
    p = tmp_path / "t.csv"
    rows = "\n".join(f"{i},{2 * i},{i % 3},{10 * i}" for i in range(30))
    p.write_text("a,b,y,angle\n" + rows + "\n")
    train, test = load_dataset(p, label_column="y", cond_columns=["angle"], n_test=6)
    assert train.meta["cond_names"] == ["angle"] and train.meta["columns"] == ["a", "b"]
    for ds in (train, test):
        a = ds.standardizer.inverse(ds.x)[:, 0]
        torch.testing.assert_close(
            ds.values_standardizer.inverse(ds.values)[:, 0], 10 * a, rtol=1e-5, atol=1e-3
        )
    with pytest.raises(ValueError, match=r"cond_columns=\['angle'\] applies to .csv files only"):
        load_dataset(_npz(tmp_path), cond_columns=["angle"])
    with pytest.raises(ValueError, match="cond_columns applies to .csv files only, not to 'moons'"):
        load_dataset("moons", cond_columns=["angle"])


def _npz(tmp_path):
    p = tmp_path / "plain.npz"
    np.savez(p, x=np.arange(20.0).reshape(10, 2))
    return p


def test_conditional_toy():
    assert "8gaussians_angle" in CONDITIONAL_TOYS
    g = torch.Generator().manual_seed(0)
    x, angle = sample_conditional_toy("8gaussians_angle", 2000, generator=g, dtype=torch.float64)
    # The points are those of the base toy's stream, the value is each point's polar angle.
    base = sample_toy(
        "8gaussians", 2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    assert torch.equal(x, base) and angle.shape == (2000, 1)
    torch.testing.assert_close(
        torch.stack([angle[:, 0].cos(), angle[:, 0].sin()], 1) * x.norm(dim=1, keepdim=True), x
    )
    assert angle.min() > -math.pi and angle.max() <= math.pi
    assert torch.equal(polar_angle(torch.tensor([[-1.0, 0.0]])), torch.tensor([[math.pi]]))
    # Continuous: points near a component's direction dominate, but every eighth of the
    # circle between two components is visited too (the condition is not a label).
    sector = torch.floor((angle[:, 0] + math.pi / 8) / (math.pi / 4)) % 8
    assert torch.bincount(sector.long(), minlength=8).min() > 150
    assert (x.norm(dim=1) - GAUSSIANS_RADIUS).abs().mean() < 1.0
    with pytest.raises(ValueError, match="unknown conditional toy dataset 'moons'"):
        sample_conditional_toy("moons", 3, generator=g)


def test_conditional_toy_dataset():
    train, test = load_dataset("8gaussians_angle", n_train=64, n_test=16)
    assert train.labels is None and train.num_classes is None and train.cond_kinds == ("values",)
    assert train.meta["kind"] == "2d" and train.meta["cond_names"] == ["angle"]
    # Samples are not standardised (toy), the angle is ("auto" standardises values).
    assert train.meta["standardize"] == "none" and train.values_standardizer is not None
    for ds in (train, test):
        angle = ds.values_standardizer.inverse(ds.values)
        torch.testing.assert_close(angle, polar_angle(ds.x), rtol=0, atol=1e-6)
