"""Loading user data from disk: NumPy arrays, CSV tables and folders of images.

Every loader returns data-space arrays ``(x, labels)``: ``x`` float32 ``(N, *D)``, finite, and
``labels`` int64 ``(N,)`` class indices ``0..K-1`` or ``None``. Labels go through
:func:`flowmatch.data.labels.encode_labels` whatever the file kind: the distinct values of the
file, sorted, become the classes ``0..K-1``, and the ``read_*`` functions also return the
original values (``class_names``). Standardisation and the train/test split happen later, in
:func:`flowmatch.data.registry.load_dataset`.

Files from the outside world are treated as hostile: every failure (truncated, corrupt or
mislabelled files, pickles, text that is not UTF-8, decompression bombs, bad cells) is one
``ValueError`` that names the file and, where it applies, the line, column, index or member.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from flowmatch.data.labels import encode_labels
from flowmatch.interfaces import Condition

if TYPE_CHECKING:  # Pillow is an optional dependency, imported where images are read
    from PIL.Image import Image as PILImage

__all__ = [
    "ARRAY_SUFFIXES",
    "IMAGE_SUFFIXES",
    "ArrayFile",
    "CsvTable",
    "ImageFolder",
    "load_array_file",
    "load_csv",
    "load_image_folder",
    "read_array_file",
    "read_condition_file",
    "read_csv_table",
    "read_image_folder",
]

#: File suffixes read by :func:`load_array_file`.
ARRAY_SUFFIXES: tuple[str, ...] = (".npy", ".npz")
#: Image file suffixes read by :func:`load_image_folder` (case-insensitive).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")

_DATA_KEYS = ("x", "data")
_LABEL_KEYS = ("labels", "y")
# Condition arrays of an .npz next to x/labels: continuous values (N, C) and context (N, *S).
_COND_KEYS = ("cond", "context")
# Pillow mode -> number of channels, for the 8-bit modes kept as they are when grayscale=None.
_NATIVE_MODES = {"1": 1, "L": 1, "RGB": 3, "RGBA": 4}
# 16-bit grayscale (PNG): one channel, x = v / 32767.5 - 1.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# 32-bit integer / float images carry no fixed value range to map onto [-1, 1].
_UNRANGED_MODES = ("I", "F")

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK"
_PICKLE_MAGIC = b"\x80"
_NO_PICKLES = (
    "flowmatch loads with allow_pickle=False because unpickling can run arbitrary code; "
    "save plain numeric arrays with np.save / np.savez"
)
# What zipfile / zlib raise on damaged archives (a bad CRC is zipfile.BadZipFile, an encrypted
# member RuntimeError, an unknown compression method NotImplementedError).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, NotImplementedError)
# Canonical integer folder names ("0", "7", "12", "-1"): such class folders sort numerically.
_INT_NAME = re.compile(r"0|-?[1-9][0-9]*")

logger = logging.getLogger(__name__)


def _as_path(path: str | os.PathLike[str]) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def _existing(p: Path, *, folder: bool) -> Path:
    """Raise ``ValueError`` unless ``p`` is an existing file (or folder); return it."""
    if folder and p.is_file():
        raise ValueError(f"{str(p)!r} is a file, not a folder of images")
    if not folder and p.is_dir():
        raise ValueError(f"{str(p)!r} is a folder, not a file")
    if not (p.is_dir() if folder else p.is_file()):
        raise ValueError(f"no such {'folder' if folder else 'file'}: {str(p)!r}")
    return p


def _physical_memory() -> int | None:
    """Bytes of RAM of this machine, or ``None`` where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(nbytes: int, what: str) -> None:
    """Refuse, before allocating, data that cannot fit in this machine's RAM."""
    total = _physical_memory()
    if total is not None and nbytes > total:
        raise ValueError(
            f"{what}: needs {nbytes / 2**30:.3g} GiB of memory, more than this machine's "
            f"{total / 2**30:.3g} GiB; use a smaller file (or smaller images)"
        )


def _check_finite_array(x: np.ndarray, what: str) -> None:
    """Raise ``ValueError`` with the count and first index of NaN/inf entries."""
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{what} has {int(bad.sum())} non-finite value(s) (NaN or inf); the first is at "
            f"index {first}; remove or impute them before training"
        )


def _features_to_tensor(x: np.ndarray, what: str) -> Tensor:
    """Validate samples ``(N, *D)`` and convert them to float32 (booleans become 0.0 / 1.0)."""
    if x.dtype.kind not in "biuf":
        reason = {
            "c": "complex values have no order and no float32 form; split real and imaginary "
            "parts into separate features",
            "U": "text cannot be a feature; encode it as numbers first",
            "S": "text cannot be a feature; encode it as numbers first",
            "M": "dates are not numbers; convert them (e.g. to seconds) first",
            "m": "time spans are not numbers; convert them (e.g. to seconds) first",
        }.get(x.dtype.kind, "only booleans, integers and floats are read")
        raise ValueError(f"{what} must hold real numbers, got dtype {x.dtype}: {reason}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(
            f"{what} must have shape (N, *D) with N >= 1, got {x.shape}; reshape "
            "one-dimensional data to (N, 1)"
        )
    if math.prod(x.shape[1:]) == 0:
        raise ValueError(f"{what} has samples with no entries: shape {x.shape} (a zero dimension)")
    _check_finite_array(x, what)
    return torch.from_numpy(_to_float32(x, what))


