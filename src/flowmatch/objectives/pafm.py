"""Posterior-augmented flow matching (PAFM): regress the posterior mean over candidate endpoints.

Stoica et al. (2026), "Posterior Augmented Flow Matching", arXiv:2605.00825: the target of a
sample is the expectation of the conditional velocity under the posterior over endpoints
given its intermediate state (and condition), ``q(x1 | x_t, c) ~ p(x_t | x1) p(x1 | c)``,
estimated by importance sampling over ``M`` candidate endpoints: an unbiased, lower-variance
estimate of the flow-matching target. The self-normalised estimator with the sample's own
endpoint among the candidates is the "stable target field" of Xu et al. (2023, ICLR).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flowmatch.interfaces import Cond, Condition, VelocityField
from flowmatch.objectives.base import (
    OBJECTIVES,
    LossOutput,
    ObjectiveConfig,
    ObjectiveStep,
    TrainingParts,
)
from flowmatch.objectives.common import (
    batch_labels,
    checked_batch_labels,
    per_sample_mse,
    regression,
)
from flowmatch.objectives.flow_matching import (
    FlowMatchingConfig,
    FlowMatchingObjective,
    flow_matching_args,
)
from flowmatch.paths.affine import AffinePath
from flowmatch.sources import Source
from flowmatch.utils.checks import check_positive_int
from flowmatch.utils.options import OptionError, option
from flowmatch.utils.tensor import expand_like

__all__ = ["PAFMConfig", "PAFMObjective", "choose_candidates", "posterior_endpoints"]


def choose_candidates(
    batch: int,
    num: int,
    *,
    labels: Tensor | None = None,
    unrestricted: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """For each sample, ``num`` other samples of the batch as candidate endpoints.

    Chosen uniformly at random among the other samples (of the same class when ``labels``
    are given, except for the samples flagged in ``unrestricted``: e.g. those whose
    condition was dropped, whose prior is the marginal). Drawn from ``generator`` alone, so
    independent of the sources ``x0`` (PAFM's unbiasedness needs that).

    Returns:
        ``(index (B, num) long, valid (B, num) bool)``: a row may have fewer than ``num``
        valid candidates when its class has fewer other members in the batch.
    """
    check_positive_int(num, "num_candidates")
    scores = torch.rand(batch, batch, generator=generator, device=device)
    allowed = ~torch.eye(batch, dtype=torch.bool, device=scores.device)
    if labels is not None:
        same = labels[:, None] == labels[None, :]
        if unrestricted is not None:
            same = same | unrestricted[:, None]
        allowed = allowed & same
    scores = torch.where(allowed, scores, torch.full_like(scores, -1.0))
    k = min(num, batch - 1) if batch > 1 else 0
    if k == 0:
        empty = torch.zeros(batch, 0, dtype=torch.long, device=scores.device)
        return empty, empty.bool()
    top, index = scores.topk(k, dim=1)
    return index, top >= 0


def posterior_endpoints(
    path: AffinePath,
    source: Source,
    xt: Tensor,
    t: Tensor,
    x1: Tensor,
    candidates: Tensor,
    valid: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Self-normalised posterior means ``(x0_bar, x1_bar)`` over candidate endpoints.

    For sample ``i`` the candidates are its own ``x1_i`` and ``x1_k``, ``k`` in
    ``candidates[i]`` (where ``valid``). With ``x0_k = (x_t - alpha_t x1_k) / sigma_t``
    (``sigma_t`` clamped to ``path.eps``, the endpoint rule),
    ``log w_ik = log p0(x0_k)`` (``p(x_t | x1_k)`` up to a constant in ``k``; for a standard
    Gaussian source ``-|x_t - alpha_t x1_k|^2 / (2 sigma_t^2)``), ``w = softmax_k``, and
    ``x1_bar = sum_k w_k x1_k``, ``x0_bar = (x_t - alpha_t x1_bar) / sigma_t``. The target in
    any parameterisation (velocity ``d_alpha x1_bar + d_sigma x0_bar``) is linear in them.

    Unbiased (Xu et al. 2023): when ``x1_i`` generated ``x_t`` and the other candidates are
    i.i.d. draws of the prior independent of ``x0_i``, ``E[x1_bar | x_t] = E[x1 | x_t]``,
    exactly, for any number of candidates.

    Returns:
        ``(x0_bar, x1_bar, ess)``: endpoints ``(B, *D)`` and the effective number of
        candidates per sample ``1 / sum_k w_k^2`` ``(B,)``.
    """
    c = path.schedule(expand_like(t, x1))
    sigma = c.sigma.clamp_min(path.eps)
    cand = torch.cat([x1[:, None], x1[candidates]], dim=1)  # (B, 1 + M, *D)
    b, m = cand.shape[:2]
    a_exp = c.alpha.unsqueeze(1)
    s_exp = sigma.unsqueeze(1)
    x0k = (xt.unsqueeze(1) - a_exp * cand) / s_exp
    logw = source.log_prob(x0k.reshape(b * m, *x1.shape[1:])).reshape(b, m)
    keep = torch.cat([valid.new_ones(b, 1), valid], dim=1)
    logw = torch.where(keep, logw, torch.full_like(logw, -torch.inf))
    w = torch.softmax(logw.double(), dim=1).to(x1.dtype)
    x1_bar = (w.reshape(b, m, *([1] * (x1.ndim - 1))) * cand).sum(1)
    x0_bar = (xt - c.alpha * x1_bar) / sigma
    ess = 1.0 / w.square().sum(1)
    return x0_bar, x1_bar, ess


@dataclass(frozen=True)
class PAFMConfig(FlowMatchingConfig):
    """Options of PAFM (on top of flow matching's)."""

    num_candidates: int = option(
        16, ge=1, doc="other endpoints M per sample (from the batch; same class when labelled)"
    )


def _build_pafm(config: ObjectiveConfig, *, parts: TrainingParts) -> ObjectiveStep:
    assert isinstance(config, PAFMConfig)  # guaranteed by Registry.build
    if parts.cond.values_dim is not None or parts.cond.context_shape is not None:
        raise OptionError(
            "objective.kind",
            "'pafm' draws candidate endpoints from p(x1 | c) by class; runs conditioned on "
            "continuous values or context have no such prior here (use labels, or "
            "model.conditional = 'no')",
        )
    if parts.coupling.pairs:
        raise OptionError(
            "coupling.kind",
            f"'pafm' needs the independent coupling (its posterior assumes x0 ~ p0 independent "
            f"of x1), got {parts.coupling.name!r}",
        )
    if not getattr(parts.source, "has_log_prob", True) or parts.source.conditional:
        raise OptionError("source.kind", "'pafm' needs an unconditional source with a density")
    return ObjectiveStep(
        PAFMObjective(
            **flow_matching_args(config, parts),
            num_candidates=config.num_candidates,
        )
    )


@OBJECTIVES.register("pafm", config=PAFMConfig, build=_build_pafm)
class PAFMObjective(FlowMatchingObjective):
    """Flow matching with the posterior-averaged target over ``1 + M`` candidate endpoints.

    ``y_i = target(x0_bar_i, x1_bar_i)`` from :func:`posterior_endpoints`, candidates from
    :func:`choose_candidates` (same class when the batch has labels; the marginal for samples
    whose label was dropped for guidance training). At high noise the weights spread over all
    plausible endpoints (a low-variance target, the class-mean direction); near the data they
    concentrate on the sample's own endpoint (plain flow matching). Nothing is detached: the
    target holds no network. Logged: ``pafm_ess`` (mean effective number of candidates).

    Args:
        path, coupling, time_sampler, source, prediction, weighting, loss_space, cond_dropout,
            null_label: as :class:`FlowMatchingObjective` (coupling: independent).
        num_candidates: ``M >= 1``.
    """

    def __init__(self, *args: object, num_candidates: int = 16, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.num_candidates = check_positive_int(num_candidates, "num_candidates")

    def __repr__(self) -> str:
        return f"PAFMObjective(num_candidates={self.num_candidates}, source={self.source!r})"

    def compute(
        self,
        model: VelocityField | nn.Module,
        x1: Tensor,
        *,
        x0: Tensor | None = None,
        x0_paired: bool = False,
        cond: Cond = None,
        t: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """Per-sample losses ``(B,)`` against the posterior-averaged target."""
        labels = checked_batch_labels(x1, cond)
        b = x1.shape[0]
        x0, t, dropped, sample = self.draw(
            x1, x0=x0, x0_paired=x0_paired, cond=cond, t=t, generator=generator
        )
        free: Tensor | None = None
        kept = batch_labels(dropped)
        if labels is not None and kept is not None and self.null_label is not None:
            free = kept == self.null_label
        if isinstance(dropped, Condition) and dropped.drop is not None:
            free = dropped.drop if free is None else free | dropped.drop
        index, valid = choose_candidates(
            b,
            self.num_candidates,
            labels=labels,
            unrestricted=free,
            generator=generator,
            device=x1.device,
        )
        x0_bar, x1_bar, ess = posterior_endpoints(
            self.path, self.source, sample.xt, t, x1, index, valid
        )
        out = model(sample.xt, t, dropped)
        out, target = regression(
            self.path, self.prediction, self.loss_space, out, x0_bar, x1_bar, sample
        )
        loss = self.weighted(per_sample_mse(out, target), t)
        return LossOutput(loss=loss, logs={"pafm_ess": ess.detach().float().mean()})
