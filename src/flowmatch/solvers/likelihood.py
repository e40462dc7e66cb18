"""Exact log-likelihoods of a flow through the instantaneous change of variables.

Along a trajectory of ``dx/dt = v(x, t)`` the density obeys ``d/dt log p_t(x_t) = -div v(x_t, t)``
(Chen et al. 2018, "Neural Ordinary Differential Equations", Theorem 1; Grathwohl et al. 2019,
FFJORD, eq. 4; Lipman et al. 2023, Sec. 2). Integrating the augmented state ``(x, L)`` with
``dx/dt = v``, ``dL/dt = div v`` backwards from ``t = 1`` (data, ``L(1) = 0``) to ``t = 0`` gives

    log p_1(x_1) = log p_0(x_0) + L(0),     L(0) = int_1^0 div v(x_t, t) dt.

The divergence is exact (``D`` backward passes) or Hutchinson's estimate ``z^T (dv/dx) z``
with Rademacher probes ``z`` drawn once per solve (Hutchinson 1989; FFJORD, eq. 7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from flowmatch.interfaces import Cond, VelocityField
from flowmatch.solvers.adaptive import Dopri5
from flowmatch.solvers.base import AdaptiveSolver, ODESolver
from flowmatch.solvers.integrate import solve
from flowmatch.sources import GaussianSource, Source
from flowmatch.times.grids import grid_values
from flowmatch.utils.checks import (
    check_batch,
    check_in_choices,
    check_positive_int,
    check_tensor,
)

DivergenceMethod = Literal["exact", "hutchinson"]
DIVERGENCE_METHODS: tuple[str, ...] = ("exact", "hutchinson")


@dataclass(frozen=True)
class LikelihoodResult:
    """Result of ``log_likelihood``.

    Attributes:
        log_prob: ``log p_1(x_1)`` in nats, ``(B,)`` (an unbiased estimate with Hutchinson).
        x0: the source points the data map to, ``(B, *D)``.
        nfe: evaluations of the velocity field (each also costs the divergence's backward
            passes: ``D`` for ``"exact"``, ``num_probes`` for ``"hutchinson"``).
    """

    log_prob: Tensor
    x0: Tensor
    nfe: int


def divergence(
    field: VelocityField,
    x: Tensor,
    t: Tensor,
    cond: Cond = None,
    *,
    method: DivergenceMethod = "exact",
    probes: Tensor | None = None,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    """Evaluate a velocity field and its divergence ``div v = sum_i dv_i / dx_i``.

    ``"exact"`` computes the trace of the Jacobian with one backward pass per feature;
    ``"hutchinson"`` returns ``(1/P) sum_p z_p^T (dv/dx) z_p`` (one vector-Jacobian product per
    probe), an unbiased estimate when ``E[z z^T] = I`` (Hutchinson 1989; Grathwohl et al. 2019,
    FFJORD, eq. 7). Both rely on samples being independent inside ``field`` (no batch
    statistics such as BatchNorm in training mode): gradients of the batch sum then give each
    sample's own Jacobian.

    Args:
        field: velocity field ``(x (B, *D), t (B,), cond) -> (B, *D)``.
        x: points ``(B, *D)``, floating point.
        t: times ``(B,)``.
        cond: conditioning passed unchanged to ``field``.
        method: ``"exact"`` or ``"hutchinson"``.
        probes: Hutchinson probe vectors ``(P, B, *D)`` (e.g. Rademacher ``+-1``); required for
            ``"hutchinson"``, rejected for ``"exact"``.
        create_graph: keep the graph of ``v`` and of the divergence so both can be
            differentiated (w.r.t. ``x`` or parameters); otherwise both are returned detached.

    Returns:
        ``(v, div)`` with ``v`` ``(B, *D)`` and ``div`` ``(B,)``.

    Raises:
        ValueError: on an unknown ``method``, ``probes`` missing/unexpected or misshaped, or
            ``t`` not of shape ``(B,)``.
        TypeError: if ``x`` or ``probes`` is not a floating tensor.

    Example:
        >>> import torch
        >>> v, div = divergence(lambda x, t, cond=None: 2 * x, torch.ones(4, 3), torch.zeros(4))
        >>> div.tolist()
        [6.0, 6.0, 6.0, 6.0]
    """
    check_batch(x, "x")
    check_in_choices(method, DIVERGENCE_METHODS, "divergence method")
    check_tensor(t, "t")
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
    if method == "exact" and probes is not None:
        raise ValueError("probes are only used by method='hutchinson'; got probes with 'exact'")
    if method == "hutchinson":
        _check_probes(probes, x)
    return _divergence(field, x, t, cond, probes if method == "hutchinson" else None, create_graph)


def _check_probes(probes: Tensor | None, x: Tensor) -> None:
    if probes is None:
        raise ValueError("method='hutchinson' needs probes of shape (P, B, *D), got None")
    check_tensor(probes, "probes")
    if probes.ndim != x.ndim + 1 or probes.shape[1:] != x.shape or probes.shape[0] < 1:
        raise ValueError(
            f"probes must have shape (P, B, *D) = (P, {', '.join(map(str, x.shape))}) with "
            f"P >= 1, got {tuple(probes.shape)}"
        )
    if not probes.is_floating_point():
        raise TypeError(f"probes must be a floating-point tensor, got dtype {probes.dtype}")


def _divergence(
    field: VelocityField,
    x: Tensor,
    t: Tensor,
    cond: Cond,
    probes: Tensor | None,
    create_graph: bool,
) -> tuple[Tensor, Tensor]:
    """Unchecked ``divergence`` (``probes=None`` means exact) for the solver's inner loop."""
    batch = x.shape[0]
    with torch.enable_grad():
        # A fresh leaf when x carries no graph; otherwise differentiate through x itself so
        # gradients keep flowing to x1 and the parameters (create_graph=True).
        if not (create_graph and x.requires_grad):
            x = x.detach().requires_grad_(True)
        v = field(x, t, cond)
        div = x.new_zeros(batch)
        if v.requires_grad:  # a field that ignores x has v without a graph and div v = 0
            if probes is None:
                v_flat = v.reshape(batch, -1)
                for i in range(v_flat.shape[1]):
                    (g,) = torch.autograd.grad(
                        v_flat[:, i].sum(),
                        x,
                        retain_graph=True,
                        create_graph=create_graph,
                        allow_unused=True,
                    )
                    if g is not None:
                        div = div + g.reshape(batch, -1)[:, i]
            else:
                for z in probes:
                    # z^T J z = <z, grad_x <v, z>>: one vector-Jacobian product per probe.
                    (g,) = torch.autograd.grad(
                        v, x, z, retain_graph=True, create_graph=create_graph, allow_unused=True
                    )
                    if g is not None:
                        div = div + (g * z).reshape(batch, -1).sum(1)
                div = div / probes.shape[0]
    if not create_graph:
        v, div = v.detach(), div.detach()
    return v, div


