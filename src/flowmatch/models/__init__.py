"""Small reference networks (any ``nn.Module`` with ``(x, t, cond=None)`` works too)."""

from flowmatch.models.adapters import (
    NoiseLevelConventionAdapter,
    PredictionAdapter,
    diffusers_timestep_to_t,
    noise_level_to_t,
    t_to_diffusers_timestep,
    t_to_noise_level,
    velocity_from_noise_level_convention,
    velocity_to_noise_level_convention,
)
from flowmatch.models.base import MODELS, ModelConfig
from flowmatch.models.embeddings import ConditionEmbedding, LabelEmbedding, SinusoidalTimeEmbedding
from flowmatch.models.mlp import MLP, MLPConfig
from flowmatch.models.unet import UNet, UNetConfig

__all__ = [
    "MLP",
    "ConditionEmbedding",
    "MODELS",
    "MLPConfig",
    "ModelConfig",
    "UNetConfig",
    "LabelEmbedding",
    "NoiseLevelConventionAdapter",
    "PredictionAdapter",
    "SinusoidalTimeEmbedding",
    "UNet",
    "diffusers_timestep_to_t",
    "noise_level_to_t",
    "t_to_diffusers_timestep",
    "t_to_noise_level",
    "velocity_from_noise_level_convention",
    "velocity_to_noise_level_convention",
]
