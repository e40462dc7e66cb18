"""Score a run against held-out data: every solver and NFE, a reference row, the data floor."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from flowmatch.api.run import Run
from flowmatch.api.sample import field_kind, generate, run_context, sample_labels
from flowmatch.data.batch import ArrayDataset
from flowmatch.interfaces import Condition
from flowmatch.metrics.conditional import bin_index, conditional_w2, quantile_edges
from flowmatch.metrics.registry import Metric, metrics_for
from flowmatch.solvers.base import SAMPLERS, SamplerConfig
from flowmatch.solvers.context import ContextualSampler, bind_sampler
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import OptionError
from flowmatch.utils.tensor import step_generator

logger = logging.getLogger(__name__)

#: ``evaluate`` adds NLL (exact divergence) and straightness for vector data up to this size.
MAX_DIM_FLOW_METRICS = 16
_REFERENCE_STREAM, _FLOOR_STREAM = 0xE1, 0xF1


def eval_plan(
    run: Run,
    nfe: Sequence[int],
    solvers: Sequence[str],
    reference: SamplerConfig | None,
) -> list[SamplerConfig]:
    """The sampler configs of the rows: each (solver, NFE) that fits, then the reference.

    Raises:
        OptionError: an unknown or adaptive solver in ``solvers``, one for another
            field kind than the run's (velocity field or flow map), or no row at all.
    """
    rows: list[SamplerConfig] = []
    kind = field_kind(run.field)
    for name in solvers:
        SAMPLERS.entry(name)  # an unknown name lists the registered ones
        cls = SAMPLERS[name]
        if cls.adaptive or cls.field_kind != kind:
            raise OptionError(
                "solvers",
                f"has {name!r}, which is not a fixed-step sampler of {kind} fields (see --help)",
            )
        for k in nfe:
            check_positive_int(k, "nfe")
            if k % cls.stages == 0:
                rows.append(SAMPLERS.config(name, nfe=k))  # type: ignore[arg-type]
    if reference is not None:
        rows.append(reference)
    if not rows:
        raise OptionError(
            "nfe",
            f"{list(nfe)} fits none of the solvers {list(solvers)} (an NFE must be a multiple of "
            "a solver's evaluations per step) and there is no reference row",
        )
    return rows


def evaluate(
    run: Run,
    test_ds: ArrayDataset,
    *,
    nfe: Sequence[int] | None = None,
    solvers: Sequence[str] | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    reference: SamplerConfig | None | str = "default",
    train_ds: ArrayDataset | None = None,
    metrics: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Sample with each solver at each NFE and score the samples against held-out data.

    Defaults come from the run's ``[eval]`` section; the time grid is the run's
    ``sample.grid``. Metrics are the registered ones that apply to the data (or ``metrics``),
    computed in the run's *model space* for tables (standardised columns, so one large-valued
    column does not dominate) and in data space otherwise. The reference set is a seeded random
    subset of the held-out split; ``floor`` holds the same metrics between an equally large
    seeded random subset of the training split and the reference: what real data scores.

    Args:
        run: the loaded run.
        test_ds: held-out data (model space).
        nfe: budgets of the fixed-step rows.
        solvers: fixed-step sampler names.
        num_samples: generated samples per row, ``>= 2`` (capped at the held-out size).
        seed: noise seed of the generated samples.
        reference: the adaptive reference row's sampler config, ``None`` for no such row, or
            ``"default"`` for the run's ``eval.reference`` (when ``eval.with_reference``).
        train_ds: training data for the floor row (``None``: no floor).
        metrics: metric names (default ``eval.metrics``, or all that apply).

    Runs conditioned on continuous values or context generate with the reference subset's
    own conditions (sample ``i`` takes the condition of reference point ``i``), so every
    metric compares like with like, and (for values) each row also gets ``cond_w2``: the mean
    over ``eval.cond_bins`` quantile bins of the first condition value of the W2 between the
    generated and the reference points of the bin; the per-bin values are under
    ``report["conditional"]`` (:func:`conditional_section`).

    Returns:
        ``{"rows": [...], "floor": {...}, "num_samples": n, "step": run.step, "space": ...}``
        plus ``nll`` and ``straightness`` for low-dimensional unconditional vector data and
        ``conditional`` for runs conditioned on values, and ``latent_floor`` for latent runs
        (``data.latent``) given ``train_ds``: the floor's training subset passed through the
        latent space (``decode(encode(x))``) and scored against the reference, i.e. what a
        perfect flow on the codes would score, the floor the decoder sets.
    """
    ec = run.config.eval
    if reference == "default":
        reference = ec.reference if ec.with_reference else None
    if isinstance(reference, str):
        raise OptionError(
            "reference", f"must be a sampler config, None or 'default', got {reference!r}"
        )
    budgets = ec.nfe if nfe is None else nfe
    if getattr(run.field, "field_kind", "velocity") == "transition":
        # A transition model (DTM) is valid only with its own sampler and number of steps.
        plan, notes = [run.sample.solver], list[str]()
    else:
        solvers, reference, notes = fit_to_field(
            run, list(ec.solvers if solvers is None else solvers), reference
        )
        plan = eval_plan(run, budgets, solvers, reference)
    n = min(ec.num_samples if num_samples is None else num_samples, len(test_ds))
    check_positive_int(n, "num_samples", minimum=2)
    scorer = Scorer(run, test_ds, n, metrics=ec.metrics if metrics is None else tuple(metrics))
    rows = []
    for config in plan:
        res = generate(run, n, solver=config, seed=seed, cond=scorer.cond)
        row = {"solver": config.kind, "nfe": res.nfe, "seconds": round(res.seconds, 3)}
        row.update(scorer(res.samples, labels=res.labels, cond=res.cond))
        rows.append(row)
        logger.info("eval %s", row)
    floor = scorer.floor(train_ds) if train_ds is not None else {}
    report: dict[str, Any] = {
        "rows": rows,
        "floor": floor,
        "num_samples": n,
        "step": run.step,
        "space": scorer.space,
        "notes": notes,
    }
    if run.latent is not None and train_ds is not None:
        # What a perfect latent flow scores: training codes, decoded, against the reference.
        latent_floor = scorer.floor(train_ds, through=run.latent.reconstruct)
        latent_floor.pop("cond_w2_bins", None)
        report["latent_floor"] = latent_floor
    if scorer.edges is not None:
        report["conditional"] = conditional_section(scorer, rows, floor)
    shape = test_ds.sample_shape
    if len(shape) == 1 and shape[0] <= MAX_DIM_FLOW_METRICS and run.latent is None:
        if field_kind(run.field) == "velocity":
            report.update(flow_metrics(run, test_ds, num_samples=min(n, 500), seed=seed))
        else:
            notes.append("NLL and straightness skipped: they integrate a velocity field")
    return report


