"""Tests for the user-data loaders: .npy/.npz arrays, CSV tables, image folders."""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile

import numpy as np
import pytest
import torch

import flowmatch.data.files as files_module
from flowmatch.data.files import (
    ArrayFile,
    CsvTable,
    ImageFolder,
    load_array_file,
    load_csv,
    load_image_folder,
    read_array_file,
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
            {"x": np.ones((3, 2)), "labels": np.array([0.0, 2.5, 1.0])},
            "labels 'labels' in .*, at index 1: expected an integer class label, got 2.5",
        ),
        (
            "a.npz",
            {"x": np.ones((3, 2)), "y": np.array([0, 1])},
            r"must have shape \(N,\) = \(3,\), got \(2,\)",
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
            r"line 3, column 'y': expected an integer class label, got 1.5",
        ),
        (
            "a,y\n1,0\n2,cat\n",
            {"label_column": "y"},
            r"line 3, column 'y': expected an integer class label, got 'cat'",
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


# --------------------------------------------------------------------------- hostile arrays


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _huge_header(shape=(10**12, 2)):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    return buf.getvalue() + b"\0" * 64


def _zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.npy", b"", r"cannot read .*a.npy' as .npy: the file is empty \(0 bytes\)"),
        ("a.npz", b"", r"cannot read .*a.npz' as .npz: the file is empty \(0 bytes\)"),
        (
            "a.npy",
            _npy_bytes(np.ones((100, 3)))[:500],
            r"a.npy' as .npy: truncated: the header declares shape \(100, 3\) of float64 = "
            r"2400 bytes but only 372 follow",
        ),
        ("a.npy", _npy_bytes(np.ones((100, 3)))[:40], r"as .npy: unreadable .npy header \(EOF"),
        (
            "a.npy",
            _npy_bytes(np.ones((2, 2))) + _npy_bytes(np.ones((2, 2))),  # np.save twice
            r"as .npy: 160 bytes follow the array of shape \(2, 2\) \(several arrays",
        ),
        # a header declaring 16 TB is refused before anything is allocated
        ("a.npy", _huge_header(), r"truncated: the header declares shape \(1000000000000, 2\)"),
        (
            "a.npy",
            pickle.dumps(np.ones((2, 2))),
            "as .npy: it is a Python pickle, refused; flowmatch loads with allow_pickle=False",
        ),
        ("a.npy", b"PK\x03\x04 not really", r"it is a zip archive \(an .npz file\?\); rename it"),
        ("a.npz", _npy_bytes(np.ones((2, 2))), "it is a single .npy array, not an archive"),
        ("a.npz", b"\x01\x02 junk", r"as .npz: not a NumPy file \(it does not start with a zip"),
        ("a.npz", b"PK\x03\x04 truncated", "as .npz: not a readable zip archive .*truncated or"),
    ],
)
def test_damaged_or_mislabelled_array_files(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_array_file(tmp_path / name)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_bad_crc(tmp_path, compression):
    path = _zip(tmp_path / "a.npz", {"x.npy": _npy_bytes(np.arange(300.0).reshape(100, 3))})
    if compression == zipfile.ZIP_DEFLATED:
        np.savez_compressed(path, x=np.random.default_rng(0).normal(size=(100, 3)))
    _flip_byte(path, 300)  # inside the member's data, past the zip and .npy headers
    with pytest.raises(ValueError, match=r"member 'x.npy' of .*a.npz: corrupt \(.*CRC"):
        load_array_file(path)


@pytest.mark.parametrize(
    ("members", "match"),
    [
        (
            {"x.npy": _npy_bytes(np.ones((2, 2))), "readme.txt": b"hi"},
            r"members that are not .npy arrays: \['readme.txt'\]",
        ),
        ({"x.npy": b"hello"}, r"member 'x.npy' of .*: unreadable .npy header"),
        ({"x.npy": _huge_header()}, r"member 'x.npy' of .*: truncated: the header declares"),
        (
            {"x.npy": _npy_bytes(np.array([[1, "a"]], dtype=object))},
            r"member 'x.npy' .*: it holds an object array \(dtype object\), which NumPy stores "
            r"as a pickle: refused; flowmatch loads with allow_pickle=False",
        ),
        ({}, r"must store the samples under 'x' or 'data' .*got keys \[\]"),
        ({"labels.npy": _npy_bytes(np.arange(3))}, r"got keys \['labels'\]"),
    ],
)
def test_hostile_npz_members(tmp_path, members, match):
    with pytest.raises(ValueError, match=match):
        load_array_file(_zip(tmp_path / "a.npz", members))


def test_npz_duplicate_member_names(tmp_path):
    path = tmp_path / "a.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        _zip(path, {"x.npy": _npy_bytes(np.ones((2, 2)))})
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("x.npy", _npy_bytes(np.zeros((2, 2))))
    with pytest.raises(ValueError, match="several members of the same name"):
        load_array_file(path)


def test_bool_samples_become_zero_and_one(tmp_path):
    np.save(tmp_path / "b.npy", np.array([[True, False], [False, True]]))
    x, _ = load_array_file(tmp_path / "b.npy")
    assert x.dtype == torch.float32 and x.tolist() == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.array([["a", "b"]]), "got dtype <U1: text cannot be a feature"),
        (np.ones((2, 2), dtype=np.complex64), "complex64: complex values have no order"),
        (np.zeros((2, 2), dtype="datetime64[s]"), "dates are not numbers"),
        (np.zeros((2, 2), dtype=[("a", "<f4")]), "only booleans, integers and floats are read"),
        (np.ones((5, 0)), r"samples with no entries: shape \(5, 0\)"),
        (np.ones((5, 2, 0)), r"samples with no entries: shape \(5, 2, 0\)"),
    ],
)
def test_non_numeric_samples_are_refused(tmp_path, arr, match):
    np.save(tmp_path / "a.npy", arr)
    with pytest.raises(ValueError, match=match):
        load_array_file(tmp_path / "a.npy")