def _to_float32(x: np.ndarray, what: str) -> np.ndarray:
    # Values beyond the float32 range (|x| > 3.4e38) become inf in the cast: reported, not hidden.
    with np.errstate(over="ignore"):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    if not x32.flags.writeable:  # a read-only buffer: torch.from_numpy would warn on stderr
        x32 = x32.copy()
    _check_finite_array(x32, f"{what} converted to float32 (|values| must be < 3.4e38)")
    return x32


def _unique_key(keys: list[str], candidates: tuple[str, ...], path: Path) -> str | None:
    found = [k for k in candidates if k in keys]
    if len(found) > 1:
        raise ValueError(f"{path} has both keys {found}; keep only one of {list(candidates)}")
    return found[0] if found else None


# --------------------------------------------------------------------------- .npy / .npz


def _read_npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    if version == (1, 0):
        return fmt.read_array_header_1_0(fh)
    if version == (2, 0):
        return fmt.read_array_header_2_0(fh)
    reader = getattr(fmt, "_read_array_header", None)  # format 3.0 (utf-8 header), rare
    if reader is None:
        raise ValueError(f".npy format version {version} is not supported")
    return reader(fh, version)


def _read_npy(fh: IO[bytes], size: int, what: str) -> np.ndarray:
    """Read one ``.npy`` stream of ``size`` bytes; its header must match its size exactly.

    The check comes before any allocation: a header declaring a huge shape (a truncated file,
    or a hostile one) is refused without trying to allocate it.
    """
    try:
        shape, fortran, dtype = _read_npy_header(fh)
    except (ValueError, EOFError) as err:
        raise ValueError(f"{what}: unreadable .npy header ({err})") from err
    if dtype.hasobject:
        raise ValueError(
            f"{what}: it holds an object array (dtype {dtype}), which NumPy stores as a "
            f"pickle: refused; {_NO_PICKLES}"
        )
    if any(d < 0 for d in shape):
        raise ValueError(f"{what}: the header declares an invalid shape {shape}")
    count = math.prod(shape)
    need, left = count * dtype.itemsize, size - fh.tell()
    if left < need:
        raise ValueError(
            f"{what}: truncated: the header declares shape {shape} of {dtype} = {need} bytes "
            f"but only {left} follow (the file was cut off or not fully written)"
        )
    if left > need:
        raise ValueError(
            f"{what}: {left - need} bytes follow the array of shape {shape} (several arrays "
            "saved into one file?); save one array per .npy file, or several with np.savez"
        )
    _check_memory(need + 4 * count, what)  # the raw array and its float32 copy
    try:
        data = fh.read(need)
        arr = np.frombuffer(data, dtype=dtype, count=count)
    except MemoryError as err:
        raise ValueError(f"{what}: not enough memory for {need} bytes") from err
    except ValueError as err:
        raise ValueError(f"{what}: cannot read the array data ({err})") from err
    return arr.reshape(shape, order="F" if fortran else "C")


def _sniff(p: Path) -> bytes:
    try:
        with p.open("rb") as fh:
            return fh.read(len(_NPY_MAGIC))
    except OSError as err:
        raise ValueError(f"cannot read {str(p)!r}: {err}") from err


def _check_format(p: Path, suffix: str) -> None:
    """Refuse empty files, pickles and files whose content does not match their suffix."""
    head = _sniff(p)
    fail = f"cannot read {str(p)!r} as {suffix}"
    if not head:
        raise ValueError(f"{fail}: the file is empty (0 bytes)")
    if head.startswith(_NPY_MAGIC):
        if suffix == ".npz":
            raise ValueError(f"{fail}: it is a single .npy array, not an archive; rename it .npy")
        return
    if head.startswith(_ZIP_MAGIC):
        if suffix == ".npy":
            raise ValueError(f"{fail}: it is a zip archive (an .npz file?); rename it .npz")
        return
    if head.startswith(_PICKLE_MAGIC):
        raise ValueError(f"{fail}: it is a Python pickle, refused; {_NO_PICKLES}")
    expected = "the \\x93NUMPY magic" if suffix == ".npy" else "a zip archive"
    raise ValueError(f"{fail}: not a NumPy file (it does not start with {expected})")


