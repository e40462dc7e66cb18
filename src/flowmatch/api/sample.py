"""Draw samples from a loaded run with any registered sampler, grid and guidance."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from flowmatch.api.run import NOISE_CHUNK, Run
from flowmatch.api.stored import stored_grid
from flowmatch.guidance import ClassifierFreeGuidance
from flowmatch.interfaces import Cond, Condition, CondSpec, as_condition, cond_to, index_cond
from flowmatch.solvers import solve
from flowmatch.solvers.base import SAMPLERS, FixedStepConfig, Sampler, SamplerConfig
from flowmatch.solvers.context import SamplingContext, bind_sampler
from flowmatch.sources import GaussianSource
from flowmatch.times.grids import GRIDS, GridConfig, custom_grid, make_grid
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import OptionError
from flowmatch.utils.tensor import step_generator

GridSpec = str | GridConfig | Tensor | Sequence[float]
_STEP_NOISE_STREAM = 0x5D


@dataclass(frozen=True)
class SampleResult:
    """Samples in data space ``(N, *D)``, their labels ``(N,)`` (or ``None``), NFE per sample.

    Attributes:
        samples: the samples in data space.
        labels: the class of each sample for label-conditional runs, else ``None``.
        nfe: field evaluations per sample.
        seconds: wall time of the solves.
        solver: the sampler's name.
        guidance: the guidance scale used.
        cond: the condition of each sample (``N`` rows, values in data space) when one was
            given, else ``None``.
    """

    samples: Tensor
    labels: Tensor | None
    nfe: int
    seconds: float
    solver: str = ""
    guidance: float = 1.0
    cond: Condition | None = None


def sampling_plan(
    run: Run,
    solver: str | SamplerConfig | None = None,
    *,
    nfe: int | None = None,
    grid: GridSpec | None = None,
    solver_options: Mapping[str, Any] | None = None,
    grid_options: Mapping[str, Any] | None = None,
) -> tuple[Sampler, Tensor, SamplerConfig]:
    """The sampler and time grid for a request (defaults from ``run.sample``).

    Args:
        run: the loaded run.
        solver: a sampler name, a sampler config, or ``None`` for the run's default.
        nfe: evaluations per sample for a fixed-step sampler (a multiple of its stages);
            with explicit grid values it defaults to ``steps * stages``.
        grid: a grid name, a grid config, explicit times (strictly increasing from 0 to 1),
            or ``None`` for the run's default grid.
        solver_options: options of the named sampler (e.g. ``{"atol": 1e-4}``); for the run's
            own sampler kind they update its stored options.
        grid_options: options of the named grid (e.g. ``{"shift": 2.0}``), likewise.

    Returns:
        ``(sampler, grid_tensor, sampler_config)``.

    Raises:
        OptionError: unknown names or options, an ``nfe`` that does not fit the sampler, grid
            values that do not fit the budget, or a non-uniform grid for an adaptive sampler.
    """
    explicit = not (grid is None or isinstance(grid, str | GridConfig))
    values = custom_grid(grid) if explicit else None  # type: ignore[arg-type]
    config = _sampler_config(run, solver, nfe, values, dict(solver_options or {}))
    adaptive, steps = SAMPLERS[config.kind].adaptive, config.num_steps()
    if values is not None:
        if grid_options:
            raise OptionError("grid", "explicit grid values take no grid options")
        if values[0].item() != 0.0:
            raise OptionError("grid", f"values must increase from 0 to 1, got {values.tolist()}")
        stages = SAMPLERS[config.kind].stages
        if not adaptive and len(values) - 1 != steps:
            raise OptionError(
                "grid",
                f"values have {len(values) - 1} steps but nfe={steps * stages} means {steps} "
                f"{config.kind} steps; pass nfe={(len(values) - 1) * stages}",
            )
        return _bound(run, config), values, config
    grid_cfg = _grid_config(run, grid, dict(grid_options or {}))  # type: ignore[arg-type]
    if adaptive and grid_cfg.kind != "uniform":
        raise OptionError(
            "grid", f"{grid_cfg.kind!r} does not apply to the adaptive solver {config.kind!r}"
        )
    sampler = _bound(run, config)
    if getattr(GRIDS[grid_cfg.kind], "stored_in_run", False):  # e.g. BOSS: computed per run
        return sampler, stored_grid(run, grid_cfg.kind, config.kind, steps), config
    return sampler, make_grid(grid_cfg, steps), config


def _bound(run: Run, config: SamplerConfig) -> Sampler:
    sampler = SAMPLERS.build(config)
    return bind_sampler(sampler, run_context(run, getattr(sampler, "requires", ())))


def run_context(run: Run, requires: Sequence[str] = ()) -> SamplingContext:
    """What contextual samplers (SDE, reflective, FlowTurbo) need from ``run``.

    A ``"refiner"`` in ``requires`` loads the run's FlowTurbo refiner (``flowmatch refine``).
    """
    modules: dict[str, Any] = dict(run.modules)
    if "refiner" in requires:
        from flowmatch.api.refine import load_refiner

        refiner = load_refiner(run)
        if refiner is not None:
            modules["refiner"] = refiner
    return SamplingContext(
        path=run.path,
        gaussian_source=type(run.source) is GaussianSource,
        null_label=run.num_classes,
        modules=modules,
        name=f"run {run.info.get('data', {}).get('name', '?')!r} (source {run.source!r})",
    )


def step_noise(run: Run, num_steps: int, num_samples: int, *, seed: int) -> Tensor:
    """Per-step noise ``(num_steps, N, *model_shape)`` of stochastic samplers (standard normal).

    Sample ``i``'s noise depends only on ``(seed, i)`` (drawn in chunks of ``NOISE_CHUNK``
    samples, as ``Run.noise``), so a stochastic sample does not change with the batch size.
    """
    chunks = [
        torch.randn(
            (num_steps, NOISE_CHUNK, *run.model_shape),
            generator=step_generator(seed, _STEP_NOISE_STREAM, k),
        )
        for k in range(math.ceil(num_samples / NOISE_CHUNK))
    ]
    return torch.cat(chunks, dim=1)[:, :num_samples].to(run.device)


def _sampler_config(
    run: Run,
    solver: str | SamplerConfig | None,
    nfe: int | None,
    values: Tensor | None,
    options: dict[str, Any],
) -> SamplerConfig:
    """The sampler config of a request: the run's default, a name, or a given config."""
    if isinstance(solver, SamplerConfig):
        if nfe is not None or options:
            raise OptionError("nfe", "give the budget and options inside the sampler config")
        return solver
    default = run.sample.solver
    kind = default.kind if solver is None else solver
    wanted = field_kind(run.field)
    if solver is None and SAMPLERS[kind].field_kind != wanted:
        # A run's stored default from before its objective made it a flow map (or a config
        # that forgot): take the registered sampler of its field kind, with its budget.
        kind = next(n for n in SAMPLERS.names() if SAMPLERS[n].field_kind == wanted)
        default = SAMPLERS.config(kind)  # type: ignore[assignment]
    opts = {**(default.options() if kind == default.kind else {}), **options}
    fixed = issubclass(SAMPLERS.entry(kind).config, FixedStepConfig)
    if fixed and values is not None and nfe is None and "nfe" not in options:
        nfe = (len(values) - 1) * SAMPLERS[kind].stages
    if nfe is not None:
        opts["nfe"] = nfe  # an adaptive sampler refuses it, naming the ones that take it
    elif fixed and "nfe" not in opts and isinstance(default, FixedStepConfig):
        opts["nfe"] = default.nfe
    return SAMPLERS.config(kind, **opts)  # type: ignore[return-value]


