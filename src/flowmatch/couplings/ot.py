"""Minibatch optimal-transport couplings: exact, class-conditional exact, and entropic.

With equal batch sizes and uniform weights the exact OT plan between the empirical minibatches
is a permutation (Birkhoff-von Neumann), so these couplings return a permutation of ``x0``:
no pair is duplicated or dropped, and both marginals are preserved exactly (Tong et al. 2024,
"Improving and generalizing flow-based generative models with minibatch optimal transport",
Sec. 3.2, Alg. 2, with the permutation instead of sampling pairs with replacement).

The squared-Euclidean cost ``||x0_j - x1_i||^2 = |x0_j|^2 + |x1_i|^2 - 2 <x1_i, x0_j>`` enters
every assignment objective only through ``-2 <x1_i, x0_j>``: the norms are constant over
permutations. All couplings here therefore solve on the inner-product matrix, computed in
float64, which avoids the cancellation of the expanded form and any ``(B, B, D)`` temporary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor

from flowmatch.couplings.assignment import (
    ASSIGNMENT_SOLVERS,
    AssignmentSolver,
    linear_assignment,
)
from flowmatch.couplings.base import COUPLINGS, Coupling, CouplingConfig, check_labels
from flowmatch.utils.checks import (
    check_batch,
    check_finite,
    check_in_choices,
    check_positive_float,
    check_positive_int,
    check_same_batch,
)
from flowmatch.utils.options import option

_NONFINITE_HINT = (
    "the OT cost needs finite samples; check the data and the source for NaN/inf "
    "(or values so large that squared distances overflow)"
)


def _flat64(x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
    """Validate a pair ``(B, *D)`` and return it as detached float64 CPU ``(B, prod(D))``.

    The one place every coupling here checks and converts its inputs (a no-op copy for
    contiguous float64 CPU inputs), so each ``permutation``/``plan`` converts only once.
    """
    check_batch(x0, "x0")
    check_batch(x1, "x1")
    check_same_batch(x0, x1)
    a0 = x0.detach().reshape(x0.shape[0], -1).to("cpu", torch.float64)
    a1 = x1.detach().reshape(x1.shape[0], -1).to("cpu", torch.float64)
    return a0, a1


def _check_solver(solver: str) -> AssignmentSolver:
    return cast(AssignmentSolver, check_in_choices(solver, ASSIGNMENT_SOLVERS, "solver"))


def _neg_inner(a0: Tensor, a1: Tensor) -> Tensor:
    """``M[i, j] = -<a1_i, a0_j>`` ``(B, B)`` from the outputs of :func:`_flat64`.

    Rows index data, columns sources. Same optimal permutations as the squared-Euclidean
    cost (norms are permutation-invariant), and an assignment of rows to columns is directly
    the ``perm`` of the Coupling contract.
    """
    cost = torch.mm(a1, a0.T).neg_()
    # numpy's isfinite is ~15x faster than torch's on one thread for a 256 x 256 matrix, and
    # this check runs every training step.
    finite = np.isfinite(cost.numpy())
    if not finite.all():
        bad = int(finite.size - finite.sum())
        raise FloatingPointError(
            f"OT cost matrix has {bad} non-finite value(s) (NaN or inf); {_NONFINITE_HINT}"
        )
    return cost


def _solve(cost: Tensor, solver: AssignmentSolver, device: torch.device) -> Tensor:
    perm = linear_assignment(cost.numpy(), solver=solver)
    return torch.from_numpy(perm).to(device)


@dataclass(frozen=True)
class AssignmentConfig(CouplingConfig):
    """Options of the exact (class-conditional) OT couplings."""

    solver: AssignmentSolver = option(
        "auction", doc="assignment solver: 'auction' (compiled, fastest) or 'scipy' (reference)"
    )


@dataclass(frozen=True)
class SinkhornConfig(AssignmentConfig):
    """Options of the entropic OT coupling."""

    reg: float = option(0.05, gt=0, doc="entropic regularisation, relative to the mean cost")


@COUPLINGS.register("exact_ot", config=AssignmentConfig)
class ExactOTCoupling(Coupling):
    """Exact minibatch OT with squared-Euclidean cost: the optimal permutation.

    ``perm = argmin_sigma sum_i ||x0_sigma(i) - x1_i||^2`` over permutations of the batch, i.e.
    the exact OT plan ``argmin_{pi in U(1/B, 1/B)} <pi, C>`` for uniform weights (Tong et al.
    2024, Alg. 2; solved as a linear assignment problem). Samples of any shape ``(B, *D)`` are
    flattened. Deterministic: ``generator`` is not used.

    Args:
        solver: ``"auction"`` (numba, default, releases the GIL) or ``"scipy"``
            (``linear_sum_assignment``). Both are exact; see :mod:`~.assignment`.

    Example:
        >>> import torch
        >>> x0, x1 = torch.randn(64, 2), torch.randn(64, 2)
        >>> x0_paired, x1_same = ExactOTCoupling()(x0, x1)
        >>> x0_paired.shape, bool((x1_same == x1).all())
        (torch.Size([64, 2]), True)
    """

    def __init__(self, *, solver: AssignmentSolver = "auction") -> None:
        self.solver = _check_solver(solver)

    def permutation(
        self,
        x0: Tensor,
        x1: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Return the optimal ``perm`` ``(B,)`` (long, on ``x0.device``).

        Args:
            x0: source samples ``(B, *D)``.
            x1: data samples ``(B, *D)``.
            labels: ignored by this coupling (it pairs across labels); see
                ``ClassConditionalOTCoupling`` for label-aware pairing.
            generator: unused (the optimum is deterministic; ties go to the solver's choice).

        Returns:
            ``perm`` such that ``x0[perm][i]`` is paired with ``x1[i]``.

        Raises:
            ValueError: if shapes differ or a batch is empty.
            TypeError: if an input is not a floating tensor.
            FloatingPointError: if the cost matrix has NaN/inf entries.
        """
        return _solve(_neg_inner(*_flat64(x0, x1)), self.solver, x0.device)

    def __repr__(self) -> str:
        return f"ExactOTCoupling(solver={self.solver!r})"