def fit_to_field(
    run: Run, solvers: list[str], reference: SamplerConfig | None
) -> tuple[list[str], SamplerConfig | None, list[str]]:
    """The solvers and reference row that apply to the run's field kind, with notes.

    A flow-map run (MeanFlow, flow maps, sCM, ...) is sampled by the flow-map sampler: the
    velocity samplers are replaced by it and the adaptive reference row is dropped (there is
    no velocity field to integrate); a velocity-field run drops flow-map samplers.
    """
    kind = field_kind(run.field)
    keep = [s for s in solvers if SAMPLERS[s].field_kind == kind]
    notes = []
    if len(keep) != len(solvers):
        dropped = [s for s in solvers if s not in keep]
        if not keep:
            keep = [n for n in SAMPLERS.names() if SAMPLERS[n].field_kind == kind][:1]
        notes.append(
            f"the run samples a {kind.replace('_', '-')} field: rows use {keep} instead of "
            f"{dropped}"
        )
    refused = {}
    for name in keep:  # contextual samplers that do not apply to this run (e.g. its source)
        sampler = SAMPLERS.build(SAMPLERS.config(name))
        if isinstance(sampler, ContextualSampler):
            try:
                bind_sampler(sampler, run_context(run, sampler.requires))
            except ValueError as err:
                refused[name] = str(err).rsplit(": use ", 1)[0]
    if refused and len(refused) < len(keep):
        keep = [s for s in keep if s not in refused]
        notes += [f"no {name} rows: {why}" for name, why in refused.items()]
    if reference is not None and SAMPLERS[reference.kind].field_kind != kind:
        notes.append(
            f"no {reference.kind} reference row: it integrates a velocity field, and the run's "
            f"field is a {kind.replace('_', '-')}"
        )
        reference = None
    return keep, reference, notes