def _read_npz(
    p: Path,
) -> tuple[np.ndarray, np.ndarray | None, str, str | None, dict[str, np.ndarray]]:
    """``(x, labels, x_key, labels_key, conditions)`` of an ``.npz``, reading the members used.

    ``conditions`` holds the arrays stored under ``"cond"`` and ``"context"``.
    """
    try:
        archive = zipfile.ZipFile(p)
    except _ZIP_ERRORS as err:
        raise ValueError(
            f"cannot read {str(p)!r} as .npz: not a readable zip archive ({err}); the file "
            "is truncated or damaged"
        ) from err
    with archive:
        infos = archive.infolist()
        others = [i.filename for i in infos if not i.filename.endswith(".npy")]
        if others:
            raise ValueError(
                f"{p} has members that are not .npy arrays: {others[:5]}; an .npz written by "
                "np.savez holds only arrays"
            )
        members = {i.filename[: -len(".npy")]: i for i in infos}
        keys = list(members)
        if len(keys) != len(infos):
            raise ValueError(f"{p} holds several members of the same name; re-create it")
        x_key = _unique_key(keys, _DATA_KEYS, p)
        y_key = _unique_key(keys, _LABEL_KEYS, p)
        if x_key is None:
            rest = [k for k in keys if k != y_key and k not in _COND_KEYS]
            if len(rest) != 1:
                raise ValueError(
                    f"{p} must store the samples under 'x' or 'data' (or hold a single "
                    f"array), got keys {keys}"
                )
            x_key = rest[0]
        unknown = sorted(set(keys) - {x_key, y_key, *_COND_KEYS})
        if unknown:
            raise ValueError(
                f"{p} has unexpected keys {unknown}; expected samples under {x_key!r}, "
                f"optional labels under one of {list(_LABEL_KEYS)} and optional conditions "
                f"under {list(_COND_KEYS)}"
            )
        x = _read_member(archive, members[x_key], p)
        y = None if y_key is None else _read_member(archive, members[y_key], p)
        conds = {k: _read_member(archive, members[k], p) for k in _COND_KEYS if k in members}
    return x, y, x_key, y_key, conds


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, p: Path) -> np.ndarray:
    what = f"cannot read member {info.filename!r} of {p}"
    try:
        with archive.open(info) as fh:
            arr = _read_npy(fh, info.file_size, what)
            fh.read()  # reach the member's end: that is where zipfile checks the CRC
    except _ZIP_ERRORS as err:
        raise ValueError(
            f"{what}: corrupt ({err}); the file was damaged or not fully written"
        ) from err
    return arr


@dataclass(frozen=True)
class ArrayFile:
    """A ``.npy``/``.npz`` file read by :func:`read_array_file`.

    Attributes:
        x: samples, float32 ``(N, *D)``.
        labels: int64 ``(N,)`` class indices ``0..K-1`` or ``None``.
        class_names: the original label value of each class ``0..K-1`` (empty when
            unlabelled).
        values: continuous conditions float32 ``(N, C)`` (``.npz`` key ``"cond"``) or ``None``.
        context: context tensors float32 ``(N, *S)`` (``.npz`` key ``"context"``) or ``None``.
    """

    x: Tensor
    labels: Tensor | None
    class_names: list = field(default_factory=list)
    values: Tensor | None = None
    context: Tensor | None = None


def _condition_arrays(
    conds: dict[str, np.ndarray], n: int | None, p: Path
) -> tuple[Tensor | None, Tensor | None]:
    """``(values (N, C), context (N, *S))`` from the ``cond``/``context`` arrays of ``p``.

    ``n`` is the required number of rows (``None``: any, the same for both).
    """
    out: list[Tensor | None] = []
    for key, shape in (("cond", "(N, C)"), ("context", "(N, *S)")):
        arr = conds.get(key)
        if arr is None:
            out.append(None)
            continue
        what = f"condition array {key!r} in {p}"
        if key == "cond" and arr.ndim == 1:
            raise ValueError(f"{what} must have shape {shape}, got {arr.shape}; reshape to (N, 1)")
        if key == "cond" and arr.ndim != 2:
            raise ValueError(f"{what} must have shape {shape}, got {arr.shape}")
        if n is not None and arr.ndim >= 1 and arr.shape[0] != n:
            raise ValueError(f"{what} must have {n} rows (one per sample), got shape {arr.shape}")
        out.append(_features_to_tensor(arr, what))
    values, context = out
    if values is not None and context is not None and len(values) != len(context):
        raise ValueError(
            f"condition arrays 'cond' and 'context' in {p} must have the same number of rows, "
            f"got {len(values)} and {len(context)}"
        )
    return values, context


def read_array_file(path: str | os.PathLike[str]) -> ArrayFile:
    """Read a ``.npy``/``.npz`` file like :func:`load_array_file`, keeping the class names.

    Args:
        path: the file; its suffix selects the format.

    Returns:
        An :class:`ArrayFile` ``(x, labels, class_names)``.

    Raises:
        TypeError, ValueError: as :func:`load_array_file`.
    """
    p = _as_path(path)
    suffix = p.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise ValueError(f"path {str(p)!r} must end in one of {list(ARRAY_SUFFIXES)}")
    _existing(p, folder=False)
    _check_format(p, suffix)
    if suffix == ".npy":
        with p.open("rb") as fh:
            arr = _read_npy(fh, p.stat().st_size, f"cannot read {str(p)!r} as .npy")
        return ArrayFile(_features_to_tensor(arr, f"array in {p}"), None, [])
    x_np, y_np, x_key, y_key, conds = _read_npz(p)
    x = _features_to_tensor(x_np, f"array {x_key!r} in {p}")
    values, context = _condition_arrays(conds, len(x), p)
    if y_np is None:
        return ArrayFile(x, None, [], values, context)
    what = f"labels {y_key!r} in {p}"
    if y_np.shape != (len(x),):
        raise ValueError(f"{what} must have shape (N,) = ({len(x)},), got {y_np.shape}")
    labels, class_names = encode_labels(y_np, what)
    return ArrayFile(x, labels, class_names, values, context)


