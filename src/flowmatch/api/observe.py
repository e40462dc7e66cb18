"""Sample a run given observations: inpainting / imputation (a mask) or super-resolution (pooling).

Observations are given in data space, like the run's samples; they are mapped to the model's
(standardised) space here, so any trained run works unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowmatch.api.run import Run
from flowmatch.api.sample import SampleResult, refuse_continuous_cond, sampling_plan, step_noise
from flowmatch.interfaces import cond_to
from flowmatch.sampling.observe import AvgPool, Mask, ObservationOperator, sample_observed
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import OptionError


def load_observation(path: str | Path) -> dict[str, Any]:
    """Read ``obs.npz``: ``values`` with ``mask`` (inpainting) or ``factor`` (super-resolution).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file lacks ``values`` or holds neither/both of ``mask`` and ``factor``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"observation file {str(p)!r} does not exist")
    with np.load(p) as data:
        keys = set(data.files)
        if "values" not in keys or len(keys & {"mask", "factor"}) != 1:
            raise ValueError(
                f"{str(p)!r} must hold 'values' and exactly one of 'mask' (inpainting) or "
                f"'factor' (block-average super-resolution), got {sorted(keys)}"
            )
        out: dict[str, Any] = {"values": torch.as_tensor(data["values"], dtype=torch.float32)}
        if "mask" in keys:
            out["mask"] = torch.as_tensor(data["mask"]).bool()
        else:
            out["factor"] = int(data["factor"])
    return out


def model_space_observation(
    run: Run, values: Tensor, *, mask: Tensor | None = None, factor: int | None = None
) -> tuple[ObservationOperator, Tensor]:
    """The operator and observation in the run's model space from data-space ones.

    With ``x = std * z + mean`` (the run's standardiser): a mask observes ``(y - mean) / std``;
    pooling ``A x = y`` becomes ``A (std * z) = y - A mean`` (weighted pooling).

    Raises:
        OptionError: neither or both of ``mask`` and ``factor``, or shapes that do not fit.
    """
    shape = run.sample_shape
    std, mean = run.standardizer.std.reshape(shape), run.standardizer.mean.reshape(shape)
    if (mask is None) == (factor is None):
        raise OptionError("observe", "give exactly one of mask (inpainting) or factor (pooling)")
    if mask is not None:
        if tuple(mask.shape) not in (shape, (len(values), *shape)):
            raise OptionError(
                "mask",
                f"must have the sample shape {shape} or (N, *{shape}), got {tuple(mask.shape)}",
            )
        if tuple(values.shape[1:]) != shape:
            raise OptionError("values", f"must be (N, *{shape}), got {tuple(values.shape)}")
        # unobserved entries may hold anything (NaN for missing data): zero them first
        y = torch.where(mask, values, torch.zeros_like(values))
        return Mask(mask), torch.where(mask, (y - mean) / std, torch.zeros_like(y))
    assert factor is not None
    dims = 1 if len(shape) == 1 else 2
    weights = None if bool((std == 1).all()) else std
    op = AvgPool(factor, dims, weights=weights)
    pooled = tuple(AvgPool(factor, dims).forward(torch.zeros(1, *shape)).shape[1:])
    if tuple(values.shape[1:]) != pooled:
        raise OptionError(
            "values",
            f"must be (N, *{pooled}) for factor {factor} on samples {shape}, got "
            f"{tuple(values.shape)}",
        )
    return op, values - AvgPool(factor, dims).forward(mean[None])


def observe(
    run: Run,
    values: Tensor,
    *,
    mask: Tensor | None = None,
    factor: int | None = None,
    samples_per_observation: int = 1,
    solver: str | None = None,
    nfe: int | None = None,
    grid: Any = None,
    method: str = "project",
    scale: float = 1.0,
    noise_std: float = 0.1,
    label: int | None = None,
    seed: int = 0,
    solver_options: Mapping[str, Any] | None = None,
) -> SampleResult:
    """Samples of ``run`` consistent with data-space observations ``values``.

    Args:
        run: a loaded run (unconditional, or conditional: then samples use ``label``, or the
            null label (the unconditional branch) when ``label`` is ``None``).
        values: observations ``(N, *D)`` for a mask (unobserved entries ignored, NaN allowed),
            ``(N, *D / factor)`` for pooling.
        mask: observed coordinates, ``(*D,)`` or ``(N, *D)``.
        factor: block size of average pooling (last axis of vectors, last two of images).
        samples_per_observation: samples drawn per observation (rows ``i*k .. i*k+k-1``).
        solver: sampler name (default the run's); SDE samplers work too.
        nfe: its budget.
        grid: its grid (name, config or values).
        method: ``"project"`` or ``"dps"``.
        scale: DPS guidance weight.
        noise_std: DPS observation noise.
        label: class of every sample for conditional runs.
        seed: noise seed.
        solver_options: options of the sampler.

    Returns:
        A ``SampleResult`` with ``N * samples_per_observation`` data-space samples whose
        observed part equals ``values`` (to round-off).

    Example:
        >>> res = observe(run, values, mask=mask)  # doctest: +SKIP
    """
    check_positive_int(samples_per_observation, "samples_per_observation")
    check_positive_int(seed, "seed", minimum=0)
    op, y = model_space_observation(run, values, mask=mask, factor=factor)
    k = samples_per_observation
    if k > 1:
        y = y.repeat_interleave(k, 0)
        if isinstance(op, Mask) and op.mask.ndim == y.ndim:
            op = Mask(op.mask.repeat_interleave(k, 0))
    n = len(y)
    sampler, t_grid, config = sampling_plan(
        run, solver, nfe=nfe, grid=grid, solver_options=solver_options
    )
    labels = _labels(run, n, label)
    noise = step_noise(run, len(t_grid) - 1, n, seed=seed) if sampler.stochastic else None
    start = time.perf_counter()
    sol = sample_observed(
        run.field,
        run.path,
        op,
        y.to(run.device),
        run.noise(n, seed=seed),
        t_grid,
        sampler,
        cond=cond_to(labels, run.device) if labels is not None else None,
        method=method,  # type: ignore[arg-type]
        scale=scale,
        noise_std=noise_std,
        noise=noise,
    )
    seconds = time.perf_counter() - start
    return SampleResult(run.to_data_space(sol.x.cpu()), labels, sol.nfe, seconds, config.kind)


def _labels(run: Run, n: int, label: int | None) -> Tensor | None:
    refuse_continuous_cond(run)
    if run.num_classes is None:
        if label is not None:
            raise OptionError("label", f"={label} given but the model is unconditional")
        return None
    if label is None:
        return torch.full((n,), run.num_classes, dtype=torch.long)  # the null label
    if not 0 <= label < run.num_classes:
        raise OptionError("label", f"must be in [0, {run.num_classes}), got {label}")
    return torch.full((n,), label, dtype=torch.long)


__all__ = ["load_observation", "model_space_observation", "observe"]