class Scorer:
    """Scores sample sets against a fixed, seeded random reference subset of held-out data.

    For a run conditioned on values or context, ``cond`` holds the reference subset's own
    conditions (data space) to generate with; for values, ``edges`` are the
    ``eval.cond_bins`` quantile bins of the first condition value, and each score includes
    ``cond_w2`` (:func:`~flowmatch.metrics.conditional.conditional_w2` averaged over the
    bins; the per-bin values, under ``cond_w2_bins``, are a list).

    Args:
        run: the run (its data kind picks the metrics and the space they are computed in).
        test_ds: held-out data in model space.
        n: reference size (a random subset of ``test_ds`` drawn from a fixed seed).
        metrics: metric names; empty: every registered metric that applies.
    """

    def __init__(self, run: Run, test_ds: ArrayDataset, n: int, *, metrics: Sequence[str] = ()):
        self.run = run
        info = run.info["data"]
        self.kind, shape = info.get("kind", ""), tuple(info["sample_shape"])
        self.metrics: dict[str, Metric] = metrics_for(
            self.kind, shape, tuple(metrics), labelled=run.num_classes is not None
        )
        self.space = "model" if self.kind == "tabular" else "data"
        self.n = n
        idx = _subset_index(len(test_ds), n, _REFERENCE_STREAM)
        self.reference = self._space(test_ds.x[idx.to(test_ds.x.device)])
        self.cond = data_condition(run, test_ds, idx)
        self.edges: Tensor | None = None
        if self.cond is not None and self.cond.values is not None:
            self.edges = quantile_edges(self.cond.values[:, :1], run.config.eval.cond_bins)

    def _space(self, x_model: Tensor) -> Tensor:
        return x_model if self.space == "model" else self.run.to_data_space(x_model)

    def __call__(
        self, samples: Tensor, *, labels: Tensor | None, cond: Condition | None = None
    ) -> dict[str, Any]:
        """Metrics of data-space ``samples`` ``(N, *D)`` against the reference.

        ``cond`` (data space) are the samples' conditions; with value bins (``edges``) they
        give ``cond_w2`` and ``cond_w2_bins``.
        """
        x = self.run.standardizer.transform(samples) if self.space == "model" else samples
        out: dict[str, Any] = {}
        for name, metric in self.metrics.items():
            g = torch.Generator().manual_seed(0)
            if metric.needs_labels and labels is None:
                continue
            out[name] = metric(x, self.reference.to(x), labels=labels, generator=g)
        if self.edges is not None and cond is not None and cond.values is not None:
            assert self.cond is not None and self.cond.values is not None
            bins = conditional_w2(
                x,
                cond.values[:, :1],
                self.reference.to(x),
                self.cond.values[:, :1],
                self.edges,
                generator=torch.Generator().manual_seed(0),
            )
            scored = [b for b in bins if b is not None]
            out["cond_w2"] = sum(scored) / len(scored) if scored else float("nan")
            out["cond_w2_bins"] = bins
        return out

    def floor(self, train_ds: ArrayDataset, *, through: Any = None) -> dict[str, Any]:
        """What real data scores: a random training subset of the same size as the reference.

        ``through`` maps the model-space subset first (e.g. a latent space's
        ``reconstruct``: the floor of decoded codes).
        """
        labels = None
        if self.run.num_classes is not None and train_ds.labels is not None and self.cond is None:
            # Label runs generate with labels cycling 0..K-1 (``sample_labels``): the floor's
            # real rows get the same class counts, else the multinomial noise of a random
            # subset's class mix makes real data score worse than a class-balanced model
            # (digits, 297 rows: FD 5.8-7.0 random vs 4.0-5.5 balanced).
            want = sample_labels(self.run, self.n, None)
            assert want is not None
            idx = _matched_index(train_ds.labels, want, _FLOOR_STREAM)
            labels = train_ds.labels[idx]
        else:
            idx = _subset_index(len(train_ds), self.n, _FLOOR_STREAM)
        cond = data_condition(self.run, train_ds, idx)
        x = train_ds.x[idx] if through is None else through(train_ds.x[idx].cpu())
        return self(self.run.to_data_space(x), labels=labels, cond=cond)


def data_condition(run: Run, ds: ArrayDataset, idx: Tensor) -> Condition | None:
    """The conditions of rows ``idx`` of ``ds`` in data space, for a run on values/context.

    ``None`` for runs without values or context (label runs keep cycling their classes).
    """
    spec = run.cond
    if spec.values_dim is None and spec.context_shape is None:
        return None

    def rows(v: Tensor | None, used: object) -> Tensor | None:
        return None if v is None or used is None else v[idx.to(v.device)].cpu()

    values = rows(ds.values, spec.values_dim)
    if values is not None and run.values_standardizer is not None:
        values = run.values_standardizer.inverse(values)
    labels, context = rows(ds.labels, spec.num_classes), rows(ds.context, spec.context_shape)
    return Condition(labels=labels, values=values, context=context)


