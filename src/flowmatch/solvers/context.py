"""What some samplers need from the run besides the field: its path, source, null label, modules.

A plain ODE solver integrates any velocity field. A few samplers need more: the SDE samplers
turn the velocity into a score through the run's *path* (and need a standard Gaussian
*source*), reflective sampling needs the *null label* of classifier-free guidance, FlowTurbo
needs its trained *refiner* module. Such a sampler subclasses :class:`ContextualSampler`; its
registry config builds it unbound, and :func:`bind_sampler` (called by
``flowmatch.api.sampling_plan`` with the loaded run's context) returns the bound copy, so
``flowmatch sample RUN --solver euler_maruyama`` works on any run without the user passing the
path. In Python the same samplers take these parts as constructor arguments.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from flowmatch.paths.affine import AffinePath
from flowmatch.solvers.base import Sampler

__all__ = ["ContextualSampler", "SamplingContext", "bind_sampler"]


@dataclass(frozen=True)
class SamplingContext:
    """The parts of a run a contextual sampler may need.

    Attributes:
        path: the run's affine path (velocity <-> score conversions).
        gaussian_source: whether the run's source is the standard normal ``N(0, I)`` (the
            score formula ``-E[x0 | x] / sigma_t`` assumes it).
        null_label: the null label of classifier-free guidance (conditional runs), else ``None``.
        modules: extra trained modules by name (e.g. ``{"refiner": net}``).
        name: what the context describes, for messages (e.g. the run directory).
    """

    path: AffinePath | None = None
    gaussian_source: bool = True
    null_label: int | None = None
    modules: Mapping[str, Any] = field(default_factory=dict)
    name: str = "the run"


class ContextualSampler(Sampler):
    """A sampler that needs parts of the run (see :class:`SamplingContext`).

    Attributes:
        requires: the context parts it reads (``"path"``, ``"null_label"``, a module name).
    """

    requires: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def bind(self, context: SamplingContext) -> Sampler:
        """A copy of this sampler that uses ``context`` (the parts it already has are kept)."""


def bind_sampler(sampler: Sampler, context: SamplingContext) -> Sampler:
    """``sampler`` bound to ``context`` when it is a :class:`ContextualSampler`, else itself.

    Raises:
        ValueError: the context lacks a part the sampler needs (the message names it).
    """
    if isinstance(sampler, ContextualSampler):
        return sampler.bind(context)
    return sampler