def load_array_file(path: str | os.PathLike[str]) -> tuple[Tensor, Tensor | None]:
    """Read samples (and optional labels) from a ``.npy`` or ``.npz`` file.

    ``.npy``: the array is ``x``. ``.npz``: ``x`` is the array stored under ``"x"`` or
    ``"data"`` (or the only array in the file); labels, optional, are stored under
    ``"labels"`` or ``"y"``; continuous conditions ``(N, C)``, optional, under ``"cond"``
    and context tensors ``(N, *S)`` under ``"context"`` (returned by :func:`read_array_file`
    as :attr:`ArrayFile.values` / :attr:`ArrayFile.context`, one row per sample, finite).
    Any other key is an error. Boolean samples become ``0.0``/``1.0``;
    complex, text, date and structured arrays are refused. Pickled (object) arrays are refused:
    the file is read with ``allow_pickle=False``. Labels are integers (of any width, negative
    ones included), booleans, or floats holding exact integers; they are remapped to
    ``0..K-1`` in sorted order (:func:`~flowmatch.data.labels.encode_labels`; the original
    values are :attr:`ArrayFile.class_names` of :func:`read_array_file`).

    Args:
        path: the file; its suffix selects the format.

    Returns:
        ``(x, labels)``: ``x`` float32 ``(N, *D)``; ``labels`` int64 ``(N,)`` or ``None``.

    Raises:
        TypeError: ``path`` is not a str/PathLike.
        ValueError: missing file or a folder, unsupported suffix, an empty, truncated or
            corrupt file (bad zip CRC), content that does not match the suffix, a pickle or
            object array, an array too large for this machine's memory, ambiguous or unknown
            ``.npz`` keys or members, ``x`` not real-valued or not ``(N, *D)`` with
            ``N >= 1`` and non-empty samples, NaN/inf in ``x`` (the message gives their count
            and the first index), labels not of shape ``(N,)`` or not integers (NaN, 2.5 or
            ``|label| > 2**53`` in floating point).

    Example:
        >>> import numpy as np, tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "pts.npz")
        >>> np.savez(f, x=np.zeros((5, 2)), labels=np.array([7, 7, -1, 3, 7]))
        >>> x, y = load_array_file(f)
        >>> tuple(x.shape), y.tolist(), read_array_file(f).class_names
        ((5, 2), [2, 2, 0, 1, 2], [-1, 3, 7])
    """
    arrays = read_array_file(path)
    return arrays.x, arrays.labels


def read_condition_file(path: str | os.PathLike[str]) -> Condition:
    """Read the conditions of samples to generate from an ``.npz`` (``flowmatch sample --cond``).

    The archive holds one or more of: ``"labels"`` (class ids ``(N,)``, integers, the trained
    classes ``0..K-1``; not remapped), ``"cond"`` (continuous values ``(N, C)``, in data
    space: the units of the training file) and ``"context"`` (``(N, *S)``). All have the same
    number of rows ``N``; one row stands for every sample. Read with the same safeguards as
    :func:`read_array_file` (no pickles, sizes checked before reading).

    Args:
        path: the ``.npz`` file.

    Returns:
        A :class:`~flowmatch.interfaces.Condition` (values and context float32).

    Raises:
        TypeError: ``path`` is not a str/PathLike.
        ValueError: not a readable ``.npz``, no or unknown keys, labels that are not integer
            ``(N,)``, values not ``(N, C)``, rows that differ, non-finite values.
    """
    p = _as_path(path)
    if p.suffix.lower() != ".npz":
        raise ValueError(f"condition file {str(p)!r} must be an .npz (arrays labels/cond/context)")
    _existing(p, folder=False)
    _check_format(p, ".npz")
    allowed = ("labels", *_COND_KEYS)
    try:
        archive = zipfile.ZipFile(p)
    except _ZIP_ERRORS as err:
        raise ValueError(
            f"cannot read {str(p)!r} as .npz: not a readable zip archive ({err})"
        ) from err
    with archive:
        members = {i.filename.removesuffix(".npy"): i for i in archive.infolist()}
        unknown = sorted(set(members) - set(allowed))
        if unknown or not members:
            raise ValueError(
                f"condition file {p} must hold arrays named {list(allowed)}, got {sorted(members)}"
            )
        arrays = {k: _read_member(archive, info, p) for k, info in members.items()}
    labels_np = arrays.pop("labels", None)
    n = None if labels_np is None else (len(labels_np) if labels_np.ndim else 0)
    if labels_np is not None and (labels_np.ndim != 1 or labels_np.dtype.kind not in "iu"):
        raise ValueError(
            f"labels in {p} must be integer class ids of shape (N,), got shape "
            f"{labels_np.shape} dtype {labels_np.dtype}"
        )
    values, context = _condition_arrays(arrays, n, p)
    labels = None if labels_np is None else torch.from_numpy(labels_np.astype(np.int64))
    return Condition(labels=labels, values=values, context=context)


# --------------------------------------------------------------------------- CSV