def test_array_file_is_a_folder(tmp_path):
    (tmp_path / "x.npy").mkdir()
    with pytest.raises(ValueError, match="x.npy' is a folder, not a file"):
        load_array_file(tmp_path / "x.npy")


def test_array_larger_than_memory_is_refused_before_reading(tmp_path, monkeypatch):
    np.save(tmp_path / "a.npy", np.ones((1000, 4)))
    monkeypatch.setattr(files_module, "_physical_memory", lambda: 1024)
    with pytest.raises(ValueError, match=r"as .npy: needs .* GiB of memory, more than this"):
        load_array_file(tmp_path / "a.npy")


def test_npz_labels_are_remapped(tmp_path):
    y = np.array([2**64 - 1, 0, 2**64 - 1, 0], dtype=np.uint64)  # would wrap to -1 in int64
    np.savez(tmp_path / "a.npz", x=np.ones((4, 2)), y=y)
    arrays = read_array_file(tmp_path / "a.npz")
    assert isinstance(arrays, ArrayFile)
    assert arrays.labels.tolist() == [1, 0, 1, 0] and arrays.class_names == [0, 2**64 - 1]
    np.savez(tmp_path / "b.npz", x=np.ones((3, 2)), labels=np.array([-1, 10**8, -1]))
    x, labels = load_array_file(tmp_path / "b.npz")
    assert labels.tolist() == [0, 1, 0]  # two classes, not 10**8 + 2
    assert read_array_file(tmp_path / "b.npz").class_names == [-1, 10**8]
    unlabelled = read_array_file(_save(tmp_path, "c.npy", x=np.ones((2, 2))))
    assert unlabelled.labels is None and unlabelled.class_names == []


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.array([0.0, 1e30, 0.0]), r"labels 'y' in .*, at index 1: .*<= 2\*\*53.*got 1e\+30"),
        (np.array([0.0, np.nan, 1.0]), "at index 1: expected a finite integer class label"),
        (np.array(["a", "b", "c"]), "text labels are not supported"),
    ],
)
def test_npz_bad_labels(tmp_path, y, match):
    np.savez(tmp_path / "a.npz", x=np.ones((3, 2)), y=y)
    with pytest.raises(ValueError, match=match):
        load_array_file(tmp_path / "a.npz")


# --------------------------------------------------------------------------- hostile CSV


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (
            "café,b\n1,2\n".encode("latin-1"),
            r"t.csv, line 1: not UTF-8 text \(byte 0xe9 at offset 3\); save the file as UTF-8",
        ),
        ("a,b\n1,2\n3,4 \xb5m\n".encode("latin-1"), r"t.csv, line 3: not UTF-8 text \(byte 0xb5"),
        ("a,b\n1,2\n".encode("utf-16"), r"line 1: (not UTF-8 text|contains a NUL byte)"),
        (b"a,b\n1,2\n3,4\x00\n", r"t.csv, line 3: contains a NUL byte; this is a binary file"),
        (
            b"a,b\n1," + b"9" * 200_000 + b"\n",
            r"t.csv, line 2: cannot parse the CSV \(field larger than field limit",
        ),
        (
            b"a;b\n1;2\n",
            r"line 2, column 'a;b': expected a finite number, got '1;2'; the file seems to be "
            r"separated by ';', but CSV cells are split at ','",
        ),
        (b"a\tb\n1\t2\n", "separated by tabs"),
        (b"a,b\n1,2\n3,4,\n", r"line 3: expected 2 cells like the first row, got 3"),  # ragged
        (b"a,b\n1,2\n3,inf\n", r"line 3, column 'b': expected a finite number, got 'inf'"),
        (b"a,b\n1,NaN\n", r"line 2, column 'b': expected a finite number, got 'NaN'"),
    ],
)
def test_hostile_csv_bytes(tmp_path, content, match):
    (tmp_path / "t.csv").write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_csv(tmp_path / "t.csv")