@COUPLINGS.register("class_ot", config=AssignmentConfig)
class ClassConditionalOTCoupling(Coupling):
    """Exact minibatch OT within each class: pairs never cross labels.

    For every label ``k`` with slots ``I_k = {i : labels_i = k}``, the sources at those slots
    are re-paired with ``x1[I_k]`` by the exact OT permutation of that sub-batch:
    ``perm[I_k] = I_k[argmin_sigma sum_{i in I_k} ||x0_{I_k[sigma(i)]} - x1_i||^2]``.
    Each class therefore keeps its own source sub-sample, so the coupling does not bias the
    per-class prior as a class-blind OT pairing does (Tong et al. 2024, conditional OT-CFM;
    Cheng et al. 2025, "The Curse of Conditions", C2OT).

    Args:
        solver: assignment solver, as for ``ExactOTCoupling``.

    Example:
        >>> import torch
        >>> x0, x1 = torch.randn(8, 2), torch.randn(8, 2)
        >>> labels = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1])
        >>> perm = ClassConditionalOTCoupling().permutation(x0, x1, labels=labels)
        >>> bool((labels[perm] == labels).all())
        True
    """

    uses_labels = True

    def __init__(self, *, solver: AssignmentSolver = "auction") -> None:
        self.solver = _check_solver(solver)

    def permutation(
        self,
        x0: Tensor,
        x1: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Return ``perm`` ``(B,)`` with ``labels[perm] == labels``, optimal within each class.

        Args:
            x0: source samples ``(B, *D)``.
            x1: data samples ``(B, *D)``.
            labels: integer class labels of ``x1`` ``(B,)`` (required).
            generator: unused (deterministic).

        Returns:
            ``perm`` (long, on ``x0.device``) such that ``x0[perm][i]`` pairs with ``x1[i]``.

        Raises:
            ValueError: if ``labels`` is missing or not of shape ``(B,)``, or shapes differ.
            TypeError: if ``labels`` is not an integer tensor or inputs are not floating.
            FloatingPointError: if the cost matrix has NaN/inf entries.
        """
        a0, a1 = _flat64(x0, x1)
        if labels is None:
            raise ValueError(
                "ClassConditionalOTCoupling needs labels (B,) to pair within classes, got None; "
                "use ExactOTCoupling for unlabelled data"
            )
        check_labels(labels, x1.shape[0])
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
        cost = _neg_inner(a0, a1)
        labels_cpu = labels.detach().cpu()
        perm = torch.empty(x1.shape[0], dtype=torch.long)
        # One assignment per class (a loop over classes, never over samples).
        for k in torch.unique(labels_cpu):
            idx = (labels_cpu == k).nonzero().squeeze(1)
            # One gather of the (|I_k|, |I_k|) block (cost[idx][:, idx] would copy rows first).
            sub = linear_assignment(cost[idx[:, None], idx].numpy(), solver=self.solver)
            perm[idx] = idx[torch.from_numpy(sub)]
        return perm.to(x0.device)

    def __repr__(self) -> str:
        return f"ClassConditionalOTCoupling(solver={self.solver!r})"


@COUPLINGS.register("sinkhorn", config=SinkhornConfig)
class SinkhornCoupling(Coupling):
    """Entropic OT coupling: a random permutation drawn by perturb-and-MAP on the Sinkhorn plan.

    With ``C_ij = ||x0_i - x1_j||^2`` and ``eps = reg * mean(C)`` (``reg`` is *relative to the
    mean pairwise squared distance*, so one value works at any data scale or dimension), the
    entropic plan is ``P = argmin_{P in U(1/B, 1/B)} <P, C> - eps H(P)``, i.e.
    ``log P_ij = (f_i + g_j - C_ij) / eps`` (Cuturi 2013), available from :meth:`plan`.

    A pairing without replacement is drawn by perturb-and-MAP (Papandreou & Yuille 2011;
    Mena et al. 2018, Gumbel-Sinkhorn): ``sigma = argmax_sigma sum_i log P_sigma(i),i +
    G_sigma(i),i`` with i.i.d. standard Gumbel ``G``, solved exactly as an assignment. The
    potentials contribute ``sum_i f_sigma(i) + g_i``, the same for every permutation, so the
    MAP only depends on ``-C / eps + G``: no Sinkhorn iterations are needed to sample (tests
    check the equality with the perturbed Sinkhorn log-plan). As ``reg -> 0`` the pairing
    tends to exact OT; as ``reg -> inf`` to a uniformly random permutation (independent
    coupling). Its pair frequencies approximate, but do not exactly equal, ``B * P``.

    Args:
        reg: entropic regularisation relative to ``mean(C)``, ``> 0``.
        num_iters: maximum Sinkhorn iterations in :meth:`plan`.
        tol: :meth:`plan` stops when the largest marginal error
            ``max_j |sum_i P_ij - 1/B| * B`` is below ``tol``; raises if not reached.
        solver: assignment solver for the MAP step.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x0, x1 = torch.randn(32, 2), torch.randn(32, 2)
        >>> x0_paired, _ = SinkhornCoupling(reg=0.05)(x0, x1, generator=g)
        >>> x0_paired.shape
        torch.Size([32, 2])
    """

    def __init__(
        self,
        reg: float = 0.05,
        *,
        num_iters: int = 1000,
        tol: float = 1e-6,
        solver: AssignmentSolver = "auction",
    ) -> None:
        self.reg = check_positive_float(reg, "reg")
        self.num_iters = check_positive_int(num_iters, "num_iters")
        self.tol = check_positive_float(tol, "tol")
        self.solver = _check_solver(solver)

    def _epsilon(self, a0: Tensor, a1: Tensor) -> float:
        """``reg * mean_ij |a0_i - a1_j|^2`` for the flattened float64 pair of :func:`_flat64`."""
        # mean_ij |a0_i - a1_j|^2 = mean|a0|^2 + mean|a1|^2 - 2 <mean a0, mean a1>, exactly.
        mean_cost = float(
            a0.pow(2).sum(1).mean() + a1.pow(2).sum(1).mean() - 2 * a0.mean(0) @ a1.mean(0)
        )
        if not math.isfinite(mean_cost):
            raise FloatingPointError(f"OT cost matrix has mean {mean_cost}; {_NONFINITE_HINT}")
        if mean_cost <= 0.0:
            raise ValueError(
                "SinkhornCoupling needs x0 and x1 not all identical (mean squared distance is "
                f"{mean_cost}, so reg * mean(C) gives no temperature)"
            )
        return self.reg * mean_cost

    def plan(self, x0: Tensor, x1: Tensor) -> Tensor:
        """The entropic OT plan ``P`` ``(B, B)`` (float64, CPU) by log-domain Sinkhorn.

        ``P_ij = exp((f_i + g_j - C_ij) / eps)`` with potentials updated alternately,
        ``f = -eps logsumexp((g - C) / eps, dim=1) - eps log B`` and symmetrically for ``g``,
        until both marginals are ``1/B`` within ``tol / B`` (Cuturi 2013; Peyre & Cuturi 2019,
        Computational OT, Remark 4.23, log-domain stabilisation). Rows index ``x0``,
        columns ``x1``.

        Args:
            x0: source samples ``(B, *D)``.
            x1: data samples ``(B, *D)``.

        Returns:
            ``P`` ``(B, B)``, non-negative, rows and columns summing to ``1/B``.

        Raises:
            ValueError: if shapes differ or all points coincide.
            FloatingPointError: if the cost is non-finite.
            RuntimeError: if the marginals are not within ``tol`` after ``num_iters``.
        """
        a0, a1 = _flat64(x0, x1)
        eps = self._epsilon(a0, a1)
        cost = torch.cdist(a0, a1).pow(2)
        check_finite(cost, "OT cost matrix", hint=_NONFINITE_HINT)
        n = cost.shape[0]
        log_k = -cost / eps
        log_w = -math.log(n)
        f = cost.new_zeros(n)
        g = cost.new_zeros(n)
        err = math.inf
        for it in range(self.num_iters):
            f = log_w - torch.logsumexp(log_k + g[None, :], dim=1)
            g = log_w - torch.logsumexp(log_k + f[:, None], dim=0)
            # After the g update columns are exact; rows measure convergence. Checked every
            # 10 iterations to keep the loop free of per-iteration host syncs.
            if it % 10 == 9 or it == self.num_iters - 1:
                rows = torch.logsumexp(log_k + f[:, None] + g[None, :], dim=1).exp()
                err = float((rows * n - 1.0).abs().max())
                if err < self.tol:
                    return (log_k + f[:, None] + g[None, :]).exp()
        raise RuntimeError(
            f"Sinkhorn did not converge in num_iters={self.num_iters} iterations "
            f"(marginal error {err:.3g} > tol={self.tol:g}); increase num_iters or reg"
        )

    def permutation(
        self,
        x0: Tensor,
        x1: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw ``perm`` ``(B,)`` by perturb-and-MAP on the entropic plan.

        ``perm = argmin_sigma sum_i (-2 <x1_i, x0_sigma(i)> / eps - G_i,sigma(i))`` with
        ``G ~ Gumbel(0, 1)`` i.i.d. ``(B, B)`` drawn (float64, on the generator's device)
        from ``generator``; equal to the MAP of the perturbed log-plan (see class docstring).

        Args:
            x0: source samples ``(B, *D)``.
            x1: data samples ``(B, *D)``.
            labels: ignored (pairs across labels).
            generator: the only source of randomness (``None``: torch's default generator).

        Returns:
            ``perm`` (long, on ``x0.device``) such that ``x0[perm][i]`` pairs with ``x1[i]``.

        Raises:
            ValueError: if shapes differ or all points coincide.
            FloatingPointError: if the cost is non-finite.
        """
        a0, a1 = _flat64(x0, x1)
        eps = self._epsilon(a0, a1)
        cost = _neg_inner(a0, a1)
        device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(cost.shape, generator=generator, dtype=torch.float64, device=device)
        # Gumbel draw -log(-log u), in place; the clamp away from 0 keeps it finite.
        gumbel = u.clamp_min_(torch.finfo(torch.float64).tiny).log_().neg_().log_().neg_()
        # 2 * cost / eps - G in place on the fresh cost matrix (same rounding, no temporaries).
        return _solve(cost.mul_(2.0).div_(eps).sub_(gumbel.cpu()), self.solver, x0.device)

    def __repr__(self) -> str:
        return (
            f"SinkhornCoupling(reg={self.reg}, num_iters={self.num_iters}, tol={self.tol}, "
            f"solver={self.solver!r})"
        )
