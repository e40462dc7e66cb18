"""Tests for the user-data loaders: .npy/.npz arrays, CSV tables, image folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowmatch.data.files import (
    CsvTable,
    ImageFolder,
    load_array_file,
    load_csv,
    load_image_folder,
    read_csv_table,
    read_image_folder,
)

Image = pytest.importorskip("PIL.Image")


# --------------------------------------------------------------------------- arrays


@pytest.mark.parametrize("shape", [(3, 3), (4, 1, 2, 2)])  # (3, 3): N equals the feature size
def test_npy_round_trip(tmp_path, shape):
    rng = np.random.default_rng(0)
    arr = rng.normal(size=shape)
    np.save(tmp_path / "a.npy", arr)
    x, labels = load_array_file(tmp_path / "a.npy")
    assert x.shape == shape and x.dtype == torch.float32 and labels is None
    assert torch.equal(x, torch.from_numpy(arr.astype(np.float32)))


@pytest.mark.parametrize(
    ("x_key", "y_key"), [("x", "labels"), ("data", "y"), ("pts", None), ("x", None)]
)
def test_npz_keys(tmp_path, x_key, y_key):
    arr = np.arange(12, dtype=np.int32).reshape(6, 2)
    stored = {x_key: arr} | ({y_key: np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)} if y_key else {})
    np.savez(tmp_path / "a.npz", **stored)
    x, labels = load_array_file(str(tmp_path / "a.npz"))
    assert x.shape == (6, 2) and x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(arr).float())
    if y_key is None:
        assert labels is None
    else:
        assert labels.dtype == torch.int64 and labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_npz_single_array_with_labels(tmp_path):
    np.savez(tmp_path / "a.npz", feats=np.ones((3, 2)), y=np.arange(3))
    x, labels = load_array_file(tmp_path / "a.npz")
    assert x.shape == (3, 2) and labels.tolist() == [0, 1, 2]


def _save(tmp_path, name, **arrays):
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, arrays["x"], allow_pickle=True)
    else:
        np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("name", "arrays", "match"),
    [
        ("a.npz", {"x": np.ones((2, 2)), "data": np.ones((2, 2))}, r"both keys \['x', 'data'\]"),
        (
            "a.npz",
            {"x": np.ones((2, 2)), "labels": np.ones(2, int), "y": np.ones(2, int)},
            r"both keys \['labels', 'y'\]",
        ),
        (
            "a.npz",
            {"a": np.ones((2, 2)), "b": np.ones((2, 2))},
            r"under 'x' or 'data' .*got keys \['a', 'b'\]",
        ),
        ("a.npz", {"x": np.ones((2, 2)), "extra": np.ones(2)}, r"unexpected keys \['extra'\]"),
        ("a.npy", {"x": np.arange(5.0)}, r"shape \(N, \*D\) with N >= 1, got \(5,\); reshape"),
        ("a.npy", {"x": np.ones((0, 3))}, r"N >= 1, got \(0, 3\)"),
        (
            "a.npy",
            {"x": np.ones((2, 2), dtype=complex)},
            "must hold real numbers, got dtype complex128",
        ),
        ("a.npy", {"x": np.array([[1, "a"]], dtype=object)}, "cannot read .* as .npy"),
        (
            "a.npz",
            {"x": np.ones((3, 2)), "labels": np.array([0.0, 1.0, 1.0])},
            "labels 'labels' in .* must be integers, got dtype float64",
        ),
        (
            "a.npz",
            {"x": np.ones((3, 2)), "y": np.array([0, 1])},
            r"must have shape \(N,\) = \(3,\), got \(2,\)",
        ),
        (
            "a.npz",
            {"x": np.ones((3, 2)), "y": np.array([0, -2, 1])},
            "must be >= 0, got -2 at index 1",
        ),
    ],
)
def test_array_file_errors(tmp_path, name, arrays, match):
    path = _save(tmp_path, name, **arrays)
    with pytest.raises(ValueError, match=match):
        load_array_file(path)


def test_array_nonfinite_count_and_first_index(tmp_path):
    arr = np.zeros((4, 3))
    arr[1, 2] = np.nan
    arr[3, 0] = np.inf
    np.save(tmp_path / "a.npy", arr)
    with pytest.raises(
        ValueError, match=r"2 non-finite value\(s\) \(NaN or inf\); the first is at index \(1, 2\)"
    ):
        load_array_file(tmp_path / "a.npy")


def test_array_float32_overflow_is_non_finite(tmp_path):
    np.save(tmp_path / "a.npy", np.array([[1.0, 1e39]]))  # finite in float64, inf in float32
    with pytest.raises(
        ValueError, match=r"converted to float32 .* 1 non-finite value\(s\).*index \(0, 1\)"
    ):
        load_array_file(tmp_path / "a.npy")


def test_array_path_errors(tmp_path):
    with pytest.raises(ValueError, match=r"must end in one of \['.npy', '.npz'\]"):
        load_array_file(tmp_path / "a.txt")
    with pytest.raises(ValueError, match="no such file"):
        load_array_file(tmp_path / "missing.npy")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="cannot read .*bad.npy"):
        load_array_file(tmp_path / "bad.npy")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        load_array_file(3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- CSV


def _csv(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_with_header_and_labels(tmp_path):
    path = _csv(tmp_path, "a, b ,label\n1,2.5,0\n\n-3, 4e1 ,2\n5,6,1\n")  # blank row skipped
    x, labels = load_csv(path, label_column="label")
    assert x.shape == (3, 2) and x.dtype == torch.float32
    assert x.tolist() == [[1.0, 2.5], [-3.0, 40.0], [5.0, 6.0]]
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 2, 1]


def test_read_csv_table_keeps_feature_column_names(tmp_path):
    path = _csv(tmp_path, "a,y,b\n1,1,2\n3,0,4\n")
    table = read_csv_table(path, label_column="y")
    assert isinstance(table, CsvTable) and table.columns == ["a", "b"]
    x, labels = load_csv(path, label_column="y")  # the public loader is the same read
    assert torch.equal(table.x, x) and torch.equal(table.labels, labels)
    assert read_csv_table(_csv(tmp_path, "1,2\n")).columns == ["column 0", "column 1"]


def test_csv_label_column_in_the_middle(tmp_path):
    x, labels = load_csv(_csv(tmp_path, "a,y,b\n1,1,2\n3,0.0,4\n"), label_column="y")
    assert x.tolist() == [[1.0, 2.0], [3.0, 4.0]] and labels.tolist() == [1, 0]


def test_csv_without_header(tmp_path):
    x, labels = load_csv(_csv(tmp_path, "1,2\n3,4\n"))  # two rows, two features: N == D
    assert x.shape == (2, 2) and x.tolist() == [[1.0, 2.0], [3.0, 4.0]] and labels is None


def test_csv_header_only_unlabelled(tmp_path):
    x, labels = load_csv(_csv(tmp_path, "a,b\n1,2\n"))
    assert x.shape == (1, 2) and labels is None


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        ("a,b\n1,2\n3,x\n", {}, r"line 3, column 'b': expected a finite number, got 'x'"),
        ("a,b\n1,2\n,4\n", {}, r"line 3, column 'a': expected a finite number, got an empty cell"),
        ("a,b\n1,nan\n", {}, r"line 2, column 'b': expected a finite number, got 'nan'"),
        ("1,2\n3,-inf\n", {}, r"line 2, column 'column 1': expected a finite number, got '-inf'"),
        ("a,b\n1,2\n3\n", {}, r"line 3: expected 2 cells like the first row, got 1"),
        ("", {}, "is empty"),
        ("\n\n", {}, "is empty"),
        ("a,b\n", {}, "has a header row but no data rows"),
        (
            "a,b\n1,2\n",
            {"label_column": "c"},
            r"label_column='c' is not a column of .*columns: \['a', 'b'\]",
        ),
        ("a,a\n1,2\n", {"label_column": "a"}, "label_column='a' names several columns"),
        ("1,2\n3,4\n", {"label_column": "y"}, "label_column='y' needs a header row"),
        (
            "a,y\n1,0\n2,1.5\n",
            {"label_column": "y"},
            r"line 3, column 'y': expected an integer class label >= 0, got '1.5'",
        ),
        (
            "a,y\n1,0\n2,-1\n",
            {"label_column": "y"},
            r"line 3, column 'y': expected an integer class label >= 0, got '-1'",
        ),
        (
            "a,y\n1,0\n2,cat\n",
            {"label_column": "y"},
            r"line 3, column 'y': expected an integer class label >= 0, got 'cat'",
        ),
        ("y\n1\n", {"label_column": "y"}, "no feature columns besides label_column='y'"),
        ("a\n1e39\n", {}, r"converted to float32 .*1 non-finite value\(s\).*index \(0, 0\)"),
    ],
)
def test_csv_errors(tmp_path, text, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_csv(_csv(tmp_path, text), **kwargs)


def test_csv_type_and_path_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_csv(tmp_path / "missing.csv")
    with pytest.raises(TypeError, match="label_column must be a str or None, got int"):
        load_csv(_csv(tmp_path, "a\n1\n"), label_column=0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- images


def _img(path, mode, size, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_grayscale_folder_values(tmp_path):
    _img(tmp_path / "b.png", "L", (3, 2), 255)  # width 3, height 2
    _img(tmp_path / "a.png", "L", (3, 2), 0)
    _img(tmp_path / "c.bmp", "L", (3, 2), 51)
    (tmp_path / ".DS_Store").write_bytes(b"junk")  # hidden entries are skipped
    x, labels = load_image_folder(tmp_path)
    assert x.shape == (3, 1, 2, 3) and x.dtype == torch.float32 and labels is None
    # sorted file order a, b, c; x = pixel / 127.5 - 1 maps 0 -> -1, 255 -> 1
    expected = torch.tensor([-1.0, 1.0, 51 / 127.5 - 1])
    assert torch.allclose(x.amin(dim=(1, 2, 3)), expected) and torch.allclose(
        x.amax(dim=(1, 2, 3)), expected
    )


def test_rgb_and_rgba_channels(tmp_path):
    _img(tmp_path / "rgb" / "a.png", "RGB", (2, 2), (255, 0, 51))
    x, _ = load_image_folder(tmp_path / "rgb")
    assert x.shape == (1, 3, 2, 2)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([1.0, -1.0, 51 / 127.5 - 1]))
    _img(tmp_path / "rgba" / "a.png", "RGBA", (2, 2), (0, 0, 0, 255))
    x, _ = load_image_folder(tmp_path / "rgba")
    assert x.shape == (1, 4, 2, 2)


def test_binary_mode_is_one_channel(tmp_path):
    _img(tmp_path / "a.png", "1", (4, 4), 1)
    x, _ = load_image_folder(tmp_path)
    assert x.shape == (1, 1, 4, 4) and torch.all(x == 1.0)


def test_jpeg_is_read(tmp_path):
    _img(tmp_path / "a.jpg", "RGB", (8, 8), (10, 200, 30))
    _img(tmp_path / "b.JPEG", "RGB", (8, 8), (10, 200, 30))
    x, _ = load_image_folder(tmp_path)
    assert x.shape == (2, 3, 8, 8) and x.min() >= -1 and x.max() <= 1


def test_class_subfolders(tmp_path):
    _img(tmp_path / "dog" / "1.png", "L", (2, 2), 10)
    _img(tmp_path / "cat" / "1.png", "L", (2, 2), 20)
    _img(tmp_path / "cat" / "2.png", "L", (2, 2), 30)
    x, labels = load_image_folder(tmp_path)
    assert x.shape == (3, 1, 2, 2)
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 0, 1]  # cat = 0, dog = 1
    assert torch.allclose(x[:, 0, 0, 0], torch.tensor([20, 30, 10]) / 127.5 - 1)


def test_read_image_folder_keeps_class_names(tmp_path):
    _img(tmp_path / "dog" / "1.png", "L", (2, 2), 10)
    _img(tmp_path / "cat" / "1.png", "L", (2, 2), 20)
    folder = read_image_folder(tmp_path)
    assert isinstance(folder, ImageFolder) and folder.class_names == ["cat", "dog"]
    assert folder.labels.tolist() == [0, 1] and folder.x.shape == (2, 1, 2, 2)
    _img(tmp_path / "flat" / "a.png", "L", (2, 2), 10)
    flat = read_image_folder(tmp_path / "flat")
    assert flat.class_names == [] and flat.labels is None


def test_grayscale_flag_converts_mixed_modes(tmp_path):
    _img(tmp_path / "a.png", "L", (2, 2), 100)
    _img(tmp_path / "b.png", "RGB", (2, 2), (100, 100, 100))
    _img(tmp_path / "c.png", "P", (2, 2), 3)
    gray, _ = load_image_folder(tmp_path, grayscale=True)
    assert gray.shape == (3, 1, 2, 2)
    assert torch.allclose(gray[:2], torch.full((2, 1, 2, 2), 100 / 127.5 - 1))
    rgb, _ = load_image_folder(tmp_path, grayscale=False)
    assert rgb.shape == (3, 3, 2, 2)


def test_image_size_mismatch_names_both_files(tmp_path):
    _img(tmp_path / "a.png", "L", (4, 4), 0)
    _img(tmp_path / "b.png", "L", (4, 5), 0)
    with pytest.raises(
        ValueError, match=r"same size and mode: .*a.png is 4x4 L but .*b.png is 4x5 L"
    ):
        load_image_folder(tmp_path)


def test_image_mode_mismatch(tmp_path):
    _img(tmp_path / "a.png", "L", (4, 4), 0)
    _img(tmp_path / "b.png", "RGB", (4, 4), 0)
    with pytest.raises(
        ValueError, match=r"a.png is 4x4 L but .*b.png is 4x4 RGB; .*grayscale=True/False"
    ):
        load_image_folder(tmp_path)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty; put images"):
        load_image_folder(tmp_path / "empty")
    _img(tmp_path / "mixed" / "a.png", "L", (2, 2), 0)
    (tmp_path / "mixed" / "sub").mkdir()
    with pytest.raises(ValueError, match=r"mixes subfolders \['sub'\] and files"):
        load_image_folder(tmp_path / "mixed")
    _img(tmp_path / "other" / "a.png", "L", (2, 2), 0)
    (tmp_path / "other" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"must contain only image files .*found \['notes.txt'\]"):
        load_image_folder(tmp_path / "other")
    _img(tmp_path / "classes" / "a" / "1.png", "L", (2, 2), 0)
    (tmp_path / "classes" / "b").mkdir()
    with pytest.raises(ValueError, match="b contains no images"):
        load_image_folder(tmp_path / "classes")
    _img(tmp_path / "nested" / "a" / "1.png", "L", (2, 2), 0)
    (tmp_path / "nested" / "a" / "deeper").mkdir()
    with pytest.raises(ValueError, match=r"only image files .*found \['deeper'\]"):
        load_image_folder(tmp_path / "nested")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*a.png"):
        load_image_folder(tmp_path / "corrupt")
    _img(tmp_path / "palette" / "a.png", "P", (2, 2), 0)
    with pytest.raises(
        ValueError, match=r"Pillow mode 'P'; supported as-is: .*pass grayscale=True or False"
    ):
        load_image_folder(tmp_path / "palette")
    with pytest.raises(TypeError, match="grayscale must be True, False or None, got 'yes'"):
        load_image_folder(tmp_path / "palette", grayscale="yes")  # type: ignore[arg-type]
