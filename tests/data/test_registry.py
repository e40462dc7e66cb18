"""Tests for load_dataset: every spec kind, the split, and the shared standardiser."""

from __future__ import annotations

import json
import logging
import math
import warnings

import numpy as np
import pytest
import torch

from flowmatch.data.batch import ArrayDataset
from flowmatch.data.registry import (
    BUILTIN_DATASETS,
    DEFAULT_TOY_SIZES,
    STD_FLOOR,
    constant_features,
    fit_standardizer,
    load_dataset,
    split_indices,
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
        "8gaussians_angle",
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
    assert tr != sorted(tr)  # splits come back shuffled, not in file order
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


def test_constant_feature_is_centred_and_unscaled(tmp_path):
    arr = np.stack([np.arange(10.0), np.full(10, 0.1)], axis=1)  # 0.1: not exact in binary
    np.save(tmp_path / "c.npy", arr)
    train, test = load_dataset(tmp_path / "c.npy")
    assert train.standardizer.std[1].item() == 1.0  # the rule: constant -> std = 1
    assert train.standardizer.mean[1].item() == np.float32(0.1)  # centred on its own value
    assert torch.all(train.x[:, 1] == 0) and torch.all(test.x[:, 1] == 0)  # exactly 0
    assert train.meta["constant_features"] == 1
    # nothing is divided by ~0 and no log(1e-6) enters the data-space likelihood correction
    assert train.standardizer.log_abs_det() == pytest.approx(math.log(train.standardizer.std[0]))


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


# --------------------------------------------------------------------------- stratified split


def _class_sorted_csv(path, counts=(100, 100, 100), shuffle_seed=None):
    """Classes in blocks (as exported from a groupby), far apart in feature space."""
    rng = np.random.default_rng(0)
    y = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    x = rng.normal(size=(len(y), 2)) + 10.0 * y[:, None]
    rows = np.column_stack([x, y])
    if shuffle_seed is not None:
        rows = rows[np.random.default_rng(shuffle_seed).permutation(len(rows))]
    np.savetxt(path, rows, fmt="%.6g", delimiter=",", header="a,b,cls", comments="")
    return path


def _class_of_rows(ds: ArrayDataset) -> list[int]:
    # classes are 10 apart along feature a: recover them from the data, not from the labels
    return (_data_space(ds)[:, 0] / 10).round().long().tolist()


@pytest.mark.parametrize("shuffle_seed", [None, 3])  # a class-sorted file and a shuffled copy
def test_split_of_a_class_sorted_csv_is_stratified_and_shuffled(tmp_path, shuffle_seed):
    path = _class_sorted_csv(tmp_path / "sorted.csv", shuffle_seed=shuffle_seed)
    train, test = load_dataset(path, label_column="cls", seed=0)
    assert (len(train), len(test)) == (270, 30)
    assert test.labels.tolist() == _class_of_rows(test)  # labels travel with their rows
    # each class keeps its share of the test set: 30 * 100 / 300 = 10, within one sample
    for split in (test, train):
        counts = torch.bincount(split.labels, minlength=3)
        expected = len(split) * 100 / 300  # the data's class proportions are 1/3 each
        assert torch.all((counts - expected).abs() <= 1), counts.tolist()
    # shuffled order: a prefix is a random sample, not one class
    assert len(set(test.labels[:10].tolist())) > 1 and len(set(train.labels[:10].tolist())) > 1
    again, again_test = load_dataset(path, label_column="cls", seed=0)
    assert torch.equal(again.x, train.x) and torch.equal(again_test.x, test.x)  # seeded
    _, other = load_dataset(path, label_column="cls", seed=1)
    assert not torch.equal(other.x, test.x)


def test_split_of_unlabelled_rows_is_shuffled(tmp_path):
    path, _ = _ids_file(tmp_path, 300)
    train, test = load_dataset(path, seed=4)
    tr, te = _row_ids(train), _row_ids(test)
    assert tr != sorted(tr) and te != sorted(te)
    assert sorted(tr + te) == list(range(300))
    # the test set is a random sample of the file: its ids are spread over all rows
    assert min(te) < 60 and max(te) > 240


@pytest.mark.parametrize("seed", range(5))
def test_split_indices_rules_on_imbalanced_classes(seed):
    counts = [200, 50, 7, 2, 1]
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    n = len(labels)
    idx_tr, idx_te = split_indices(n, labels, seed, n_test=26)
    assert len(idx_te) == 26 and len(idx_tr) == n - 26
    assert not set(idx_tr.tolist()) & set(idx_te.tolist())
    test_counts = torch.bincount(labels[idx_te], minlength=5).tolist()
    # quotas 26 c / 260 = 20, 5, 0.7, 0.2, 0.1: the classes of >= 2 samples all give one (the
    # two small ones are lifted to 1, taken from the others) and the single sample trains
    assert test_counts[2] == test_counts[3] == 1 and test_counts[4] == 0
    assert 19 <= test_counts[0] <= 20 and 4 <= test_counts[1] <= 5
    assert torch.bincount(labels[idx_tr], minlength=5).min() >= 1  # every class trains


def test_split_indices_quota_without_binding_bounds():
    g = torch.Generator().manual_seed(0)
    for trial in range(50):
        counts = torch.randint(5, 300, (int(torch.randint(1, 8, (1,), generator=g)),), generator=g)
        labels = torch.repeat_interleave(torch.arange(len(counts)), counts)
        labels = labels[torch.randperm(len(labels), generator=g)]  # file order does not matter
        n, k = len(labels), int(len(labels) // 4)
        _, idx_te = split_indices(n, labels, trial, n_test=k)
        quota = counts.double() * k / n  # >= 1.25 for every class here: no bound binds
        got = torch.bincount(labels[idx_te], minlength=len(counts)).double()
        assert torch.all((got - quota).abs() < 1), (counts.tolist(), got.tolist())


def test_split_indices_smaller_train_set_is_stratified():
    labels = torch.arange(300) // 100  # sorted
    idx_tr, idx_te = split_indices(300, labels, 0, n_train=30, n_test=30)
    assert torch.bincount(labels[idx_tr]).tolist() == [10, 10, 10]
    assert torch.bincount(labels[idx_te]).tolist() == [10, 10, 10]
    assert not set(idx_tr.tolist()) & set(idx_te.tolist())


def test_split_indices_more_classes_than_test_samples():
    labels = torch.arange(20) // 2  # 10 classes of 2
    idx_tr, idx_te = split_indices(20, labels, 0, n_test=3)
    assert len(set(labels[idx_te].tolist())) == 3  # three different classes, one each
    assert len(idx_tr) == 17


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((1, None, 0), {}, ValueError, r"the data has 1 sample\(s\); a train/test split needs"),
        ((2.0, None, 0), {}, TypeError, "n must be an int"),
        ((4, None, "0"), {}, TypeError, "seed must be an int"),
        ((4, torch.zeros(4), 0), {}, TypeError, "labels must be an int64 tensor .*float32"),
        ((4, torch.zeros(3, dtype=torch.long), 0), {}, ValueError, r"shape \(n,\) = \(4,\)"),
        ((4, -torch.ones(4, dtype=torch.long), 0), {}, ValueError, "class indices >= 0, got -1"),
        ((4, None, 0), {"n_test": 4}, ValueError, "n_test=4 exceeds the 3 samples available"),
        ((4, None, 0), {"n_train": 0}, ValueError, "n_train must be >= 1"),
    ],
)
def test_split_indices_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        split_indices(*args, **kwargs)