def log_likelihood(
    field: VelocityField,
    x1: Tensor,
    *,
    solver: ODESolver | AdaptiveSolver | None = None,
    grid: Tensor | None = None,
    source: Source | None = None,
    cond: Cond = None,
    divergence: DivergenceMethod = "exact",
    num_probes: int = 1,
    generator: torch.Generator | None = None,
    enable_grad: bool = False,
) -> LikelihoodResult:
    """Log-density ``log p_1(x_1)`` of data under the flow of ``field`` from ``source``.

    Integrates ``d/dt (x, L) = (v(x, t), div v(x, t))`` from ``t = 1`` (``x = x_1, L = 0``)
    to ``t = 0`` and returns ``log p_0(x_0) + L(0)`` (Chen et al. 2018, Theorem 1;
    Grathwohl et al. 2019, FFJORD, eq. 4; Lipman et al. 2023, Sec. 2). With
    ``divergence="hutchinson"``, ``num_probes`` Rademacher probes per sample are drawn once
    from ``generator`` and kept fixed along the trajectory, so ``L`` is an unbiased estimate
    of the exact integral with variance ``~ 1 / num_probes``.

    Args:
        field: velocity field ``(x (B, *D), t (B,), cond) -> (B, *D)``.
        x1: data points ``(B, *D)``, floating point (prefer float32 or float64).
        solver: any solver; default ``Dopri5(atol=1e-5, rtol=1e-5)``. Its error control
            also covers the ``L`` component.
        grid: decreasing times ``(N+1,)`` from exactly 1 to exactly 0 (fixed-step solvers take
            one step per interval); default ``[1, 0]``.
        source: the source distribution ``p_0``; default ``GaussianSource()``.
        cond: conditioning passed unchanged to ``field``.
        divergence: ``"exact"`` (``D`` backward passes per evaluation) or ``"hutchinson"``.
        num_probes: probes per sample for ``"hutchinson"`` (only ``1`` with ``"exact"``).
        generator: draws the Hutchinson probes (required for ``"hutchinson"``, rejected for
            ``"exact"``); drawn on the generator's device, then moved to ``x1``'s.
        enable_grad: keep the graph so ``log_prob`` can be differentiated w.r.t. ``x1`` and the
            field's parameters (costs memory for the whole trajectory); else no graph is kept.

    Returns:
        A ``LikelihoodResult`` with ``log_prob`` ``(B,)`` in nats, ``x0`` ``(B, *D)``, ``nfe``.

    Raises:
        ValueError: if ``grid`` does not run from 1 down to 0, ``divergence`` is unknown, or
            ``num_probes``/``generator`` do not fit the divergence method.
        TypeError: if ``x1``, ``source`` or ``solver`` has the wrong type.
        FloatingPointError: if the solve produced NaN/inf.

    Example:
        >>> import torch
        >>> from flowmatch.solvers import RK4
        >>> from flowmatch.times import make_grid
        >>> field = lambda x, t, cond=None: torch.zeros_like(x)  # identity flow: p_1 = p_0
        >>> res = log_likelihood(field, torch.zeros(2, 2), solver=RK4(),
        ...                      grid=make_grid("uniform", 2).flip(0))
        >>> [round(v, 4) for v in res.log_prob.tolist()]
        [-1.8379, -1.8379]
    """
    check_batch(x1, "x1")
    source = GaussianSource() if source is None else source
    if not isinstance(source, Source):
        raise TypeError(f"source must be a Source, got {type(source).__name__}")
    solver = Dopri5(atol=1e-5, rtol=1e-5) if solver is None else solver
    grid = x1.new_tensor([1.0, 0.0]) if grid is None else grid
    times = grid_values(grid)
    if times[0] != 1.0 or times[-1] != 0.0:
        raise ValueError(
            f"grid must run backwards from 1 (data) to 0 (source); got first={times[0]}, "
            f"last={times[-1]} (use make_grid(...).flip(0))"
        )
    probes = _make_probes(x1, divergence, num_probes, generator)
    batch, dim = x1.shape[0], x1[0].numel()
    augmented = _AugmentedField(field, tuple(x1.shape), probes, create_graph=enable_grad)
    with torch.set_grad_enabled(enable_grad):
        state = torch.cat([x1.reshape(batch, dim), x1.new_zeros(batch, 1)], dim=1)
        sol = solve(augmented, state, grid, solver, cond=cond)
        x0 = sol.x[:, :dim].reshape(x1.shape)
        log_prob = source.log_prob(x0) + sol.x[:, dim]
    return LikelihoodResult(log_prob=log_prob, x0=x0, nfe=sol.nfe)


