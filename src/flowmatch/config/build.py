"""Turn configuration sections into library objects (the only place that does so)."""

from __future__ import annotations

from torch import nn

from flowmatch.config.schema import (
    CouplingCfg,
    ModelCfg,
    ObjectiveCfg,
    PathCfg,
    RunConfig,
    TimeCfg,
)
from flowmatch.couplings import Coupling, IndependentCoupling
from flowmatch.data.batch import ArrayDataset
from flowmatch.objectives import FlowMatchingObjective
from flowmatch.paths import (
    AffinePath,
    CosineSchedule,
    LinearSchedule,
    PolynomialSchedule,
    VPSchedule,
)
from flowmatch.paths.schedules import Schedule
from flowmatch.solvers import RK4, Dopri5, Euler, Heun, Midpoint
from flowmatch.solvers.base import AdaptiveSolver, ODESolver
from flowmatch.times import LogitNormalTime, TimeSampler, UniformTime
from flowmatch.utils.checks import check_in_choices

SOLVER_NAMES = ("euler", "midpoint", "heun", "rk4", "dopri5")


def build_path(cfg: PathCfg) -> AffinePath:
    """The affine path of ``cfg.schedule``."""
    schedule: Schedule
    if cfg.schedule == "linear":
        schedule = LinearSchedule()
    elif cfg.schedule == "cosine":
        schedule = CosineSchedule()
    elif cfg.schedule == "polynomial":
        schedule = PolynomialSchedule(cfg.exponent)
    else:
        schedule = VPSchedule(cfg.beta_min, cfg.beta_max)
    return AffinePath(schedule)


def build_coupling(cfg: CouplingCfg) -> Coupling:
    """The coupling named by ``cfg.kind``."""
    if cfg.kind == "independent":
        return IndependentCoupling()
    from flowmatch.couplings.ot import (
        ClassConditionalOTCoupling,
        ExactOTCoupling,
        SinkhornCoupling,
    )

    if cfg.kind == "exact_ot":
        return ExactOTCoupling(solver=cfg.solver)
    if cfg.kind == "class_ot":
        return ClassConditionalOTCoupling(solver=cfg.solver)
    return SinkhornCoupling(reg=cfg.reg, solver=cfg.solver)


def build_time_sampler(cfg: TimeCfg) -> TimeSampler:
    """The training-time sampler."""
    if cfg.sampler == "uniform":
        return UniformTime()
    return LogitNormalTime(cfg.mean, cfg.std)


def is_conditional(cfg: ModelCfg, dataset: ArrayDataset) -> bool:
    """Whether the model takes labels (``conditional="auto"``: when the data has labels)."""
    if cfg.conditional == "yes" and dataset.labels is None:
        raise ValueError(
            f"model.conditional='yes' but dataset {dataset.name!r} has no labels "
            "(for CSV data set data.label_column)"
        )
    return dataset.labels is not None and cfg.conditional != "no"


def build_model(
    cfg: ModelCfg, sample_shape: tuple[int, ...], *, num_classes: int | None = None
) -> nn.Module:
    """The velocity network for samples of shape ``sample_shape`` ``D``.

    Args:
        cfg: the model section.
        sample_shape: shape of one sample, e.g. ``(2,)`` or ``(1, 8, 8)``.
        num_classes: classes of a conditional model (see ``is_conditional``), else ``None``.
    """
    kind = cfg.kind
    if kind == "auto":
        kind = "unet" if len(sample_shape) == 3 else "mlp"
    if kind == "mlp":
        from flowmatch.models import MLP

        dim = 1
        for s in sample_shape:
            dim *= s
        return MLP(
            dim, hidden=cfg.hidden, depth=cfg.depth, time_dim=cfg.time_dim, num_classes=num_classes
        )
    if len(sample_shape) != 3:
        raise ValueError(
            f"model.kind='unet' needs image data (C, H, W), got samples of shape {sample_shape}"
        )
    from flowmatch.models.unet import UNet

    return UNet(
        sample_shape[0],
        image_size=sample_shape[1],
        base_channels=cfg.base_channels,
        channel_mults=cfg.channel_mults,
        num_res_blocks=cfg.num_res_blocks,
        num_classes=num_classes,
        dropout=cfg.dropout,
        attention=cfg.attention,
    )


def build_objective(cfg: RunConfig, *, null_label: int | None) -> FlowMatchingObjective:
    """The flow-matching objective of a run (label dropout only for conditional models)."""
    ocfg: ObjectiveCfg = cfg.objective
    dropout = ocfg.cond_dropout if null_label is not None else 0.0
    return FlowMatchingObjective(
        build_path(cfg.path),
        build_coupling(cfg.coupling),
        build_time_sampler(cfg.time),
        prediction=cfg.path.prediction,
        weighting=ocfg.weighting,
        cond_dropout=dropout,
        null_label=null_label if dropout > 0 else None,
    )


def build_solver(
    name: str, *, atol: float = 1e-5, rtol: float = 1e-5
) -> ODESolver | AdaptiveSolver:
    """A solver by registry name (``atol``/``rtol`` only apply to ``dopri5``)."""
    check_in_choices(name, SOLVER_NAMES, "solver")
    if name == "dopri5":
        return Dopri5(atol=atol, rtol=rtol)
    return {"euler": Euler, "midpoint": Midpoint, "heun": Heun, "rk4": RK4}[name]()