def field_kind(field: Any) -> str:
    """``"flow_map"`` for a flow map (``field.field_kind``), else ``"velocity"``."""
    return str(getattr(field, "field_kind", "velocity"))


def _grid_config(run: Run, grid: str | GridConfig | None, options: dict[str, Any]) -> GridConfig:
    if isinstance(grid, GridConfig):
        if options:
            raise OptionError("grid", "give the options inside the grid config")
        return grid
    default = run.sample.grid
    kind = default.kind if grid is None else grid
    opts = {**(default.options() if kind == default.kind else {}), **options}
    return GRIDS.config(kind, **opts)  # type: ignore[return-value]


def guided_field(run: Run, guidance: float) -> Any:
    """``run.field`` with classifier-free guidance at ``guidance`` (1: the field itself).

    The null branch is the null condition of each kind the run takes: labels ->
    ``run.num_classes``, values/context -> ``drop = True``.
    """
    if isinstance(guidance, bool) or not isinstance(guidance, int | float):
        raise OptionError("guidance", f"must be a number, got {guidance!r}")
    if not math.isfinite(guidance):
        raise OptionError("guidance", f"must be a finite number, got {guidance!r}")
    if guidance == 1.0:
        return run.field
    if not run.cond.conditional:
        raise OptionError(
            "guidance",
            f"={guidance} needs a conditional model (trained with labels or conditions)",
        )
    return ClassifierFreeGuidance(run.field, guidance, null_label=run.num_classes)