def test_digits_split_is_random_but_not_stratified():
    # documented, and kept: benchmark numbers depend on the fixed membership
    _, test = load_dataset("digits")
    counts = torch.bincount(test.labels, minlength=10)
    assert counts.min() == 23 and counts.max() == 38  # ~29.7 each if it were stratified
    assert len(set(test.labels[:10].tolist())) > 1  # its order is a random permutation


# --------------------------------------------------------------------------- labels


def test_labels_are_remapped_with_class_names(tmp_path):
    rows = "\n".join(f"{i},{[-1, 5, 10**8][i % 3]}" for i in range(30))
    (tmp_path / "t.csv").write_text("a,y\n" + rows + "\n")
    train, test = load_dataset(tmp_path / "t.csv", label_column="y")
    assert train.num_classes == test.num_classes == 3  # not 10**8 + 1
    assert train.meta["class_names"] == test.meta["class_names"] == [-1, 5, 10**8]
    json.dumps(train.meta)
    # class k of a row is the index of its original value in class_names
    ids = _data_space(train)[:, 0].round().long()
    assert torch.equal(train.labels, ids % 3)


def test_uint64_npz_labels_through_load_dataset(tmp_path):
    y = np.array([0, 2**64 - 1] * 10, dtype=np.uint64)
    np.savez(tmp_path / "a.npz", x=np.arange(40.0).reshape(20, 2), y=y)
    train, _ = load_dataset(tmp_path / "a.npz")
    assert train.num_classes == 2 and train.meta["class_names"] == [0, 2**64 - 1]
    assert train.labels.min() == 0  # no wrap to -1


