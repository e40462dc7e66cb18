"""Loading user data from disk: NumPy arrays, CSV tables and folders of images.

Every loader returns data-space arrays ``(x, labels)``: ``x`` float32 ``(N, *D)``, finite, and
``labels`` int64 ``(N,)`` (non-negative) or ``None``. Standardisation and the train/test split
happen later, in :func:`flowmatch.data.registry.load_dataset`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:  # Pillow is an optional dependency, imported where images are read
    from PIL.Image import Image as PILImage

__all__ = [
    "ARRAY_SUFFIXES",
    "IMAGE_SUFFIXES",
    "CsvTable",
    "ImageFolder",
    "load_array_file",
    "load_csv",
    "load_image_folder",
    "read_csv_table",
    "read_image_folder",
]

#: File suffixes read by :func:`load_array_file`.
ARRAY_SUFFIXES: tuple[str, ...] = (".npy", ".npz")
#: Image file suffixes read by :func:`load_image_folder` (case-insensitive).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")

_DATA_KEYS = ("x", "data")
_LABEL_KEYS = ("labels", "y")
# Pillow mode -> number of channels, for the modes kept as they are when grayscale=None.
_NATIVE_MODES = {"1": 1, "L": 1, "RGB": 3, "RGBA": 4}


def _as_path(path: str | os.PathLike[str]) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def _existing(p: Path, *, folder: bool) -> Path:
    """Raise ``ValueError`` unless ``p`` is an existing file (or folder); return it."""
    if not (p.is_dir() if folder else p.is_file()):
        raise ValueError(f"no such {'folder' if folder else 'file'}: {str(p)!r}")
    return p


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
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{what} must hold real numbers, got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(
            f"{what} must have shape (N, *D) with N >= 1, got {x.shape}; reshape "
            "one-dimensional data to (N, 1)"
        )
    _check_finite_array(x, what)
    return torch.from_numpy(_to_float32(x, what))


def _to_float32(x: np.ndarray, what: str) -> np.ndarray:
    # Values beyond the float32 range (|x| > 3.4e38) become inf in the cast: reported, not hidden.
    with np.errstate(over="ignore"):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    _check_finite_array(x32, f"{what} converted to float32 (|values| must be < 3.4e38)")
    return x32


def _labels_to_tensor(labels: np.ndarray, n: int, what: str) -> Tensor:
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integers, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{what} must have shape (N,) = ({n},), got {labels.shape}")
    if labels.min() < 0:
        first = int(np.argmax(labels < 0))
        raise ValueError(
            f"{what} must be >= 0, got {labels[first]} at index {first}; use class indices 0..K-1"
        )
    return torch.from_numpy(labels.astype(np.int64))


def _unique_key(keys: list[str], candidates: tuple[str, ...], path: Path) -> str | None:
    found = [k for k in candidates if k in keys]
    if len(found) > 1:
        raise ValueError(f"{path} has both keys {found}; keep only one of {list(candidates)}")
    return found[0] if found else None


def load_array_file(path: str | os.PathLike[str]) -> tuple[Tensor, Tensor | None]:
    """Read samples (and optional labels) from a ``.npy`` or ``.npz`` file.

    ``.npy``: the array is ``x``. ``.npz``: ``x`` is the array stored under ``"x"`` or
    ``"data"`` (or the only array in the file); labels, optional, are stored under
    ``"labels"`` or ``"y"``. Any other key is an error. Pickled (object) arrays are refused.

    Args:
        path: the file; its suffix selects the format.

    Returns:
        ``(x, labels)``: ``x`` float32 ``(N, *D)``; ``labels`` int64 ``(N,)`` or ``None``.

    Raises:
        TypeError: ``path`` is not a str/PathLike.
        ValueError: missing file, unsupported suffix, unreadable or pickled file, ambiguous or
            unknown ``.npz`` keys, ``x`` not numeric or not ``(N, *D)``, NaN/inf in ``x``
            (the message gives their count and the first index), labels not non-negative
            integers of shape ``(N,)``.

    Example:
        >>> import numpy as np, tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "pts.npz")
        >>> np.savez(f, x=np.zeros((5, 2)), labels=np.arange(5))
        >>> x, y = load_array_file(f)
        >>> tuple(x.shape), y.tolist()
        ((5, 2), [0, 1, 2, 3, 4])
    """
    p = _as_path(path)
    suffix = p.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise ValueError(f"path {str(p)!r} must end in one of {list(ARRAY_SUFFIXES)}")
    _existing(p, folder=False)
    try:
        loaded = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"cannot read {str(p)!r} as {suffix}: {err}") from err
    if suffix == ".npy":
        return _features_to_tensor(loaded, f"array in {p}"), None
    with loaded:
        keys = list(loaded.files)
        x_key = _unique_key(keys, _DATA_KEYS, p)
        y_key = _unique_key(keys, _LABEL_KEYS, p)
        if x_key is None:
            rest = [k for k in keys if k != y_key]
            if len(rest) != 1:
                raise ValueError(
                    f"{p} must store the samples under 'x' or 'data' (or hold a single "
                    f"array), got keys {keys}"
                )
            x_key = rest[0]
        unknown = sorted(set(keys) - {x_key, y_key})
        if unknown:
            raise ValueError(
                f"{p} has unexpected keys {unknown}; expected samples under {x_key!r} and "
                f"optional labels under one of {list(_LABEL_KEYS)}"
            )
        try:
            x_np = loaded[x_key]
            y_np = None if y_key is None else loaded[y_key]
        except ValueError as err:
            raise ValueError(f"cannot read {str(p)!r}: {err}") from err
    x = _features_to_tensor(x_np, f"array {x_key!r} in {p}")
    labels = None if y_np is None else _labels_to_tensor(y_np, len(x), f"labels {y_key!r} in {p}")
    return x, labels


@dataclass(frozen=True)
class CsvTable:
    """A CSV file read by :func:`read_csv_table`.

    Attributes:
        x: features, float32 ``(N, F)``.
        labels: int64 ``(N,)`` class labels (from ``label_column``) or ``None``.
        columns: the ``F`` feature column names, in file order (``"column i"`` without header).
    """

    x: Tensor
    labels: Tensor | None
    columns: list[str]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_column(
    cells: list[str], lines: list[int], column: str, p: Path, *, integer: bool
) -> np.ndarray:
    """Convert one column of strings, reporting the file line of the first bad cell."""
    try:
        values = np.asarray(cells, dtype=np.str_).astype(np.float64)
        if np.isfinite(values).all() and (not integer or (values == np.round(values)).all()):
            return values
    except ValueError:
        pass
    # Slow path, only on failure: parse cell by cell to name the first offending one.
    what = "an integer class label >= 0" if integer else "a finite number"
    parsed = []
    for cell, line in zip(cells, lines, strict=True):
        stripped = cell.strip()
        value = float(stripped) if _is_number(stripped) else None
        ok = value is not None and np.isfinite(value) and (not integer or value == round(value))
        if not ok:
            shown = "an empty cell" if not stripped else f"{cell!r}"
            raise ValueError(f"{p}, line {line}, column {column!r}: expected {what}, got {shown}")
        parsed.append(value)
    return np.asarray(parsed, dtype=np.float64)


def read_csv_table(path: str | os.PathLike[str], *, label_column: str | None = None) -> CsvTable:
    """Read a CSV file like :func:`load_csv`, keeping the feature column names.

    Args:
        path: the ``.csv`` file.
        label_column: header name of the label column, or ``None`` for unlabelled data.

    Returns:
        A :class:`CsvTable` ``(x, labels, columns)``.

    Raises:
        TypeError, ValueError: as :func:`load_csv`.
    """
    p = _as_path(path)
    if label_column is not None and not isinstance(label_column, str):
        raise TypeError(f"label_column must be a str or None, got {type(label_column).__name__}")
    _existing(p, folder=False)
    with p.open(newline="") as f:
        # Keep the 1-based file line of every row so errors can point at it; skip blank rows.
        rows = [(i + 1, row) for i, row in enumerate(csv.reader(f)) if any(c.strip() for c in row)]
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
    label_idx = None
    if label_column is not None:
        if not has_header:
            raise ValueError(
                f"label_column={label_column!r} needs a header row, but the first row of {p} "
                "is numeric; add a header line naming the columns"
            )
        matches = [i for i, c in enumerate(columns) if c == label_column]
        if len(matches) != 1:
            problem = "is not a column" if not matches else "names several columns"
            raise ValueError(f"label_column={label_column!r} {problem} of {p}; columns: {columns}")
        label_idx = matches[0]
    feature_idx = [i for i in range(len(columns)) if i != label_idx]
    if not feature_idx:
        raise ValueError(f"{p} has no feature columns besides label_column={label_column!r}")
    lines = [line for line, _ in body]
    feats = [
        _parse_column([r[i] for _, r in body], lines, columns[i], p, integer=False)
        for i in feature_idx
    ]
    x = torch.from_numpy(_to_float32(np.stack(feats, axis=1), f"table {p}"))
    labels = None
    if label_idx is not None:
        raw = [r[label_idx] for _, r in body]
        y = _parse_column(raw, lines, columns[label_idx], p, integer=True)
        if (y < 0).any():
            k = int(np.argmax(y < 0))
            raise ValueError(
                f"{p}, line {lines[k]}, column {label_column!r}: expected an integer class "
                f"label >= 0, got {raw[k]!r}"
            )
        labels = torch.from_numpy(y.astype(np.int64))
    return CsvTable(x, labels, [columns[i] for i in feature_idx])


def load_csv(
    path: str | os.PathLike[str], *, label_column: str | None = None
) -> tuple[Tensor, Tensor | None]:
    r"""Read a numeric comma-separated table; one row per sample.

    The first non-blank row is a header when any of its cells is not a number (a header made
    only of numeric names is therefore read as data). Blank rows are skipped. Every other cell
    must be a finite number (``"nan"``, ``"inf"`` and empty cells are errors naming the file
    line and the column). With ``label_column`` the named column is taken out of the features
    and read as integer class labels ``>= 0``.

    Args:
        path: the ``.csv`` file.
        label_column: header name of the label column, or ``None`` for unlabelled data.

    Returns:
        ``(x, labels)``: ``x`` float32 ``(N, F)`` (all columns but the label column, in file
        order); ``labels`` int64 ``(N,)`` or ``None``.

    Raises:
        TypeError: ``path`` or ``label_column`` of the wrong type.
        ValueError: missing or empty file, rows of different lengths, a non-numeric, empty or
            non-finite cell (line and column named), ``label_column`` absent, duplicated or
            used on a file without header, no feature column, labels that are not integers
            ``>= 0``.

    Example:
        >>> import tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "t.csv")
        >>> _ = open(f, "w").write("a,b,y\n1,2,0\n3,4,1\n")
        >>> x, y = load_csv(f, label_column="y")
        >>> x.tolist(), y.tolist()
        ([[1.0, 2.0], [3.0, 4.0]], [0, 1])
    """
    table = read_csv_table(path, label_column=label_column)
    return table.x, table.labels


@dataclass(frozen=True)
class ImageFolder:
    """A folder of images read by :func:`read_image_folder`.

    Attributes:
        x: images, float32 ``(N, C, H, W)`` in ``[-1, 1]``.
        labels: int64 ``(N,)`` class indices (subfolder layout) or ``None``.
        class_names: the subfolder name of each class ``0..K-1`` (empty when unlabelled).
    """

    x: Tensor
    labels: Tensor | None
    class_names: list[str]


def _list_images(folder: Path) -> list[Path]:
    files = sorted(f for f in folder.iterdir() if not f.name.startswith("."))
    others = [f.name for f in files if f.is_dir() or f.suffix.lower() not in IMAGE_SUFFIXES]
    if others:
        raise ValueError(
            f"{folder} must contain only image files {list(IMAGE_SUFFIXES)}, found {others[:5]}"
        )
    if not files:
        raise ValueError(f"{folder} contains no images")
    return files


def _open_image(file: Path, grayscale: bool | None) -> PILImage:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            img.load()
            if grayscale is None:
                if img.mode not in _NATIVE_MODES:
                    raise ValueError(
                        f"{file} has Pillow mode {img.mode!r}; supported as-is: "
                        f"{sorted(_NATIVE_MODES)}; pass grayscale=True or False to convert"
                    )
                return img.convert("L") if img.mode == "1" else img.copy()
            return img.convert("L" if grayscale else "RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {file}: {err}") from err


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
    entries = [e for e in folder.iterdir() if not e.name.startswith(".")]
    if not entries:
        raise ValueError(f"{folder} is empty; put images (or one subfolder per class) in it")
    class_names: list[str] = []
    if all(e.is_dir() for e in entries):
        class_names = sorted(e.name for e in entries)
        per_class = [_list_images(folder / c) for c in class_names]
        files = [f for fs in per_class for f in fs]
        labels = torch.cat([torch.full((len(fs),), k) for k, fs in enumerate(per_class)])
    elif any(e.is_dir() for e in entries):
        dirs = sorted(e.name for e in entries if e.is_dir())
        raise ValueError(
            f"{folder} mixes subfolders {dirs[:5]} and files; use only images (unlabelled) or "
            "only one subfolder per class (labelled)"
        )
    else:
        files, labels = _list_images(folder), None
    images, first = [], None
    for file in files:
        img = _open_image(file, grayscale)
        if first is None:
            first = (file, img.size, img.mode)
        elif (img.size, img.mode) != first[1:]:
            raise ValueError(
                f"all images must have the same size and mode: {first[0]} is "
                f"{first[1][0]}x{first[1][1]} {first[2]} but {file} is "
                f"{img.size[0]}x{img.size[1]} {img.mode}; resize them or pass grayscale="
                "True/False to unify the mode"
            )
        images.append(np.asarray(img, dtype=np.uint8))
    stack = np.stack(images)  # (N, H, W) or (N, H, W, C)
    if stack.ndim == 3:
        stack = stack[..., None]
    x = torch.from_numpy(stack).permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
    return ImageFolder(x.contiguous(), labels, class_names)


def load_image_folder(
    path: str | os.PathLike[str], *, grayscale: bool | None = None
) -> tuple[Tensor, Tensor | None]:
    """Read a folder of images (PNG, JPEG, BMP) into one tensor scaled to ``[-1, 1]``.

    ``x = pixel / 127.5 - 1`` for 8-bit pixels. Two layouts are accepted:

    - only image files: unlabelled data, in sorted file-name order;
    - only subfolders: one class per subfolder, labels ``0..K-1`` in sorted subfolder-name
      order; each subfolder holds only image files.

    Hidden entries (names starting with ``.``) are skipped; anything else (other files,
    nested folders, a mix of files and subfolders) is an error. All images must have the same
    size. With ``grayscale=None`` they must also share one Pillow mode, kept as is: ``"L"``
    or ``"1"`` -> 1 channel, ``"RGB"`` -> 3, ``"RGBA"`` -> 4. ``grayscale=True`` converts every
    image to ``"L"`` (1 channel) and ``grayscale=False`` to ``"RGB"`` (3 channels, alpha
    dropped, palettes expanded), so mixed modes are then allowed.

    Args:
        path: the folder.
        grayscale: ``None`` keeps the images' own mode, ``True``/``False`` converts as above.

    Returns:
        ``(x, labels)``: ``x`` float32 ``(N, C, H, W)`` in ``[-1, 1]``; ``labels`` int64
        ``(N,)`` (subfolder layout) or ``None``.

    Raises:
        TypeError: ``path`` or ``grayscale`` of the wrong type.
        ImportError: Pillow is not installed.
        ValueError: missing or empty folder, an empty class folder, non-image entries,
            unreadable images, an unsupported mode with ``grayscale=None``, or two images of
            different size or mode (both files are named with their sizes).
    """
    folder = read_image_folder(path, grayscale=grayscale)
    return folder.x, folder.labels
