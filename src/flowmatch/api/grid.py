"""Time grids computed once per run and stored with it (BOSS), and read back by name.

``compute_grids(run, nfe=[4, 8], solver="euler")`` runs the BOSS dynamic program on the run's
own reference trajectories and writes ``RUN/grids.json``; afterwards ``generate(run,
solver="euler", nfe=4, grid="boss")`` (or ``sample.grid = "boss"``, ``flowmatch sample
--grid boss``) uses the stored grid. A grid is tied to the checkpoint step it was computed at:
after more training, recompute it (BOSS costs depend on the model).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from flowmatch.api.run import Run
from flowmatch.api.sample import guided_field, run_context, sample_labels
from flowmatch.api.stored import GRIDS_FILE, grid_key, read_grids
from flowmatch.interfaces import cond_to
from flowmatch.sampling.boss import boss_grids
from flowmatch.solvers.base import SAMPLERS, FixedStepConfig
from flowmatch.solvers.context import bind_sampler
from flowmatch.train.lock import RunLock
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.io import atomic_write_text
from flowmatch.utils.options import OptionError

METHODS = ("boss",)


def compute_grids(
    run: Run,
    *,
    nfe: Sequence[int],
    solver: str = "euler",
    method: str = "boss",
    fine_steps: int = 100,
    num_samples: int = 256,
    seed: int = 0,
    save: bool = True,
) -> dict[int, list[float]]:
    """BOSS grids of ``run`` for ``solver`` at each budget in ``nfe``; stored in the run.

    Args:
        run: a loaded run (with a ``directory`` when ``save``).
        nfe: evaluation budgets (multiples of the solver's stages).
        solver: a deterministic fixed-step sampler name.
        method: ``"boss"``.
        fine_steps: intervals of the fine reference grid (``M``).
        num_samples: source samples of the reference trajectories.
        seed: their seed.
        save: write them into ``RUN/grids.json``.

    Returns:
        ``{nfe: grid values}``.

    Raises:
        OptionError: unknown method or solver, an NFE that does not fit, or ``save`` without
            a run directory.
    """
    if method not in METHODS:
        raise OptionError("method", f"unknown grid method {method!r}; choose one of {METHODS}")
    entry = SAMPLERS.entry(solver)
    cls = SAMPLERS[solver]
    if (
        not issubclass(entry.config, FixedStepConfig)
        or cls.stochastic
        or cls.field_kind != "velocity"
    ):
        raise OptionError("solver", f"must be a fixed-step ODE sampler, got {solver!r}")
    check_positive_int(num_samples, "num_samples")
    check_positive_int(seed, "seed", minimum=0)
    steps = {}
    for k in nfe:
        SAMPLERS.config(solver, nfe=k)  # the NFE must fit the solver's stages
        steps[k] = k // cls.stages
    if save and run.directory is None:
        raise OptionError("save", "needs a run loaded from a directory (api.load_run)")
    sampler = bind_sampler(cls(), run_context(run))
    labels = sample_labels(run, num_samples, None)
    grids = boss_grids(
        guided_field(run, run.sample.guidance),
        run.noise(num_samples, seed=seed),
        sampler,
        sorted(set(steps.values())),
        fine_steps=fine_steps,
        cond=cond_to(labels, run.device) if labels is not None else None,
    )
    out = {k: grids[steps[k]][0].tolist() for k in nfe}
    if save:
        _store(
            run,
            solver,
            {steps[k]: (out[k], grids[steps[k]][1]) for k in nfe},
            {"fine_steps": fine_steps, "num_samples": num_samples, "seed": seed},
        )
    return out


def _store(run: Run, solver: str, grids: dict[int, tuple[list[float], float]], meta: dict) -> None:
    assert run.directory is not None
    with RunLock(run.directory):  # one writer per run directory: read, merge, write
        data = read_grids(run)
        boss = data.setdefault("boss", {})
        for steps, (values, cost) in grids.items():
            boss[grid_key(solver, steps)] = {"grid": values, "cost": cost, "step": run.step, **meta}
        atomic_write_text(run.directory / GRIDS_FILE, json.dumps(data, indent=2))


__all__ = ["METHODS", "compute_grids"]
