"""Tests for load_dataset: every spec kind, the split, and the shared standardiser."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from flowmatch.data.batch import ArrayDataset
from flowmatch.data.registry import (
    BUILTIN_DATASETS,
    DEFAULT_TOY_SIZES,
    STD_FLOOR,
    fit_standardizer,
    load_dataset,
)
from flowmatch.data.toy import TOY_DATASETS, TOY_NUM_CLASSES

F64 = torch.float64


def _data_space(ds: ArrayDataset) -> torch.Tensor:
    return ds.standardizer.inverse(ds.x.double())


def _check_pair(train: ArrayDataset, test: ArrayDataset, kind: str, source: str) -> None:
    assert train.standardizer is test.standardizer  # one map, fitted on train, for both
    assert train.sample_shape == test.sample_shape
    assert train.x.dtype == test.x.dtype == torch.float32
    assert train.meta["kind"] == test.meta["kind"] == kind
    assert train.meta["source"] == source
    assert (train.meta["split"], test.meta["split"]) == ("train", "test")
    json.dumps(train.meta)  # meta must be JSON-serialisable (it goes into run records)
    assert train.standardizer.mean.shape == train.sample_shape


def test_builtin_names():
    assert set(BUILTIN_DATASETS) == {
        "checkerboard",
        "8gaussians",
        "moons",
        "circles",
        "spirals",
        "digits",
    }


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toys(name):
    train, test = load_dataset(name, n_train=2, n_test=3)  # n_train = 2 equals D = 2
    _check_pair(train, test, "2d", name)
    assert train.x.shape == (2, 2) and test.x.shape == (3, 2)
    # "auto" leaves toys unstandardised: the stored map is the identity
    assert torch.equal(train.standardizer.mean, torch.zeros(2))
    assert torch.equal(train.standardizer.std, torch.ones(2))
    assert train.meta["standardize"] == "none"
    assert train.num_classes == TOY_NUM_CLASSES[name] and train.labels.shape == (2,)


def test_toy_default_sizes_and_independent_streams():
    train, test = load_dataset("8gaussians")
    assert (len(train), len(test)) == DEFAULT_TOY_SIZES == (100_000, 10_000)
    # train and test are drawn from different streams: no shared points
    assert not torch.equal(train.x[: len(test)], test.x)
    assert torch.cdist(train.x[:2000], test.x[:2000]).min() > 0


def test_toy_determinism():
    a, _ = load_dataset("moons", seed=5, n_train=100, n_test=10)
    b, _ = load_dataset("moons", seed=5, n_train=100, n_test=10)
    c, _ = load_dataset("moons", seed=6, n_train=100, n_test=10)
    assert torch.equal(a.x, b.x) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.x, c.x)


def test_toy_with_explicit_standardization():
    train, test = load_dataset("circles", n_train=4000, n_test=100, standardize="per_feature")
    # fitted on train: model-space train has per-feature mean 0 and (population) std 1 exactly,
    # up to float32 round-off of the stored statistics (~1e-6 relative)
    assert train.x.double().mean(0).abs().max() < 1e-5
    assert torch.allclose(
        train.x.double().std(0, correction=0), torch.ones(2, dtype=F64), atol=1e-5
    )
    assert train.meta["standardize"] == "per_feature"


def test_digits():
    train, test = load_dataset("digits")
    _check_pair(train, test, "image", "digits")
    assert train.x.shape == (1500, 1, 8, 8) and test.x.shape == (297, 1, 8, 8)
    assert train.num_classes == test.num_classes == 10
    assert train.meta["standardize"] == "none"  # already in [-1, 1]
    assert train.x.min() >= -1 and train.x.max() <= 1
    small, small_test = load_dataset("digits", n_train=10, n_test=5)
    assert torch.equal(small.x, train.x[:10]) and torch.equal(small_test.x, test.x[:5])
    # the digits split is fixed: the seed does not change it
    other, _ = load_dataset("digits", seed=9, n_train=10)
    assert torch.equal(other.x, small.x)


def test_digits_global_standardization_round_trip():
    train, test = load_dataset("digits", standardize="global")
    std = train.standardizer
    assert std.std.shape == (1, 8, 8) and torch.all(std.std == std.std.flatten()[0])
    # log|det| of a global scale s over D = 64 entries is 64 log s
    assert std.log_abs_det() == pytest.approx(64 * math.log(float(std.std.flatten()[0])), rel=1e-6)
    assert abs(train.x.double().mean().item()) < 1e-5
    assert train.x.double().std(correction=0).item() == pytest.approx(1.0, abs=1e-5)
    plain, _ = load_dataset("digits")  # identity map: model space = data space
    # float32 statistics and storage: the round trip is exact to ~1e-6
    assert torch.allclose(_data_space(train), plain.x.double(), atol=1e-5)


def _ids_file(tmp_path, n, name="d.npy", extra_dims=()):
    """Rows whose first entry is the row's index, so splits can be traced back to the file."""
    rng = np.random.default_rng(0)
    ones = (1,) * len(extra_dims)
    scales = np.array([1.0, 10.0, 0.1]).reshape(1, 3, *ones)  # features of different scales
    arr = rng.normal(size=(n, 3, *extra_dims)) * scales + 5
    arr[:, 0, ...] = np.arange(n).reshape(n, *ones)
    np.save(tmp_path / name, arr)
    return tmp_path / name, arr


