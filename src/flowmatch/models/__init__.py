"""Small reference networks (any ``nn.Module`` with ``(x, t, cond=None)`` works too)."""

from flowmatch.models.embeddings import LabelEmbedding, SinusoidalTimeEmbedding
from flowmatch.models.mlp import MLP

__all__ = ["MLP", "LabelEmbedding", "SinusoidalTimeEmbedding"]
