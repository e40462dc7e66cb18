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


def save_samples_png(
    samples: Tensor | np.ndarray,
    path: str | Path,
    *,
    reference: Tensor | np.ndarray | None = None,
    labels: Tensor | np.ndarray | None = None,
    title: str = "",
    values: Tensor | np.ndarray | None = None,
) -> Path:
    """Write samples as a PNG: a scatter for ``(N, 2)``, an image grid for ``(N, C, H, W)``.

    Other shapes are shown as a scatter of the first two features. ``reference`` (e.g. held-out
    data) is drawn in grey behind a scatter. Points are coloured by ``labels`` (classes) or,
    without labels, by ``values`` ``(N,)`` (a continuous condition, with a colour bar).
    """
    plt = _pyplot()
    x = np.asarray(samples.detach().cpu() if isinstance(samples, Tensor) else samples)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if x.ndim == 4:
        fig = _image_grid(plt, x, title)
    else:
        flat = x.reshape(x.shape[0], -1)
        fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
        if reference is not None:
            ref = np.asarray(reference.cpu() if isinstance(reference, Tensor) else reference)
            ref = ref.reshape(ref.shape[0], -1)
            ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.8", label="held-out data")
        c = (
            None
            if labels is None
            else np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
        )
        ys = flat[:, 1 if flat.shape[1] > 1 else 0]
        if c is None and values is not None:
            v = np.asarray(values.cpu() if isinstance(values, Tensor) else values).reshape(-1)
            points = ax.scatter(flat[:, 0], ys, s=1, c=v, cmap="twilight")
            fig.colorbar(points, ax=ax, shrink=0.7)
        elif c is None:
            ax.scatter(flat[:, 0], ys, s=1, color="C0")
        else:
            ax.scatter(flat[:, 0], ys, s=1, c=c, cmap="tab10")
        ax.set_aspect("equal")
        ax.set_title(title)
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