def sample_condition(
    run: Run, num_samples: int, cond: Cond
) -> tuple[Condition | Tensor, Condition | Tensor]:
    """Check a requested condition against ``run.cond`` and give one row per sample.

    ``cond`` (class labels ``(M,)`` or a :class:`~flowmatch.interfaces.Condition`, values in
    data space) has ``M`` rows: ``M == num_samples``, ``M == 1`` (one condition for all), or
    ``M`` dividing ``num_samples`` (sample ``i`` takes row ``i % M``). It must carry exactly
    the kinds the run was trained on.

    Returns:
        ``(model_cond, data_cond)``: ``num_samples`` rows each; ``model_cond`` has the values
        standardised as in training (``run.values_standardizer``).

    Raises:
        OptionError: an unconditional run, kinds that differ from the run's, a number of rows
            that does not fit ``num_samples``, labels outside the trained classes, values or
            context of the wrong shape.
        TypeError: ``cond`` is neither a tensor nor a ``Condition``.
    """
    c = as_condition(cond)
    assert c is not None
    spec = run.cond
    if not spec.conditional:
        raise OptionError("cond", "was given but the model is unconditional")
    if set(c.kinds) != set(spec.kinds):
        raise OptionError(
            "cond",
            f"must carry the kinds the run was trained on {list(spec.kinds)}, got {list(c.kinds)}",
        )
    rows = c.batch_size or 0
    if rows < 1 or num_samples % rows:
        raise OptionError(
            "cond",
            f"has {rows} rows; give num_samples = {num_samples} rows, one row for all samples, "
            f"or a number of rows that divides {num_samples}",
        )
    _check_cond_shapes(c, spec)
    data = c.map(lambda v: v[torch.arange(num_samples, device=v.device) % rows])
    model = data
    if data.values is not None and run.values_standardizer is not None:
        model = replace(data, values=run.values_standardizer.transform(data.values))
    if isinstance(cond, Tensor):
        assert data.labels is not None
        return data.labels, data.labels
    return model, data


def _check_cond_shapes(c: Condition, spec: CondSpec) -> None:
    if c.labels is not None and spec.num_classes is not None and c.labels.numel():
        lo, hi = int(c.labels.min()), int(c.labels.max())
        if lo < 0 or hi >= spec.num_classes:
            raise OptionError(
                "cond",
                f"labels must lie in [0, {spec.num_classes}) (the trained classes), got values "
                f"in [{lo}, {hi}]",
            )
    if c.values is not None and c.values.shape[1] != spec.values_dim:
        raise OptionError(
            "cond",
            f"values must have shape (M, C) = (M, {spec.values_dim}), got {tuple(c.values.shape)}",
        )
    if c.context is not None and tuple(c.context.shape[1:]) != spec.context_shape:
        raise OptionError(
            "cond",
            f"context must have shape (M, *S) with S = {spec.context_shape}, got "
            f"{tuple(c.context.shape)}",
        )


def refuse_continuous_cond(run: Run) -> None:
    """Refuse runs conditioned on values or context where only labels can be given.

    Raises:
        OptionError: naming the run's condition kinds.
    """
    needs = [k for k in run.cond.kinds if k != "labels"]
    if needs:
        raise OptionError(
            "cond",
            f"the run is conditioned on {needs}, which this sampling path cannot give (it "
            "takes labels only); sample it with api.generate(run, n, cond=...) / sample --cond",
        )


def sample_labels(run: Run, num_samples: int, label: int | None) -> Tensor | None:
    """Labels for ``num_samples`` samples: all ``label``, or cycling through the classes.

    Raises:
        OptionError: a run conditioned on values or context (these need a ``cond``; only
            :func:`generate` takes one), or a bad ``label``.
    """
    refuse_continuous_cond(run)
    if run.num_classes is None:
        if label is not None:
            raise OptionError("label", f"={label} given but the model is unconditional")
        return None
    if label is not None:
        ok = isinstance(label, int) and not isinstance(label, bool)
        if not ok or not 0 <= label < run.num_classes:
            raise OptionError(
                "label",
                f"must be an int in [0, {run.num_classes}) (the trained classes), got {label!r}",
            )
        return torch.full((num_samples,), label, dtype=torch.long)
    return torch.arange(num_samples) % run.num_classes