@dataclass(frozen=True)
class CsvTable:
    """A CSV file read by :func:`read_csv_table`.

    Attributes:
        x: features, float32 ``(N, F)``.
        labels: int64 ``(N,)`` class indices ``0..K-1`` (from ``label_column``) or ``None``.
        columns: the ``F`` feature column names, in file order (``"column i"`` without header).
        class_names: the original label value of each class ``0..K-1`` (empty when
            unlabelled).
        values: the ``cond_columns`` as continuous conditions, float32 ``(N, C)``, or ``None``.
        cond_columns: the names of those ``C`` columns, in the order given.
    """

    x: Tensor
    labels: Tensor | None
    columns: list[str]
    class_names: list = field(default_factory=list)
    values: Tensor | None = None
    cond_columns: list[str] = field(default_factory=list)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _separator_hint(cell: str) -> str:
    for sep, name in ((";", "';'"), ("\t", "tabs")):
        if sep in cell:
            return f"; the file seems to be separated by {name}, but CSV cells are split at ','"
    return ""


def _first_bad_cell(cells: list[str], lines: list[int], column: str, p: Path, what: str) -> None:
    """Raise naming the first cell that is not a finite number (``what`` says what was wanted)."""
    for cell, line in zip(cells, lines, strict=True):
        stripped = cell.strip()
        if not (_is_number(stripped) and math.isfinite(float(stripped))):
            shown = "an empty cell" if not stripped else f"{cell!r}"
            raise ValueError(
                f"{p}, line {line}, column {column!r}: expected {what}, got {shown}"
                + _separator_hint(cell)
            )


def _parse_column(cells: list[str], lines: list[int], column: str, p: Path) -> np.ndarray:
    """Convert one feature column of strings, reporting the file line of the first bad cell."""
    try:
        values = np.asarray(cells, dtype=np.str_).astype(np.float64)
        if np.isfinite(values).all():
            return values
    except ValueError:
        pass
    # Slow path, only on failure: parse cell by cell to name the first offending one.
    _first_bad_cell(cells, lines, column, p, "a finite number")
    raise AssertionError("unreachable: a bad cell was found above")  # pragma: no cover


def _parse_label_column(
    cells: list[str], lines: list[int], column: str, p: Path
) -> tuple[Tensor, list[int] | list[str]]:
    """Labels of a CSV column: integers exactly (int64), else floats holding integers."""
    values: np.ndarray | None = None
    try:
        values = np.asarray(cells, dtype=np.str_).astype(np.int64)
    except (ValueError, OverflowError):
        # "3.0", "1e30" or text: read as floats, which encode_labels checks for integrality.
        try:
            values = np.asarray(cells, dtype=np.str_).astype(np.float64)
        except ValueError:
            _first_bad_cell(cells, lines, column, p, "an integer class label")
    assert values is not None  # _first_bad_cell raised otherwise
    return encode_labels(values, str(p), where=lambda i: f"line {lines[i]}, column {column!r}")


