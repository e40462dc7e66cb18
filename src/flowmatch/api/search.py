"""Inference-time search on a trained run: best-of-N, SMC, Rollover Budget Forcing."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowmatch.api.run import Run
from flowmatch.api.sample import guided_field, sample_labels
from flowmatch.interfaces import Cond, cond_to
from flowmatch.sampling.rewards import REWARDS, Reward
from flowmatch.sampling.search import SEARCHES, SearchProblem
from flowmatch.sources import GaussianSource
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import OptionError
from flowmatch.utils.tensor import step_generator

_SEARCH_STREAM = 0x5E


@dataclass(frozen=True)
class SearchOutput:
    """Searched samples in data space ``(N, *D)``, their rewards ``(N,)`` and the cost.

    Attributes:
        samples: the samples.
        labels: their classes (conditional runs) or ``None``.
        rewards: the reward of each sample.
        nfe: field evaluations spent per sample (at most the budget).
        seconds: wall time.
        search: the search's name.
    """

    samples: Tensor
    labels: Tensor | None
    rewards: Tensor
    nfe: int
    seconds: float
    search: str


#: Searches that integrate the ODE only (any source); the others run an SDE.
_ODE_SEARCHES = ("best_of_n", "flowopt")


def search(
    run: Run,
    num_samples: int,
    *,
    search: str = "rbf",
    reward: str | Reward = "distance",
    budget: int = 100,
    search_options: Mapping[str, Any] | None = None,
    reward_options: Mapping[str, Any] | None = None,
    guidance: float | None = None,
    label: int | None = None,
    seed: int = 0,
) -> SearchOutput:
    """``num_samples`` samples of ``run``, each found by a search spending <= ``budget`` NFE.

    Args:
        run: a loaded run (a standard Gaussian source for the SDE searches).
        num_samples: outputs.
        search: ``"best_of_n"``, ``"smc"``, ``"rbf"`` (or a plugin's).
        reward: a registered reward name (``"distance"``, ``"region"``, ``"digit"``, or a
            plugin's) or a :class:`~flowmatch.sampling.rewards.Reward`; it scores data-space
            samples.
        budget: field evaluations per output.
        search_options: options of the search (e.g. ``{"steps": 10}``).
        reward_options: options of the named reward (e.g. ``{"point": [2, 2]}``).
        guidance: CFG scale of conditional runs (default the run's).
        label: class of every output (conditional runs; default: cycle through classes).
        seed: seed of the search's randomness.

    Raises:
        OptionError: unknown names or options; an SDE search on a non-Gaussian source.

    Example:
        >>> out = search(run, 100, search="rbf", reward="distance", budget=50)  # doctest: +SKIP
    """
    check_positive_int(num_samples, "num_samples")
    check_positive_int(seed, "seed", minimum=0)
    cfg = SEARCHES.config(search, **dict(search_options or {}))
    if search not in _ODE_SEARCHES and type(run.source) is not GaussianSource:
        raise OptionError("search", f"{search!r} runs an SDE, which needs a N(0, I) source")
    if isinstance(reward, Reward):
        if reward_options:
            raise OptionError("reward_options", "give the options to the Reward object")
        reward_fn = reward
    else:
        reward_fn = REWARDS.build(REWARDS.config(reward, **dict(reward_options or {})))
    labels = sample_labels(run, num_samples, label)
    shape, device = run.sample_shape, run.device

    def model_reward(x: Tensor, cond: Cond) -> Tensor:
        return reward_fn(run.to_data_space(x), cond)

    problem = SearchProblem(
        field=guided_field(run, run.sample.guidance if guidance is None else guidance),
        path=run.path,
        reward=model_reward,
        source=lambda n, g: run.source.sample((n, *shape), g).to(device),
        cond=cond_to(labels, device) if labels is not None else None,
    )
    start = time.perf_counter()
    with torch.no_grad():
        res = SEARCHES.build(cfg)(
            problem, num_samples, budget, step_generator(seed, _SEARCH_STREAM)
        )
    return SearchOutput(
        run.to_data_space(res.x.cpu()),
        labels,
        res.reward.cpu(),
        res.nfe,
        time.perf_counter() - start,
        search,
    )


__all__ = ["SearchOutput", "search"]