class _AugmentedField:
    """The field of the augmented state ``(x, L)`` flattened to ``(B, D + 1)``: ``(v, div v)``.

    The solvers integrate a single tensor, so ``x`` (reshaped to ``(B, *D)`` for the user's
    field) and the log-density accumulator ``L`` share one ``(B, D + 1)`` state.
    """

    def __init__(
        self,
        field: VelocityField,
        shape: tuple[int, ...],
        probes: Tensor | None,
        *,
        create_graph: bool,
    ) -> None:
        self.field, self.shape, self.probes, self.create_graph = field, shape, probes, create_graph
        self.batch, self.dim = shape[0], math.prod(shape[1:])

    def __call__(self, x: Tensor, t: Tensor, cond: Cond = None) -> Tensor:
        """``(v, div v)`` ``(B, D + 1)`` at the augmented state ``x`` ``(B, D + 1)``."""
        v, div = _divergence(
            self.field,
            x[:, : self.dim].reshape(self.shape),
            t,
            cond,
            self.probes,
            self.create_graph,
        )
        return torch.cat([v.reshape(self.batch, self.dim), div[:, None]], dim=1)


def _make_probes(
    x1: Tensor, method: str, num_probes: int, generator: torch.Generator | None
) -> Tensor | None:
    """Validate the divergence options; draw Rademacher probes ``(P, B, *D)`` once per solve."""
    check_in_choices(method, DIVERGENCE_METHODS, "divergence")
    check_positive_int(num_probes, "num_probes")
    if method == "exact":
        if num_probes != 1:
            raise ValueError(f"num_probes={num_probes} only applies to divergence='hutchinson'")
        if generator is not None:
            raise ValueError(
                "generator is only used by divergence='hutchinson'; got one with 'exact'"
            )
        return None
    if not isinstance(generator, torch.Generator):
        raise ValueError(
            "divergence='hutchinson' needs an explicit torch.Generator for its probes, "
            f"got {type(generator).__name__}"
        )
    bits = torch.randint(
        0, 2, (num_probes, *x1.shape), generator=generator, device=generator.device
    )
    return (2 * bits - 1).to(dtype=x1.dtype, device=x1.device)