@pytest.mark.parametrize("name", ["moons", "digits"])
def test_builtin_class_names(name):
    train, _ = load_dataset(name, n_train=20, n_test=5)
    assert train.meta["class_names"] == list(range(train.num_classes))


def test_unlabelled_data_has_no_class_names(tmp_path):
    path, _ = _ids_file(tmp_path, 10)
    train, _ = load_dataset(path)
    assert "class_names" not in train.meta and train.num_classes is None


# --------------------------------------------------------------------------- hostile specs


def test_identical_samples_are_refused(tmp_path):
    np.save(tmp_path / "same.npy", np.full((50, 3), 2.0))
    with pytest.raises(
        ValueError, match=r"all 50 samples in .*same.npy are identical: there is nothing"
    ):
        load_dataset(tmp_path / "same.npy")


def test_folder_named_like_a_data_file(tmp_path):
    (tmp_path / "x.npy").mkdir()
    with pytest.raises(ValueError, match=r"x.npy' is a folder, but its name ends in .npy"):
        load_dataset(tmp_path / "x.npy")


def test_grayscale_reaches_the_image_reader(tmp_path):
    image = pytest.importorskip("PIL.Image")
    (tmp_path / "imgs").mkdir()
    image.new("L", (2, 2), 0).save(tmp_path / "imgs" / "a.png")
    image.new("RGB", (2, 2), (9, 9, 9)).save(tmp_path / "imgs" / "b.png")
    with pytest.raises(ValueError, match="same size and mode"):
        load_dataset(tmp_path / "imgs")
    train, test = load_dataset(tmp_path / "imgs", grayscale=False)
    assert train.sample_shape == (3, 2, 2)
    path, _ = _ids_file(tmp_path, 10)
    with pytest.raises(ValueError, match="grayscale=True applies to image folders only"):
        load_dataset(path, grayscale=True)
    with pytest.raises(ValueError, match="grayscale applies to image folders only, not to 'moons'"):
        load_dataset("moons", grayscale=True)


# --------------------------------------------------------------------------- constant features


def test_constant_column_trains_without_warnings(tmp_path, caplog):
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.normal(size=(40, 2)), np.full(40, 7.0)])
    np.savetxt(tmp_path / "t.csv", rows, fmt="%.6g", delimiter=",", header="a,b,c", comments="")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division warning anywhere in loading
        with caplog.at_level(logging.INFO, logger="flowmatch.data.registry"):
            train, test = load_dataset(tmp_path / "t.csv")
        data = train.standardizer.inverse(train.x)
    assert torch.equal(train.standardizer.std[2], torch.tensor(1.0))
    assert torch.all(train.x[:, 2] == 0) and torch.all(data[:, 2] == 7.0)  # exact round trip
    assert train.meta["constant_features"] == 1
    assert "1 of 3 feature entries are constant in the training split" in caplog.text


@pytest.mark.parametrize("mode", ["per_feature", "global"])
def test_fit_standardizer_constant_rule(mode):
    x = torch.full((5, 3), 0.1, dtype=F64)
    std = fit_standardizer(x, mode)
    assert torch.all(std.std == 1) and torch.all(std.transform(x.float()) == 0)
    assert torch.all(constant_features(x, mode))


def test_fit_standardizer_tiny_but_varying_feature_is_scaled():
    # values in tiny units are real variation, not a constant: no units-dependent floor
    x = torch.tensor([[1e-9], [3e-9], [2e-9], [4e-9]], dtype=F64)
    std = fit_standardizer(x, "per_feature")
    assert std.std.item() == pytest.approx(float(x.std(correction=0)), rel=1e-6)
    assert not constant_features(x, "per_feature").any()
    # a std that float32 cannot divide by counts as constant
    below = torch.tensor([[0.0], [STD_FLOOR / 10]], dtype=F64)
    assert constant_features(below, "per_feature").all()
    assert fit_standardizer(below, "per_feature").std.item() == 1.0


def test_fit_standardizer_shape_errors():
    with pytest.raises(ValueError, match=r"x must have shape \(N, \*D\) with N >= 1, got \(0, 2\)"):
        fit_standardizer(torch.zeros(0, 2), "per_feature")
    with pytest.raises(ValueError, match=r"got \(3,\)"):
        constant_features(torch.zeros(3), "global")