def conditional_section(
    scorer: Scorer, rows: list[dict[str, Any]], floor: dict[str, Any]
) -> dict[str, Any]:
    """The per-bin conditional W2 of a report (moves ``cond_w2_bins`` out of rows and floor).

    Returns:
        ``{"condition": name, "bins": k, "edges": [...] (data space, outer edges -inf/inf as
        None), "counts": [...] (reference points per bin), "rows": [{"solver", "nfe",
        "per_bin"}], "floor": [...]}``.
    """
    assert scorer.edges is not None and scorer.cond is not None and scorer.cond.values is not None
    names = scorer.run.info["data"].get("cond_names") or ["cond[0]"]
    counts = torch.bincount(
        bin_index(scorer.cond.values[:, :1], scorer.edges), minlength=len(scorer.edges) - 1
    )
    section: dict[str, Any] = {
        "condition": names[0],
        "bins": len(scorer.edges) - 1,
        "edges": [None if math.isinf(e) else e for e in scorer.edges.tolist()],
        "counts": counts.tolist(),
        "rows": [
            {"solver": r["solver"], "nfe": r["nfe"], "per_bin": r.pop("cond_w2_bins")}
            for r in rows
            if "cond_w2_bins" in r
        ],
    }
    if "cond_w2_bins" in floor:
        section["floor"] = floor.pop("cond_w2_bins")
    return section


def _subset_index(size: int, n: int, stream: int) -> Tensor:
    """A seeded random subset of ``n`` indices of ``range(size)`` (independent of file order)."""
    return torch.randperm(size, generator=step_generator(0, stream))[:n]


def _matched_index(labels: Tensor, want: Tensor, stream: int) -> Tensor:
    """Seeded random rows of ``labels`` with the class counts of ``want`` (as many as exist).

    A class with fewer rows than wanted contributes all of its rows; the result then has
    fewer than ``len(want)`` rows.
    """
    perm = torch.randperm(len(labels), generator=step_generator(0, stream))
    shuffled = labels.cpu()[perm]
    counts = torch.bincount(want.cpu(), minlength=int(shuffled.max()) + 1)
    rank = torch.zeros_like(shuffled)  # rank of each row within its class, in shuffled order
    order = torch.argsort(shuffled, stable=True)
    sorted_labels = shuffled[order]
    starts = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank[order] = torch.arange(len(order)) - starts
    keep = rank < counts[shuffled]
    return perm[keep]


def _subset(x: Tensor, n: int, stream: int) -> Tensor:
    return x[_subset_index(len(x), n, stream).to(x.device)]


def flow_metrics(
    run: Run, test_ds: ArrayDataset, *, num_samples: int = 500, seed: int = 0
) -> dict[str, float]:
    """Held-out negative log-likelihood and straightness of the learned flow.

    ``nll``: mean ``-log p(x)`` in nats per sample in data space, from the instantaneous
    change of variables with exact divergence and Dopri5 (atol = rtol = 1e-5) from the run's
    source, corrected by the standardisation's ``sum log std``
    (``flowmatch.solvers.log_likelihood``). ``straightness``:
    ``int_0^1 E||(x_1 - x_0) - v(x_t, t)||^2 dt`` along the model's own trajectories from
    source samples (Liu et al. 2023; 0 for straight paths), RK4, 100 steps. Unconditional
    velocity-field runs only (conditional ones would need a condition per point).
    """
    from flowmatch.metrics import straightness
    from flowmatch.solvers import log_likelihood

    if run.cond.conditional or getattr(run.field, "field_kind", "velocity") != "velocity":
        return {}
    if not run.source.has_log_prob:  # e.g. a toy source without a closed-form density
        return {}
    z = _subset(test_ds.x, num_samples, _REFERENCE_STREAM).to(run.device)
    logp = log_likelihood(run.field, z, source=run.source).log_prob
    nll = float(-(logp.mean() - run.standardizer.log_abs_det()))
    x0 = run.noise(num_samples, seed=seed + 1)
    with torch.no_grad():
        s = straightness(run.field, x0, num_steps=100)
    return {"nll": nll, "straightness": s}


__all__ = [
    "MAX_DIM_FLOW_METRICS",
    "Scorer",
    "conditional_section",
    "data_condition",
    "eval_plan",
    "evaluate",
    "fit_to_field",
    "flow_metrics",
]