def bits_per_dim(log_prob: Tensor, dim: int, *, log_scale: float = 0.0) -> Tensor:
    """Negative log-likelihood in bits per dimension, ``-(log p - log_scale) / (D ln 2)``.

    ``log_prob`` is the density of the model-space point ``y`` (what the network sees);
    ``log_scale = log |det dx/dy|`` is the log-Jacobian of the map from model space back to
    the data space ``x`` the result should be reported in, so that
    ``log p_x(x) = log p_y(y) - log_scale``. For an elementwise affine map
    ``x = a y + b`` it is ``D log |a|``.

    8-bit images with uniform dequantisation: ``x = pixel + u``, ``u ~ U[0, 1)^D``, so ``x``
    lies in ``[0, 256)^D`` and ``E_u[-log p_x(x)]`` upper-bounds the discrete NLL (Theis et
    al. 2016, Sec. 3.1). If the model sees ``y = x / 256`` in ``[0, 1)``, use
    ``log_scale = D log 256`` (the usual ``+ D log 256`` term); if it sees
    ``y = x / 128 - 1`` in ``[-1, 1)``, use ``log_scale = D log 128``.

    Args:
        log_prob: model log-densities ``(B,)`` in nats.
        dim: number of dimensions ``D = prod(*D)``, ``>= 1``.
        log_scale: ``log |det dx/dy|`` as above (finite); 0 when model and data space agree.

    Returns:
        Bits per dimension ``(B,)``.

    Raises:
        ValueError: if ``log_prob`` is not 1-D, ``dim < 1`` or ``log_scale`` is not finite.
        TypeError: if ``log_prob`` is not a tensor, ``dim`` not an int, ``log_scale`` not a number.

    Example:
        >>> import math, torch
        >>> # uniform density on [0, 1)^D over 256 dequantised levels: exactly 8 bits/dim
        >>> bits_per_dim(torch.zeros(2), 3, log_scale=3 * math.log(256)).tolist()
        [8.0, 8.0]
    """
    check_tensor(log_prob, "log_prob")
    if log_prob.ndim != 1:
        raise ValueError(f"log_prob must have shape (B,), got {tuple(log_prob.shape)}")
    check_positive_int(dim, "dim")
    if isinstance(log_scale, bool) or not isinstance(log_scale, int | float):
        raise TypeError(f"log_scale must be a number, got {type(log_scale).__name__}")
    if not math.isfinite(log_scale):
        raise ValueError(f"log_scale must be finite, got {log_scale}")
    return -(log_prob - log_scale) / (dim * math.log(2.0))