def _row_ids(ds: ArrayDataset) -> list[int]:
    ids = _data_space(ds)[:, 0]
    return ids.reshape(len(ds), -1)[:, 0].round().long().tolist()


def test_npy_tabular_split_and_standardization(tmp_path):
    path, arr = _ids_file(tmp_path, 50)
    train, test = load_dataset(path, seed=1)
    _check_pair(train, test, "tabular", str(path))
    assert (len(train), len(test)) == (45, 5)  # 10 % held out
    tr, te = _row_ids(train), _row_ids(test)
    assert not set(tr) & set(te) and sorted(tr + te) == list(range(50))  # a partition
    assert tr == sorted(tr) and te == sorted(te)  # each split keeps file order
    assert train.meta["standardize"] == "per_feature"
    # per-feature standardisation fitted on train: exact moments there
    assert train.x.double().mean(0).abs().max() < 1e-5
    assert torch.allclose(
        train.x.double().std(0, correction=0), torch.ones(3, dtype=F64), atol=1e-5
    )
    # round trip back to the file's values (float32 storage: ~1e-6 relative)
    assert torch.allclose(_data_space(test), torch.from_numpy(arr[te]), rtol=1e-5, atol=1e-5)
    # deterministic for a seed, different for another
    again, _ = load_dataset(path, seed=1)
    other, _ = load_dataset(path, seed=2)
    assert torch.equal(again.x, train.x) and _row_ids(other) != tr


def test_split_sizes(tmp_path):
    path, _ = _ids_file(tmp_path, 5)
    train, test = load_dataset(path)
    assert (len(train), len(test)) == (4, 1)  # N // 10 = 0 -> at least one test sample
    path, _ = _ids_file(tmp_path, 30, "e.npy")
    train, test = load_dataset(path, n_train=7, n_test=3)
    assert (len(train), len(test)) == (7, 3)
    assert not set(_row_ids(train)) & set(_row_ids(test))


def test_npz_image_array_uses_global(tmp_path):
    path, _ = _ids_file(tmp_path, 20, extra_dims=(2, 2))  # (N, 3, 2, 2)
    np.savez(tmp_path / "img.npz", x=np.load(path), labels=np.arange(20) % 4)
    train, test = load_dataset(tmp_path / "img.npz")
    _check_pair(train, test, "image", str(tmp_path / "img.npz"))
    assert train.meta["standardize"] == "global"
    assert train.num_classes == test.num_classes == 4 and train.labels.shape == (18,)


def test_three_dim_array_kind(tmp_path):
    np.save(tmp_path / "seq.npy", np.random.default_rng(0).normal(size=(10, 2, 5)))
    train, _ = load_dataset(tmp_path / "seq.npy")
    assert train.meta["kind"] == "array" and train.meta["standardize"] == "global"
    assert train.x.shape == (9, 2, 5)


def test_num_classes_counts_all_rows(tmp_path):
    # the only row with class 3 may land in either split; both splits agree on 4 classes
    np.savez(
        tmp_path / "a.npz",
        x=np.arange(20.0).reshape(10, 2),
        y=np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 3]),
    )
    train, test = load_dataset(tmp_path / "a.npz")
    assert train.num_classes == test.num_classes == 4


def test_csv(tmp_path):
    rows = "\n".join(f"{i},{2 * i},{i % 3}" for i in range(20))
    (tmp_path / "t.csv").write_text("a,b,cls\n" + rows + "\n")
    train, test = load_dataset(tmp_path / "t.csv", label_column="cls")
    _check_pair(train, test, "tabular", str(tmp_path / "t.csv"))
    assert train.meta["columns"] == ["a", "b"]
    assert train.x.shape == (18, 2) and train.num_classes == 3
    data = _data_space(train)
    assert torch.allclose(data[:, 1], 2 * data[:, 0], atol=1e-4)
    assert torch.equal(train.labels, data[:, 0].round().long() % 3)  # labels follow their rows


