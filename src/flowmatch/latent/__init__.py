"""Latent spaces (PCA, a small autoencoder) for flow matching on codes instead of data."""

from flowmatch.latent.space import (
    Autoencoder,
    AutoencoderLatent,
    AutoencoderStep,
    JointLabelSpace,
    LatentSpace,
    PCALatent,
    encode_dataset,
    unit_scale,
)

__all__ = [
    "Autoencoder",
    "AutoencoderLatent",
    "AutoencoderStep",
    "JointLabelSpace",
    "LatentSpace",
    "PCALatent",
    "encode_dataset",
    "unit_scale",
]
