"""Few-step generation: two-time objectives, distillation steps and their helpers.

Each method is a training step registered in ``flowmatch.objectives.OBJECTIVES`` (so a run
names it as ``objective.kind``) whose runs sample with the field its ``field()`` returns: a
flow map for two-time methods (MeanFlow, SplitMeanFlow, flow-map self-distillation, FreeFlow,
sCM), a velocity field for reflow and BOSS straightening.
"""

from flowmatch.fewstep.base import (
    LOSSES,
    FewStepConfig,
    TwoTimeConfig,
    TwoTimeStep,
    distance,
    draw_time_pair,
    unwrap,
)
from flowmatch.fewstep.meanflow import MeanFlowConfig, MeanFlowStep, meanflow_target
from flowmatch.fewstep.splitting import (
    ProgressiveStep,
    SplitMeanFlowConfig,
    SplitMeanFlowStep,
    split_target,
)

__all__ = [
    "LOSSES",
    "FewStepConfig",
    "MeanFlowConfig",
    "MeanFlowStep",
    "ProgressiveStep",
    "SplitMeanFlowConfig",
    "SplitMeanFlowStep",
    "TwoTimeConfig",
    "TwoTimeStep",
    "distance",
    "draw_time_pair",
    "meanflow_target",
    "split_target",
    "unwrap",
]