def test_csv_byte_order_mark_is_ignored(tmp_path):
    (tmp_path / "t.csv").write_bytes("a,y\n1,0\n2,1\n".encode("utf-8-sig"))  # as Excel saves
    table = read_csv_table(tmp_path / "t.csv", label_column="y")
    assert table.columns == ["a"] and table.labels.tolist() == [0, 1]


def test_csv_crlf_and_quoted_cells(tmp_path):
    (tmp_path / "t.csv").write_bytes(b'a,"b"\r\n"1",2\r\n3,4\r\n')
    x, _ = load_csv(tmp_path / "t.csv")
    assert x.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_csv_error_line_counts_quoted_line_breaks(tmp_path):
    # the header's second cell spans two lines: the bad cell is on file line 4, row 3
    (tmp_path / "t.csv").write_bytes(b'a,"b\nc"\n1,2\nx,3\n')
    with pytest.raises(ValueError, match=r"line 4, column 'a': expected a finite number, got 'x'"):
        load_csv(tmp_path / "t.csv")


def test_csv_labels_are_remapped(tmp_path):
    text = "a,y\n1,100000000\n2,-1\n3,100000000\n4,5.0\n"  # sparse, negative, float-integral
    table = read_csv_table(_csv(tmp_path, text), label_column="y")
    assert table.labels.tolist() == [2, 0, 2, 1]
    assert table.class_names == [-1, 5, 10**8]  # the original values, sorted
    assert read_csv_table(_csv(tmp_path, "a\n1\n", "u.csv")).class_names == []


@pytest.mark.parametrize(
    ("cells", "match"),
    [
        ("0,1e30", r"line 3, column 'y': expected an integer class label of magnitude <= 2\*\*53"),
        ("0,99999999999999999999", r"line 3, column 'y': .*magnitude <= 2\*\*53"),
        ("0,nan", r"line 3, column 'y': expected a finite integer class label"),
        ("0,2.5", r"line 3, column 'y': expected an integer class label, got 2.5"),
        ("0,", r"line 3, column 'y': expected an integer class label, got an empty cell"),
    ],
)
def test_csv_bad_labels(tmp_path, cells, match):
    first, second = cells.split(",")
    with pytest.raises(ValueError, match=match):
        load_csv(_csv(tmp_path, f"a,y\n1,{first}\n2,{second}\n"), label_column="y")


def test_csv_is_a_folder(tmp_path):
    (tmp_path / "t.csv").mkdir()
    with pytest.raises(ValueError, match="t.csv' is a folder, not a file"):
        load_csv(tmp_path / "t.csv")


# --------------------------------------------------------------------------- hostile images