def _line_of(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def _read_text(p: Path) -> str:
    """The file as UTF-8 text (a byte-order mark dropped); refuses NUL bytes and non-UTF-8."""
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {str(p)!r}: {err}") from err
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise ValueError(
            f"{p}, line {_line_of(raw, nul)}: contains a NUL byte; this is a binary "
            "file or text that is not UTF-8 (UTF-16?); save it as a UTF-8 CSV"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{p}, line {_line_of(raw, err.start)}: not UTF-8 text (byte "
            f"0x{raw[err.start]:02x} at offset {err.start}); save the file as UTF-8 (e.g. "
            "from latin-1: iconv -f latin1 -t utf-8)"
        ) from err


def _csv_rows(p: Path) -> list[tuple[int, list[str]]]:
    """Non-blank rows with the file line each ends on (quoted cells may span lines)."""
    reader = csv.reader(io.StringIO(_read_text(p), newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if any(c.strip() for c in row):
                rows.append((reader.line_num, row))
    except csv.Error as err:  # e.g. a cell beyond the csv module's field size limit
        raise ValueError(f"{p}, line {reader.line_num}: cannot parse the CSV ({err})") from err
    return rows


def _column_index(columns: list[str], name: str, key: str, p: Path) -> int:
    """The position of header ``name`` (``key`` names the option asking, e.g. label_column)."""
    matches = [i for i, c in enumerate(columns) if c == name]
    if len(matches) != 1:
        problem = "is not a column" if not matches else "names several columns"
        raise ValueError(f"{key}={name!r} {problem} of {p}; columns: {columns}")
    return matches[0]


#: Header names that usually hold class labels (a note suggests ``data.label_column``).
_LABEL_NAMES = frozenset({"label", "labels", "class", "classes", "target", "y", "category"})


def _column_roles(
    columns: list[str],
    has_header: bool,
    label_column: str | None,
    cond_names: list[str],
    p: Path,
) -> tuple[int | None, list[int], list[int]]:
    """``(label_idx, cond_idx, feature_idx)``: which columns are label, conditions, features."""
    for key, name in [("label_column", label_column)] + [("cond_columns", c) for c in cond_names]:
        if name is not None and not has_header:
            raise ValueError(
                f"{key}={name!r} needs a header row, but the first row of {p} "
                "is numeric; add a header line naming the columns"
            )
    label_idx = None
    if label_column is not None:
        label_idx = _column_index(columns, label_column, "label_column", p)
    cond_idx = [_column_index(columns, c, "cond_columns", p) for c in cond_names]
    feature_idx = [i for i in range(len(columns)) if i != label_idx and i not in cond_idx]
    if label_column is None and has_header:
        named = [columns[i] for i in feature_idx if columns[i].strip().lower() in _LABEL_NAMES]
        if named:  # a class column read as a feature is rarely what was meant
            logger.warning(
                "%s: column %r is read as a feature; to condition on it as class labels set "
                "data.label_column=%s",
                p,
                named[0],
                named[0],
            )
    if not feature_idx:
        raise ValueError(
            f"{p} has no feature columns besides label_column={label_column!r}"
            + (f" and cond_columns={cond_names}" if cond_names else "")
        )
    return label_idx, cond_idx, feature_idx


def _check_cond_columns(cond_columns: Sequence[str] | None, label_column: str | None) -> list[str]:
    if cond_columns is None:
        return []
    if isinstance(cond_columns, str) or not all(isinstance(c, str) for c in cond_columns):
        raise TypeError(f"cond_columns must be a list of column names, got {cond_columns!r}")
    names = list(cond_columns)
    if len(set(names)) != len(names):
        raise ValueError(f"cond_columns lists a column twice: {names}")
    if label_column is not None and label_column in names:
        raise ValueError(
            f"column {label_column!r} is both label_column and one of cond_columns {names}"
        )
    return names


def read_csv_table(
    path: str | os.PathLike[str],
    *,
    label_column: str | None = None,
    cond_columns: Sequence[str] | None = None,
) -> CsvTable:
    """Read a CSV file like :func:`load_csv`, keeping the feature column and class names.

    Args:
        path: the ``.csv`` file.
        label_column: header name of the label column, or ``None`` for unlabelled data.
        cond_columns: header names of continuous condition columns (e.g. ``["angle"]``),
            taken out of the features into :attr:`CsvTable.values` (finite numbers, like
            feature cells), or ``None``.

    Returns:
        A :class:`CsvTable` ``(x, labels, columns, class_names, values, cond_columns)``.

    Raises:
        TypeError, ValueError: as :func:`load_csv`; besides, a ``cond_columns`` entry that is
            not a column (or names several), is listed twice or is the ``label_column``,
            ``cond_columns`` on a file without header.
    """
    p = _as_path(path)
    if label_column is not None and not isinstance(label_column, str):
        raise TypeError(f"label_column must be a str or None, got {type(label_column).__name__}")
    cond_names = _check_cond_columns(cond_columns, label_column)
    _existing(p, folder=False)
    rows = _csv_rows(p)
    if not rows:
        raise ValueError(f"{p} is empty")
    first = [c.strip() for c in rows[0][1]]
    has_header = not all(_is_number(c) for c in first)
    columns = first if has_header else [f"column {i}" for i in range(len(first))]
    body = rows[1:] if has_header else rows
    if not body:
        raise ValueError(f"{p} has a header row but no data rows")
    for line, row in body:
        if len(row) != len(columns):
            raise ValueError(
                f"{p}, line {line}: expected {len(columns)} cells like the first row, got "
                f"{len(row)}"
            )
    label_idx, cond_idx, feature_idx = _column_roles(
        columns, has_header, label_column, cond_names, p
    )
    lines = [line for line, _ in body]
    feats = [_parse_column([r[i] for _, r in body], lines, columns[i], p) for i in feature_idx]
    x = torch.from_numpy(_to_float32(np.stack(feats, axis=1), f"table {p}"))
    values: Tensor | None = None
    if cond_idx:
        conds = [_parse_column([r[i] for _, r in body], lines, columns[i], p) for i in cond_idx]
        values = torch.from_numpy(_to_float32(np.stack(conds, axis=1), f"cond_columns of {p}"))
    labels: Tensor | None = None
    class_names: list[int] | list[str] = []
    if label_idx is not None:
        cells = [r[label_idx].strip() for _, r in body]
        labels, class_names = _parse_label_column(cells, lines, columns[label_idx], p)
    return CsvTable(x, labels, [columns[i] for i in feature_idx], class_names, values, cond_names)


def load_csv(
    path: str | os.PathLike[str], *, label_column: str | None = None
) -> tuple[Tensor, Tensor | None]:
    r"""Read a numeric comma-separated UTF-8 table; one row per sample.

    The first non-blank row is a header when any of its cells is not a number (a header made
    only of numeric names is therefore read as data). Blank rows are skipped; a UTF-8
    byte-order mark is ignored. Every other cell must be a finite number (``"nan"``, ``"inf"``
    and empty cells are errors naming the file line and the column). With ``label_column`` the
    named column is taken out of the features and read as integer class labels (``3`` and
    ``3.0`` are the same class; negative and sparse values are fine), remapped to ``0..K-1``
    in sorted order (the original values are :attr:`CsvTable.class_names` of
    :func:`read_csv_table`).

    Args:
        path: the ``.csv`` file.
        label_column: header name of the label column, or ``None`` for unlabelled data.

    Returns:
        ``(x, labels)``: ``x`` float32 ``(N, F)`` (all columns but the label column, in file
        order); ``labels`` int64 ``(N,)`` or ``None``.

    Raises:
        TypeError: ``path`` or ``label_column`` of the wrong type.
        ValueError: missing or empty file, a folder, text that is not UTF-8 or holds NUL bytes
            (the line is named), a CSV syntax error, rows of different lengths, a non-numeric,
            empty or non-finite cell (line and column named), ``label_column`` absent,
            duplicated or used on a file without header, no feature column, labels that are
            not integers (``1.5``, ``cat``, ``nan``, ``1e30``: line and column named).

    Example:
        >>> import tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "t.csv")
        >>> _ = open(f, "w").write("a,b,y\n1,2,5\n3,4,-1\n")
        >>> x, y = load_csv(f, label_column="y")
        >>> x.tolist(), y.tolist(), read_csv_table(f, label_column="y").class_names
        ([[1.0, 2.0], [3.0, 4.0]], [1, 0], [-1, 5])
    """
    table = read_csv_table(path, label_column=label_column)
    return table.x, table.labels


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageFolder:
    """A folder of images read by :func:`read_image_folder`.

    Attributes:
        x: images, float32 ``(N, C, H, W)`` in ``[-1, 1]``.
        labels: int64 ``(N,)`` class indices (subfolder layout) or ``None``.
        class_names: the subfolder of each class ``0..K-1`` (empty when unlabelled): its name,
            or its number when every subfolder name is an integer.
    """

    x: Tensor
    labels: Tensor | None
    class_names: list


def _list_dir(folder: Path) -> list[Path]:
    """Entries of ``folder`` except hidden ones (names starting with ``.``), sorted."""
    try:
        return sorted(e for e in folder.iterdir() if not e.name.startswith("."))
    except OSError as err:
        raise ValueError(f"cannot list folder {str(folder)!r}: {err}") from err


def _list_images(folder: Path, *, class_folder: bool = False) -> list[Path]:
    files = _list_dir(folder)
    others = [f.name for f in files if f.is_dir() or f.suffix.lower() not in IMAGE_SUFFIXES]
    if others:
        raise ValueError(
            f"{folder} must contain only image files {list(IMAGE_SUFFIXES)}, found {others[:5]}"
        )
    if not files:
        what = "class folder " if class_folder else ""
        raise ValueError(f"{what}{folder} contains no images; add images or remove it")
    return files


def _decode(file: Path) -> PILImage:
    """Open and fully decode one image, upright (EXIF orientation applied)."""
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            # Beyond Image.MAX_IMAGE_PIXELS Pillow only warns (beyond twice that it raises):
            # both are refused here, before the pixels are decoded.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                img.load()
                upright = ImageOps.exif_transpose(img)
                return img.copy() if upright is None else upright
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(
            f"{file} is refused as a possible decompression bomb: {err} (the limit is "
            "PIL.Image.MAX_IMAGE_PIXELS; raise it only for files you trust)"
        ) from err
    except MemoryError as err:
        raise ValueError(f"cannot read image {file}: not enough memory to decode it") from err
    except Exception as err:  # Pillow's decoders raise OSError, SyntaxError, ValueError, ...
        raise ValueError(f"cannot read image {file}: {err}") from err


def _pixels(file: Path, grayscale: bool | None) -> tuple[np.ndarray, str, float]:
    """``(pixels (H, W, C) uint8/uint16, the file's Pillow mode, half the value range)``."""
    img = _decode(file)
    mode = img.mode
    if mode in _UNRANGED_MODES:
        raise ValueError(
            f"{file} has Pillow mode {mode!r} (32-bit {'float' if mode == 'F' else 'integer'} "
            "pixels), which has no fixed value range to map onto [-1, 1]; save it as an 8-bit "
            "or 16-bit image"
        )
    if mode in _SIXTEEN_BIT_MODES:  # converting to "L" would clip at 255: scale instead
        arr16 = np.asarray(img).astype(np.uint16)[..., None]
        return (np.repeat(arr16, 3, axis=2) if grayscale is False else arr16), mode, 32767.5
    if grayscale is None:
        if mode not in _NATIVE_MODES:
            raise ValueError(
                f"{file} has Pillow mode {mode!r}; supported as-is: "
                f"{sorted(_NATIVE_MODES)} and 16-bit grayscale; pass grayscale=True or False "
                "to convert"
            )
        img = img.convert("L") if mode == "1" else img
    else:
        img = img.convert("L" if grayscale else "RGB")
    arr = np.asarray(img, dtype=np.uint8)
    return (arr[..., None] if arr.ndim == 2 else arr), mode, 127.5


def _class_files(folder: Path, entries: Sequence[Path]) -> tuple[list[Path], np.ndarray]:
    """Image files of the class subfolders and, per file, its folder's name or number."""
    names = [e.name for e in entries]
    numeric = all(_INT_NAME.fullmatch(n) for n in names)
    order = sorted(range(len(names)), key=lambda i: int(names[i]) if numeric else names[i])
    files: list[Path] = []
    owners: list[int | str] = []
    for i in order:
        fs = _list_images(folder / names[i], class_folder=True)
        files += fs
        owners += [int(names[i]) if numeric else names[i]] * len(fs)
    return files, np.asarray(owners)


def read_image_folder(
    path: str | os.PathLike[str], *, grayscale: bool | None = None
) -> ImageFolder:
    """Read a folder of images like :func:`load_image_folder`, keeping the class names.

    Args:
        path: the folder.
        grayscale: ``None`` keeps the images' own mode, ``True``/``False`` converts to
            ``"L"``/``"RGB"``.

    Returns:
        An :class:`ImageFolder` ``(x, labels, class_names)``.

    Raises:
        TypeError, ImportError, ValueError: as :func:`load_image_folder`.
    """
    folder = _as_path(path)
    if grayscale is not None and not isinstance(grayscale, bool):
        raise TypeError(f"grayscale must be True, False or None, got {grayscale!r}")
    _existing(folder, folder=True)
    try:
        import PIL  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "reading image folders needs Pillow: pip install pillow (or flowmatch[viz])"
        ) from err
    entries = _list_dir(folder)
    if not entries:
        raise ValueError(f"{folder} is empty; put images (or one subfolder per class) in it")
    labels: Tensor | None = None
    class_names: list[int] | list[str] = []
    if all(e.is_dir() for e in entries):
        files, owners = _class_files(folder, entries)
        labels, class_names = encode_labels(owners, f"class folders of {folder}", allow_text=True)
    elif any(e.is_dir() for e in entries):
        dirs = sorted(e.name for e in entries if e.is_dir())
        raise ValueError(
            f"{folder} mixes subfolders {dirs[:5]} and files; use only images (unlabelled) or "
            "only one subfolder per class (labelled)"
        )
    else:
        files = _list_images(folder)
    return ImageFolder(_stack_images(folder, files, grayscale), labels, class_names)


def _stack_images(folder: Path, files: list[Path], grayscale: bool | None) -> Tensor:
    """Decode every file into one float32 ``(N, C, H, W)`` array in ``[-1, 1]``."""
    first, first_mode, _ = _pixels(files[0], grayscale)
    h, w, c = first.shape
    _check_memory(4 * len(files) * h * w * c, f"{folder}: {len(files)} images of {w}x{h}x{c}")
    x = np.empty((len(files), c, h, w), dtype=np.float32)
    for i, file in enumerate(files):
        arr, mode, half = _pixels(file, grayscale)
        if arr.shape != first.shape or (grayscale is None and mode != first_mode):
            raise ValueError(
                f"all images must have the same size and mode: {files[0]} is {w}x{h} "
                f"{first_mode} but {file} is {arr.shape[1]}x{arr.shape[0]} {mode}; resize "
                "them or pass grayscale=True/False to unify the mode"
            )
        x[i] = arr.transpose(2, 0, 1)
        x[i] /= half  # x = pixel / 127.5 - 1 (8 bit), pixel / 32767.5 - 1 (16 bit)
        x[i] -= 1.0
    return torch.from_numpy(x)


def load_image_folder(
    path: str | os.PathLike[str], *, grayscale: bool | None = None
) -> tuple[Tensor, Tensor | None]:
    """Read a folder of images (PNG, JPEG, BMP) into one tensor scaled to ``[-1, 1]``.

    ``x = pixel / 127.5 - 1`` for 8-bit pixels, ``pixel / 32767.5 - 1`` for 16-bit grayscale
    PNGs. Images are turned upright by their EXIF orientation tag first, as viewers show them.
    Two layouts are accepted:

    - only image files: unlabelled data, in sorted file-name order;
    - only subfolders: one class per subfolder, labels ``0..K-1`` in sorted subfolder-name
      order (numeric order when every subfolder name is an integer: ``2`` before ``10``);
      each subfolder holds only image files.

    Hidden entries (names starting with ``.``) are skipped; anything else (other files,
    nested folders, a mix of files and subfolders) is an error. All images must have the same
    size. With ``grayscale=None`` they must also share one Pillow mode, kept as is: ``"L"``,
    ``"1"`` or 16-bit grayscale -> 1 channel, ``"RGB"`` -> 3, ``"RGBA"`` -> 4.
    ``grayscale=True`` converts every image to 1 channel and ``grayscale=False`` to 3 (RGB,
    alpha dropped, palettes expanded), so mixed modes are then allowed. 32-bit integer or
    float images (modes ``"I"``, ``"F"``) are refused: they have no fixed range.

    Args:
        path: the folder.
        grayscale: ``None`` keeps the images' own mode, ``True``/``False`` converts as above.

    Returns:
        ``(x, labels)``: ``x`` float32 ``(N, C, H, W)`` in ``[-1, 1]``; ``labels`` int64
        ``(N,)`` (subfolder layout) or ``None``.

    Raises:
        TypeError: ``path`` or ``grayscale`` of the wrong type.
        ImportError: Pillow is not installed.
        ValueError: missing or empty folder (or a file), an empty class folder, non-image
            entries, unreadable, truncated or corrupt images, a possible decompression bomb
            (more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels), images that together exceed
            this machine's memory, an unsupported mode with ``grayscale=None``, or two images
            of different size or mode (both files are named with their sizes).
    """
    folder = read_image_folder(path, grayscale=grayscale)
    return folder.x, folder.labels
