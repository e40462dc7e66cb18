"""Training engine: the step loop, EMA, learning-rate schedule, checkpoints and DDP."""

from flowmatch.train.callbacks import Callback, History
from flowmatch.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from flowmatch.train.config import TrainConfig
from flowmatch.train.distributed import DistributedContext, setup_distributed
from flowmatch.train.ema import EMA
from flowmatch.train.loop import NonFiniteError, Trainer, TrainResult
from flowmatch.train.lr import WarmupCosine

__all__ = [
    "EMA",
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "DistributedContext",
    "History",
    "NonFiniteError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "WarmupCosine",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
    "setup_distributed",
]
