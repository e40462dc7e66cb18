"""What is computed once per run and stored in its directory (``grids.json``: BOSS grids)."""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import Tensor

from flowmatch.api.run import Run
from flowmatch.solvers.base import SAMPLERS
from flowmatch.utils.options import OptionError

GRIDS_FILE = "grids.json"


def grid_key(solver: str, steps: int) -> str:
    """The key of a stored grid: ``"<solver>/<steps>"``."""
    return f"{solver}/{steps}"


def read_grids(run: Run) -> dict[str, Any]:
    """The run's ``grids.json`` (empty when there is none)."""
    path = run.directory / GRIDS_FILE if run.directory is not None else None
    if path is None or not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def stored_grid(run: Run, kind: str, solver: str, steps: int) -> Tensor:
    """The stored grid ``kind`` of ``run`` for ``steps`` steps of ``solver``.

    Raises:
        OptionError: none stored for that solver and step count, or it was computed at
            another checkpoint step.
    """
    entry = read_grids(run).get(kind, {}).get(grid_key(solver, steps))
    hint = (
        f"run `flowmatch grid RUN --method {kind} --solver {solver} --nfe "
        f"{steps * SAMPLERS[solver].stages}`"
    )
    if entry is None:
        have = sorted(read_grids(run).get(kind, {}))
        raise OptionError(
            "grid",
            f"no {kind!r} grid for {steps} {solver} steps stored in the run (has "
            f"{have or 'none'}); {hint}",
        )
    if entry["step"] != run.step:
        raise OptionError(
            "grid",
            f"the stored {kind!r} grid was computed at step {entry['step']} but the run "
            f"is at step {run.step}; {hint} again",
        )
    return torch.tensor(entry["grid"], dtype=torch.float32)


__all__ = ["GRIDS_FILE", "grid_key", "read_grids", "stored_grid"]