def generate(
    run: Run,
    num_samples: int,
    *,
    solver: str | SamplerConfig | None = None,
    nfe: int | None = None,
    grid: GridSpec | None = None,
    guidance: float | None = None,
    label: int | None = None,
    cond: Cond = None,
    seed: int = 0,
    batch_size: int = 4096,
    solver_options: Mapping[str, Any] | None = None,
    grid_options: Mapping[str, Any] | None = None,
) -> SampleResult:
    """Draw ``num_samples`` samples from a trained run, returned in data space.

    Args:
        run: a loaded run (``load_run``).
        num_samples: number of samples ``N >= 1``.
        solver: a sampler name (``"midpoint"``, ``"dopri5"``, ...), a sampler config with its
            options (``SAMPLERS.config("dopri5", atol=1e-4)``), or ``None`` for the run's
            ``sample.solver``.
        nfe: evaluations per sample for fixed-step samplers (a multiple of the stages).
        grid: grid name or config, explicit times, or ``None`` for ``sample.grid``.
        guidance: classifier-free guidance scale (1 = none); ``None``: ``sample.guidance``.
        label: class of every sample (label-conditional models); ``None`` cycles through
            the classes.
        cond: the condition of the samples: class labels ``(M,)`` or a ``Condition`` (values
            in data space, i.e. in the units of the training data), ``M = num_samples`` rows,
            one row for all, or ``M`` dividing ``num_samples`` (cycled); see
            :func:`sample_condition`. Required for runs conditioned on values or context.
        seed: noise seed; sample ``i`` depends only on ``(seed, i)``.
        batch_size: samples integrated at once.
        solver_options: options of the sampler (e.g. ``{"atol": 1e-4}`` for ``dopri5``).
        grid_options: options of the grid (e.g. ``{"shift": 2.0}`` for ``shifted``).

    Returns:
        ``SampleResult`` with samples ``(N, *D)`` in data space (and ``cond``, their
        conditions, when ``cond`` was given).

    Raises:
        OptionError: bad sampler/grid options, ``label`` together with ``cond``, a run
            conditioned on values/context without ``cond``, or a ``cond`` that does not fit
            the run (see :func:`sample_condition`).

    Example:
        >>> res = generate(run, 1000, solver="heun", nfe=8)  # doctest: +SKIP
    """
    check_positive_int(num_samples, "num_samples")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(seed, "seed", minimum=0)
    sampler, t_grid, config = sampling_plan(
        run, solver, nfe=nfe, grid=grid, solver_options=solver_options, grid_options=grid_options
    )
    scale = run.sample.guidance if guidance is None else guidance
    field = guided_field(run, scale)
    model_cond, data_cond, labels = _conditions(run, num_samples, label, cond)
    noise = run.noise(num_samples, seed=seed, cond=model_cond)
    noises = (
        step_noise(run, len(t_grid) - 1, num_samples, seed=seed) if sampler.stochastic else None
    )
    out, total_nfe, start = [], 0, time.perf_counter()
    with torch.no_grad():
        for i in range(0, num_samples, batch_size):
            c: Cond = cond_to(index_cond(model_cond, slice(i, i + batch_size)), run.device)
            steps = None if noises is None else noises[:, i : i + batch_size]
            sol = solve(field, noise[i : i + batch_size], t_grid, sampler, cond=c, noise=steps)
            out.append(sol.x)
            total_nfe = max(total_nfe, sol.nfe)
    x = run.to_data_space(run.decode(torch.cat(out).cpu()))
    seconds = time.perf_counter() - start
    return SampleResult(x, labels, total_nfe, seconds, config.kind, scale, data_cond)


def _conditions(
    run: Run, num_samples: int, label: int | None, cond: Cond
) -> tuple[Cond, Condition | None, Tensor | None]:
    """``(model_cond, data_cond, labels)`` of a request: ``cond``, or labels from ``label``."""
    if cond is None:
        needs = [k for k in run.cond.kinds if k != "labels"]
        if needs:
            raise OptionError(
                "cond",
                f"is required: the run is conditioned on {needs}; pass e.g. "
                "cond=Condition(values=...) with one row per sample (or one for all)",
            )
        labels = sample_labels(run, num_samples, label)
        return labels, None, labels
    if label is not None:
        raise OptionError("label", f"= {label} given together with cond; put labels in cond")
    model, data = sample_condition(run, num_samples, cond)
    data_c = as_condition(data)
    assert data_c is not None
    return model, data_c, data_c.labels


__all__ = [
    "SampleResult",
    "field_kind",
    "generate",
    "guided_field",
    "refuse_continuous_cond",
    "run_context",
    "sample_condition",
    "sample_labels",
    "sampling_plan",
    "step_noise",
]
