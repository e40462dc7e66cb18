"""Choose the switch time of two-model sampling on a run's held-out data (``--switch auto``)."""

from __future__ import annotations

from torch import Tensor

from flowmatch.api.config import load_run_data
from flowmatch.api.evaluate import Scorer
from flowmatch.api.run import Run
from flowmatch.api.sample import sample_labels, sampling_plan
from flowmatch.interfaces import cond_to
from flowmatch.metrics.registry import metrics_for
from flowmatch.sampling.switch import SwitchChoice, choose_switch
from flowmatch.solvers.base import ODESolver
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import OptionError


def choose_switch_time(
    run: Run,
    early: Run,
    *,
    solver: str | None = None,
    nfe: int | None = None,
    num_samples: int = 1000,
    tolerance: float = 0.05,
    metric: str | None = None,
    seed: int = 99,
) -> SwitchChoice:
    """The latest switch from ``early`` (a small model) to ``run`` within ``tolerance``.

    Every interior time of the sampling grid is tried (``choose_switch``, after Briq et al.
    2026); each sweep point integrates the same ``num_samples`` noises (``seed``) and is scored
    against a seeded subset of the run's held-out split. Measured on digits (docs/benchmarks.md):
    a choice at the edge of the tolerance on one draw can exceed it on fresh seeds, so a
    ``tolerance`` below the quality loss one accepts is advisable.

    Args:
        run: the large model, used after the switch (its data, metric and labels).
        early: the small model, used before it (same sample shape and classes).
        solver: a deterministic fixed-step sampler (``None``: the run's ``sample.solver``).
        nfe: its budget (``None``: the run's).
        num_samples: validation samples (at most the held-out size is used as reference).
        tolerance: allowed relative increase of the metric over ``run`` alone.
        metric: a metric name; default ``fd_digits`` where it applies, else ``w2``.
        seed: noise seed of the validation draw.

    Raises:
        OptionError: the two runs do not fit each other, a stochastic/adaptive solver, or a
            run conditioned on values or context.
    """
    check_positive_int(num_samples, "num_samples")
    check_positive_int(seed, "seed", minimum=0)
    if early.sample_shape != run.sample_shape or early.num_classes != run.num_classes:
        raise OptionError(
            "early",
            f"must sample what the run samples: shape {run.sample_shape} and "
            f"{run.num_classes} classes, got {early.sample_shape} and {early.num_classes}",
        )
    sampler, grid, _ = sampling_plan(run, solver, nfe=nfe)
    if not isinstance(sampler, ODESolver):
        raise OptionError(
            "solver", f"the sweep needs a deterministic fixed-step solver, got {solver!r}"
        )
    labels = sample_labels(run, num_samples, None)
    where = run.directory if run.directory is not None else "(live run)"
    _, test_ds = load_run_data(run.config, run.info, where)
    shape = tuple(run.info["data"]["sample_shape"])
    kind = run.info["data"].get("kind", "")
    if metric is None:
        auto = metrics_for(kind, shape, labelled=run.num_classes is not None)
        metric = "fd_digits" if "fd_digits" in auto else "w2"
    scorer = Scorer(run, test_ds, min(num_samples, len(test_ds)), metrics=(metric,))

    def score(x: Tensor) -> float:
        return float(scorer(run.to_data_space(x.cpu()), labels=labels)[metric])

    cond = cond_to(labels, run.device) if labels is not None else None
    x0 = run.noise(num_samples, seed=seed)
    return choose_switch(
        early.field, run.field, x0, grid, sampler, score, tolerance=tolerance, cond=cond
    )


__all__ = ["choose_switch_time"]
