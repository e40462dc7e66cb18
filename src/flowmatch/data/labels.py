"""Class labels from files: one rule for every file kind.

Labels read from a ``.npz`` file, a CSV ``label_column`` or the subfolders of an image folder
all pass through :func:`encode_labels`: the distinct original values, sorted, become the
classes ``0..K-1``, and the original values are kept (``class_names``) so that a run can map
class indices back to what the file said. Sparse or negative label sets (``{-1, 1}``,
``{0, 10**8}``) therefore give ``K`` classes, not ``max + 1``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["MAX_EXACT_FLOAT_LABEL", "encode_labels"]

#: Largest ``|label|`` accepted from a floating-point array: beyond ``2**53`` float64 cannot
#: represent every integer, so ``1e30`` is an overflow or a sentinel, not a class id.
MAX_EXACT_FLOAT_LABEL = 2**53


def _at_index(i: int) -> str:
    return f"at index {i}"


def encode_labels(
    values: np.ndarray,
    what: str,
    *,
    where: Callable[[int], str] = _at_index,
    allow_text: bool = False,
) -> tuple[Tensor, list[int] | list[str]]:
    """Map labels to class indices ``0..K-1`` in the sorted order of their distinct values.

    Accepted: integer arrays of any width (``uint64`` values above ``2**63`` included: they
    are compared as they are, never wrapped), booleans (``False``/``True`` -> ``0``/``1``), and
    floating-point arrays whose values are finite integers with ``|v| <= 2**53``
    (:data:`MAX_EXACT_FLOAT_LABEL`). With ``allow_text`` strings are accepted as well (the
    image-folder reader passes folder names). Everything else is refused with the reason.

    Args:
        values: the labels, shape ``(N,)``, ``N >= 1``.
        what: how to name the labels in messages (e.g. ``"labels 'y' in data.npz"``).
        where: maps a position to a phrase locating it (default ``"at index i"``; the CSV
            reader passes ``"line L"``).
        allow_text: accept ``str`` labels.

    Returns:
        ``(labels, class_names)``: int64 ``(N,)`` indices in ``[0, K)`` and the ``K`` original
        values in increasing order, as Python ``int`` (or ``str``), JSON-serialisable.

    Raises:
        ValueError: labels of the wrong dtype, shape or value (NaN/inf, non-integer, beyond
            ``2**53`` in floating point); the message names ``what`` and the first offending
            position.

    Example:
        >>> import numpy as np
        >>> labels, names = encode_labels(np.array([10**8, 0, 10**8]), "y")
        >>> labels.tolist(), names
        ([1, 0, 1], [0, 100000000])
    """
    if not isinstance(values, np.ndarray) or values.ndim != 1 or len(values) < 1:
        shape = getattr(values, "shape", type(values).__name__)
        raise ValueError(f"{what} must be a non-empty one-dimensional array, got {shape}")
    kind = values.dtype.kind
    if kind == "b":
        values = values.astype(np.int64)
    elif kind == "f":
        values = _float_labels_to_int(values, what, where)
    elif kind == "U" and allow_text:
        pass
    elif kind not in "iu":
        if kind in "USO":
            reason = "text labels are not supported; store integer class ids"
        else:
            reason = "class labels must be integers"
        raise ValueError(f"{what} must be integers, got dtype {values.dtype}: {reason}")
    names, inverse = np.unique(values, return_inverse=True)
    labels = torch.from_numpy(np.ascontiguousarray(inverse.reshape(-1), dtype=np.int64))
    return labels, names.tolist()


def _float_labels_to_int(values: np.ndarray, what: str, where: Callable[[int], str]) -> np.ndarray:
    v = values.astype(np.float64)
    for bad, reason in (
        (~np.isfinite(v), "a finite integer class label (NaN and inf are not classes)"),
        (np.isfinite(v) & (v != np.round(v)), "an integer class label"),
        (
            np.isfinite(v) & (np.abs(v) > MAX_EXACT_FLOAT_LABEL),
            "an integer class label of magnitude <= 2**53 (larger floating-point values are not "
            "exact integers: an overflow or a sentinel value?)",
        ),
    ):
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{what}, {where(i)}: expected {reason}, got {values[i].item()!r} "
                f"({int(bad.sum())} such value(s))"
            )
    return v.astype(np.int64)