def _noise_png(path, size=(32, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.effect_noise(size, 60).save(path)  # incompressible: the data spans many bytes
    return path


def test_truncated_png(tmp_path):
    _img(tmp_path / "a.png", "L", (32, 32), 0)
    data = _noise_png(tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read image .*b.png: image file is truncated"):
        load_image_folder(tmp_path)


@pytest.mark.parametrize("offset", [20, 200])  # in the header chunk; in the pixel data
def test_corrupt_png(tmp_path, offset):
    _flip_byte(_noise_png(tmp_path / "a.png"), offset)
    with pytest.raises(ValueError, match=r"^cannot read image .*a.png: "):
        load_image_folder(tmp_path)


@pytest.mark.parametrize("pixels", [150, 400])  # beyond the limit: Pillow warns; beyond 2x: raises
def test_decompression_bomb(tmp_path, monkeypatch, pixels):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    _img(tmp_path / "a.png", "L", (pixels // 10, 10), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning escapes
        with pytest.raises(
            ValueError, match=r"a.png is refused as a possible decompression bomb: .*MAX_IMAGE"
        ):
            load_image_folder(tmp_path)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((2, 3), 40000, dtype=np.uint16)).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == "I;16"
    expected = 40000 / 32767.5 - 1  # 0.22, where a conversion to 8 bit would clip to 1.0
    for grayscale, channels in ((None, 1), (True, 1), (False, 3)):
        x, _ = load_image_folder(tmp_path, grayscale=grayscale)
        assert x.shape == (1, channels, 2, 3)
        assert torch.allclose(x, torch.full_like(x, expected))


def test_mixed_bit_depths_and_modes(tmp_path):
    Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16)).save(tmp_path / "a.png")
    _img(tmp_path / "b.png", "L", (2, 2), 0)
    _img(tmp_path / "c.png", "RGBA", (2, 2), (255, 255, 255, 0))
    with pytest.raises(ValueError, match=r"a.png is 2x2 I;16 but .*b.png is 2x2 L; .*grayscale"):
        load_image_folder(tmp_path)
    x, _ = load_image_folder(tmp_path, grayscale=True)  # each scaled by its own depth
    assert x.shape == (3, 1, 2, 2) and x[0].eq(1).all() and x[1].eq(-1).all() and x[2].eq(1).all()


def test_unranged_modes_are_refused(tmp_path, monkeypatch):
    _img(tmp_path / "a.png", "L", (2, 2), 0)
    monkeypatch.setattr(files_module, "_decode", lambda file: Image.new("F", (2, 2)))
    with pytest.raises(ValueError, match=r"Pillow mode 'F' \(32-bit float pixels\), which has no"):
        load_image_folder(tmp_path, grayscale=True)


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    Image.new("L", (4, 2), 0).save(tmp_path / "a.jpg", exif=exif)  # stored 4 wide, 2 high
    x, _ = load_image_folder(tmp_path)
    assert x.shape == (1, 1, 4, 2)  # upright: 2 wide, 4 high


def test_numeric_class_folders_sort_numerically(tmp_path):
    for name in ("10", "2", "0"):
        _img(tmp_path / name / "a.png", "L", (2, 2), int(name))
    folder = read_image_folder(tmp_path)
    assert folder.class_names == [0, 2, 10]  # ints, in numeric order: folder "2" is class 1
    assert folder.labels.tolist() == [0, 1, 2]
    assert torch.allclose(folder.x[:, 0, 0, 0], torch.tensor([0.0, 2.0, 10.0]) / 127.5 - 1)
    _img(tmp_path / "01" / "a.png", "L", (2, 2), 1)  # not a canonical integer: names as text
    assert read_image_folder(tmp_path).class_names == ["0", "01", "10", "2"]


def test_symlink_loop_and_dangling_link(tmp_path):
    _img(tmp_path / "a.png", "L", (2, 2), 0)
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    with pytest.raises(ValueError, match="cannot read image .*loop.png: .*symbolic links"):
        load_image_folder(tmp_path)
    (tmp_path / "loop.png").unlink()
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="cannot read image .*gone.png: .*No such file"):
        load_image_folder(tmp_path)


def test_unlistable_folder(tmp_path, monkeypatch):
    _img(tmp_path / "a.png", "L", (2, 2), 0)

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(tmp_path), "iterdir", refuse)
    with pytest.raises(ValueError, match="cannot list folder .*: .*Permission denied"):
        load_image_folder(tmp_path)


def test_image_folder_is_a_file_or_too_large(tmp_path, monkeypatch):
    _img(tmp_path / "a.png", "L", (2, 2), 0)
    with pytest.raises(ValueError, match="a.png' is a file, not a folder of images"):
        load_image_folder(tmp_path / "a.png")
    monkeypatch.setattr(files_module, "_physical_memory", lambda: 8)
    with pytest.raises(ValueError, match=r": 1 images of 2x2x1: needs .* GiB of memory"):
        load_image_folder(tmp_path)


def test_empty_class_folder_is_named(tmp_path):
    _img(tmp_path / "cat" / "1.png", "L", (2, 2), 0)
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / ".DS_Store").write_bytes(b"")  # hidden files do not count
    with pytest.raises(ValueError, match=r"class folder .*dog contains no images; add images or"):
        load_image_folder(tmp_path)


def test_a_column_named_like_labels_read_as_a_feature_gets_a_hint(tmp_path, caplog):
    path = tmp_path / "t.csv"
    path.write_text("a,b,Label\n0.1,0.2,0\n0.3,0.4,1\n0.5,0.6,1\n")
    with caplog.at_level("WARNING", logger="flowmatch.data.files"):
        x, labels = load_csv(path)
    assert x.shape == (3, 3) and labels is None  # still read as asked: three features
    assert "column 'Label' is read as a feature" in caplog.text
    assert "data.label_column=Label" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="flowmatch.data.files"):
        load_csv(path, label_column="Label")
        (tmp_path / "u.csv").write_text("a,b\n0.1,0.2\n0.3,0.4\n")
        load_csv(tmp_path / "u.csv")
    assert "read as a feature" not in caplog.text
