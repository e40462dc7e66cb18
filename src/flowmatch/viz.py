"""PNG plots for the CLI: 2-D scatter, image grids, quality-vs-NFE curves (matplotlib, lazy)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor


def _pyplot():  # noqa: ANN202 - matplotlib is an optional dependency
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "plots need matplotlib: pip install -c constraints.txt -e '.[viz]'"
        ) from e
    return plt


def _array(x: Tensor | np.ndarray) -> np.ndarray:
    return np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x)


def _projection(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(mean, map (D, 2), axis labels)`` with ``(x - mean) @ map`` the plotted plane.

    Identity for ``D <= 2``; else the top-2 principal components of the *standardised*
    features (correlation PCA), so that one feature with large units (a table column in the
    thousands) does not make the whole picture.
    """
    d = data.shape[1]
    if d <= 2:
        comps = np.eye(d, 2) if d == 2 else np.array([[1.0, 1.0]])
        return np.zeros(d), comps, ["x0", "x1"] if d == 2 else ["x0", "x0"]
    mean, scale = data.mean(0), data.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    _, sv, vt = np.linalg.svd((data - mean) / scale, full_matrices=False)
    share = sv**2 / max(float((sv**2).sum()), 1e-12)
    axes = [f"PC {k + 1} ({100 * share[k]:.0f}% var., standardised)" for k in range(2)]
    return mean, vt[:2].T / scale[:, None], axes


def save_samples_png(
    samples: Tensor | np.ndarray,
    path: str | Path,
    *,
    reference: Tensor | np.ndarray | None = None,
    labels: Tensor | np.ndarray | None = None,
    title: str = "",
    values: Tensor | np.ndarray | None = None,
) -> Path:
    """Write samples as a PNG: a scatter for vectors ``(N, D)``, an image grid for ``(N, C, H, W)``.

    Vectors with more than two features are drawn in the plane of the first two principal
    components of the reference (or of the samples without one), the same projection for both,
    with the explained variance on the axes. ``reference`` (held-out data) is drawn in grey
    behind the samples. Points are coloured by ``labels`` (classes) or, without labels, by
    ``values`` ``(N,)`` (a continuous condition, with a colour bar).
    """
    plt = _pyplot()
    x = _array(samples)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if x.ndim == 4:
        fig = _image_grid(plt, x, title)
    else:
        flat = x.reshape(x.shape[0], -1)
        ref = None if reference is None else _array(reference).reshape(len(reference), -1)
        mean, comps, axis = _projection(ref if ref is not None else flat)
        fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
        if ref is not None:
            r = (ref - mean) @ comps
            ax.scatter(r[:, 0], r[:, 1], s=1, c="0.8", label="held-out data")
        p = (flat - mean) @ comps
        if labels is None and values is not None:
            v = _array(values).reshape(-1)
            points = ax.scatter(p[:, 0], p[:, 1], s=1, c=v, cmap="twilight", label="samples")
            fig.colorbar(points, ax=ax, shrink=0.7)
        elif labels is None:
            ax.scatter(p[:, 0], p[:, 1], s=1, color="C0", label="samples")
        else:
            ax.scatter(p[:, 0], p[:, 1], s=1, c=_array(labels), cmap="tab10", label="samples")
        ax.set_xlabel(axis[0])
        ax.set_ylabel(axis[1])
        if flat.shape[1] == 2:
            ax.set_aspect("equal")
        if ref is not None:
            ax.legend(loc="upper right", fontsize=7, markerscale=6)
        ax.set_title(title + (f" (PCA of {flat.shape[1]} features)" if flat.shape[1] > 2 else ""))
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _image_grid(plt, x: np.ndarray, title: str):  # noqa: ANN001, ANN202
    n = min(len(x), 100)
    cols = min(10, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.4), dpi=100, squeeze=False
    )
    lo, hi = float(x.min()), float(x.max())
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = x[i]
            img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
            img = (img - lo) / max(hi - lo, 1e-8)
            ax.imshow(
                np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, interpolation="nearest"
            )
    fig.suptitle(title)
    return fig


def save_quality_plot(
    rows: Sequence[dict],
    path: str | Path,
    *,
    metrics: Sequence[str],
    title: str = "",
    floor: dict[str, float] | None = None,
) -> Path:
    """One panel per metric: the metric against NFE (log scale) for each solver in ``rows``.

    ``floor`` (the same metrics between training and held-out data) is drawn as a dashed line.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4 * len(metrics), 3.6), dpi=100, squeeze=False
    )
    solvers = sorted({r["solver"] for r in rows})
    for ax, metric in zip(axes[0], metrics, strict=True):
        for s in solvers:
            pts = sorted((r["nfe"], r[metric]) for r in rows if r["solver"] == s and metric in r)
            if pts:
                style = "o" if len(pts) == 1 else "o-"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=s)
        if floor and metric in floor:
            ax.axhline(floor[metric], color="0.5", ls="--", label="train vs held-out")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