def test_constant_feature_is_floored(tmp_path):
    arr = np.stack([np.arange(10.0), np.full(10, 3.0)], axis=1)
    np.save(tmp_path / "c.npy", arr)
    train, test = load_dataset(tmp_path / "c.npy")
    assert train.standardizer.std[1].item() == pytest.approx(STD_FLOOR)
    assert torch.all(train.x[:, 1] == 0) and torch.all(test.x[:, 1] == 0)  # centred, finite


def test_image_folder(tmp_path):
    image = pytest.importorskip("PIL.Image")
    for cls, values in {"a": [0, 50, 100], "b": [150, 200, 250, 30, 60, 90, 120]}.items():
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i, v in enumerate(values):
            image.new("L", (4, 3), v).save(tmp_path / "imgs" / cls / f"{i}.png")
    train, test = load_dataset(tmp_path / "imgs", seed=3)
    _check_pair(train, test, "image", str(tmp_path / "imgs"))
    assert train.x.shape == (9, 1, 3, 4) and test.x.shape == (1, 1, 3, 4)
    assert train.meta["class_names"] == ["a", "b"] and train.num_classes == 2
    assert train.meta["standardize"] == "global"
    assert torch.all(train.standardizer.std == train.standardizer.std.flatten()[0])
    assert abs(train.x.double().mean().item()) < 1e-5


def test_standardize_none_keeps_data(tmp_path):
    path, arr = _ids_file(tmp_path, 10)
    train, test = load_dataset(path, standardize="none")
    assert torch.allclose(train.x.double(), torch.from_numpy(arr[_row_ids(train)]), atol=1e-5)


@pytest.mark.parametrize("mode", ["per_feature", "global"])
def test_fit_standardizer_round_trip(mode):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 7, generator=g, dtype=F64) * 3 + 1  # N == D
    std = fit_standardizer(x, mode)
    assert std.mean.shape == std.std.shape == (7,)
    # float64 data and float32 statistics: the affine map and its inverse cancel to ~1e-15
    assert torch.allclose(std.inverse(std.transform(x)), x, atol=1e-12, rtol=0)


def test_fit_standardizer_unknown_mode():
    with pytest.raises(ValueError, match=r"unknown standardize mode 'auto'; choose one of"):
        fit_standardizer(torch.zeros(3, 2), "auto")  # type: ignore[arg-type]


def test_unknown_name_lists_builtins(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"unknown dataset 'mnist': not a built-in name \['checkerboard', '8gaussians'.*'digits'\]",
    ):
        load_dataset("mnist")
    with pytest.raises(ValueError, match=r"unknown dataset .*missing.npy.*no such file or folder"):
        load_dataset(tmp_path / "missing.npy")


@pytest.mark.parametrize(
    ("spec", "kwargs", "error", "match"),
    [
        ("moons", {"standardize": "minmax"}, ValueError, "unknown standardize 'minmax'"),
        ("moons", {"n_train": 0}, ValueError, "n_train must be >= 1, got 0"),
        ("moons", {"n_test": 1.5}, TypeError, "n_test must be an int"),
        ("moons", {"seed": "0"}, TypeError, "seed must be an int, got '0'"),
        (
            "moons",
            {"label_column": "y"},
            ValueError,
            "label_column applies to .csv files only, not to 'moons'",
        ),
        (
            "digits",
            {"n_train": 1501},
            ValueError,
            "n_train=1501 exceeds the 1500 samples available",
        ),
        ("digits", {"n_test": 298}, ValueError, "n_test=298 exceeds the 297 samples available"),
        (3, {}, TypeError, "spec must be a dataset name or path, got int"),
    ],
)
def test_argument_errors(spec, kwargs, error, match):
    with pytest.raises(error, match=match):
        load_dataset(spec, **kwargs)


def test_file_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("1,2\n")
    with pytest.raises(
        ValueError,
        match=r"must be a folder of images or a file ending in \['.npy', '.npz', '.csv'\]",
    ):
        load_dataset(tmp_path / "notes.txt")
    np.save(tmp_path / "one.npy", np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"has 1 sample\(s\); a train/test split needs at least 2"):
        load_dataset(tmp_path / "one.npy")
    path, _ = _ids_file(tmp_path, 10)
    with pytest.raises(ValueError, match="label_column='y' applies to .csv files only"):
        load_dataset(path, label_column="y")
    with pytest.raises(ValueError, match="n_test=10 exceeds the 9 samples available"):
        load_dataset(path, n_test=10)
    with pytest.raises(
        ValueError,
        match="n_train=10 exceeds the 9 samples available for training .* after holding out 1",
    ):
        load_dataset(path, n_train=10)
